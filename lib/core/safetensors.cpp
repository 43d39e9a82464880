// safetensors reader and writer (see pp3d/core/safetensors.h).
#include "pp3d/core/safetensors.h"

#include <cstdint>
#include <cstring>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "pp3d/core/dtype.h"
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

std::map<std::string, SafeTensor> read_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  PP3D_CHECK(in.good(), "cannot open safetensors file '{}'", path);
  in.seekg(0, std::ios::end);
  const uint64_t size = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  unsigned char len[8] = {};
  in.read(reinterpret_cast<char*>(len), 8);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len[i];
  PP3D_CHECK(in.good() && size >= 8 && n <= size - 8, "'{}' is not a safetensors file (header length {} in {} bytes)",
             path, n, size);
  std::string hs(n, '\0');
  in.read(hs.data(), static_cast<std::streamsize>(n));
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(hs);
  } catch (const nlohmann::json::exception& e) {
    PP3D_FAIL("'{}': bad safetensors header: {}", path, e.what());
  }
  const uint64_t base = 8 + n;
  std::map<std::string, SafeTensor> out;
  for (const auto& [name, info] : header.items()) {
    if (name == "__metadata__") continue;
    SafeTensor t;
    t.name = name;
    std::string dtype;
    uint64_t b0 = 0, b1 = 0;
    try {
      dtype = info.at("dtype").get<std::string>();
      t.shape = info.at("shape").get<Shape>();
      b0 = info.at("data_offsets").at(0).get<uint64_t>();
      b1 = info.at("data_offsets").at(1).get<uint64_t>();
    } catch (const nlohmann::json::exception& e) {
      PP3D_FAIL("'{}': tensor '{}': bad header entry: {}", path, name, e.what());
    }
    const int64_t count = shape_numel(t.shape);
    const uint64_t esize = dtype == "F32" ? 4 : (dtype == "BF16" || dtype == "F16") ? 2 : 0;
    PP3D_CHECK(esize != 0, "'{}': tensor '{}' has dtype {} (supported: F32, BF16, F16)", path, name, dtype);
    PP3D_CHECK(b1 >= b0 && b1 - b0 == esize * static_cast<uint64_t>(count) && base + b1 <= size,
               "'{}': tensor '{}' data offsets [{}, {}) do not hold {} {} values inside the file", path, name, b0, b1,
               count, dtype);
    std::vector<unsigned char> raw(b1 - b0);
    in.seekg(static_cast<std::streamoff>(base + b0));
    in.read(reinterpret_cast<char*>(raw.data()), static_cast<std::streamsize>(raw.size()));
    PP3D_CHECK(in.good(), "'{}': read error in tensor '{}'", path, name);
    t.data.resize(static_cast<std::size_t>(count));
    for (int64_t i = 0; i < count; ++i) {
      const unsigned char* p = raw.data() + i * esize;
      if (esize == 4) {
        std::memcpy(&t.data[static_cast<std::size_t>(i)], p, 4);
      } else {
        const uint16_t h = static_cast<uint16_t>(p[0] | (p[1] << 8));
        t.data[static_cast<std::size_t>(i)] = dtype == "BF16" ? bf16_to_f32(h) : f16_to_f32(h);
      }
    }
    out.emplace(name, std::move(t));
  }
  return out;
}

}  // namespace pp3d
