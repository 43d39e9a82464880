// safetensors writer (see pp3d/core/safetensors.h; the readers are in safetensors_load.cpp).
#include "pp3d/core/safetensors.h"

#include <cstdint>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "pp3d/core/error.h"

namespace pp3d {

void write_safetensors(const std::string& path, const std::vector<SafeTensor>& tensors) {
  PP3D_CHECK(!tensors.empty(), "write_safetensors '{}': no tensors to write", path);
  nlohmann::ordered_json header;
  header["__metadata__"] = {{"format", "pt"}, {"producer", "pp3d"}};
  uint64_t offset = 0;
  std::set<std::string> names;
  for (const auto& t : tensors) {
    PP3D_CHECK(names.insert(t.name).second, "write_safetensors '{}': tensor '{}' given twice", path, t.name);
    PP3D_CHECK(static_cast<int64_t>(t.data.size()) == shape_numel(t.shape),
               "write_safetensors '{}': tensor '{}' has {} values for shape {}", path, t.name, t.data.size(),
               shape_str(t.shape));
    const uint64_t bytes = 4 * t.data.size();
    header[t.name] = {{"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string hs = header.dump();
  hs.append((8 - hs.size() % 8) % 8, ' ');  // keep the data 8-byte aligned
  const uint64_t n = hs.size();
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));  // little endian
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  PP3D_CHECK(out.good(), "cannot open '{}' for writing", path);
  out.write(reinterpret_cast<const char*>(len), 8);
  out.write(hs.data(), static_cast<std::streamsize>(hs.size()));
  for (const auto& t : tensors)
    out.write(reinterpret_cast<const char*>(t.data.data()), static_cast<std::streamsize>(4 * t.data.size()));
  PP3D_CHECK(out.good(), "write error on '{}'", path);
}

}  // namespace pp3d
