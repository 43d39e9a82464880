// Reading safetensors files (see pp3d/core/safetensors.h): whole files, and
// parameters loaded by name with each rank reading only the bytes of its slice.
// One header parser (SafetensorsFile) serves both.
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>

#include <nlohmann/json.hpp>

#include "pp3d/core/dtype.h"
#include "pp3d/core/error.h"
#include "pp3d/core/safetensors.h"
#include "pp3d/core/user_error.h"

namespace pp3d {

namespace fs = std::filesystem;

namespace {

// One safetensors file: its parsed header and an open stream.
class SafetensorsFile {
 public:
  struct Entry {
    std::string dtype;
    Shape shape;
    uint64_t begin = 0;  // absolute byte offset of the data
    int elem = 4;
  };

  explicit SafetensorsFile(std::string path) : path_(std::move(path)), in_(path_, std::ios::binary) {
    PP3D_REQUIRE(in_.good(), "safetensors file '{}' cannot be read", path_);
    const auto size = static_cast<uint64_t>(fs::file_size(path_));
    unsigned char len[8] = {};
    in_.read(reinterpret_cast<char*>(len), 8);
    PP3D_REQUIRE(in_.good() && size >= 8, "'{}' is not a safetensors file (shorter than 8 bytes)", path_);
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | len[i];
    PP3D_REQUIRE(n <= size - 8 && n < (uint64_t{1} << 30), "'{}': header length {} does not fit the file ({} bytes); "
                 "the file is truncated or not safetensors", path_, n, size);
    std::string hs(n, '\0');
    in_.read(hs.data(), static_cast<std::streamsize>(n));
    nlohmann::json h;
    try {
      h = nlohmann::json::parse(hs);
    } catch (const nlohmann::json::exception& e) {
      PP3D_REQUIRE(false, "'{}': corrupt safetensors header ({})", path_, e.what());
    }
    PP3D_REQUIRE(h.is_object(), "'{}': the safetensors header is not a JSON object", path_);
    const uint64_t data0 = 8 + n;
    for (const auto& [name, v] : h.items()) {
      if (name == "__metadata__") continue;
      try {
        Entry e;
        e.dtype = v.at("dtype").get<std::string>();
        e.shape = v.at("shape").get<Shape>();
        const auto off = v.at("data_offsets").get<std::vector<uint64_t>>();
        PP3D_REQUIRE(off.size() == 2 && off[0] <= off[1], "'{}': tensor '{}' has bad data_offsets", path_, name);
        e.elem = e.dtype == "F32" ? 4 : (e.dtype == "BF16" || e.dtype == "F16") ? 2 : 0;
        if (e.elem > 0) {
          PP3D_REQUIRE(off[1] - off[0] == static_cast<uint64_t>(shape_numel(e.shape) * e.elem), "'{}': tensor '{}' "
                       "holds {} bytes, not {} ({} x {})", path_, name, off[1] - off[0], shape_numel(e.shape) * e.elem,
                       shape_str(e.shape), e.dtype);
          PP3D_REQUIRE(data0 + off[1] <= size, "'{}': tensor '{}' data offsets end at byte {}, past the end of the "
                       "file ({} bytes): the file is truncated", path_, name, data0 + off[1], size);
        }
        e.begin = data0 + off[0];
        entries_[name] = e;
      } catch (const nlohmann::json::exception& ex) {
        PP3D_REQUIRE(false, "'{}': tensor '{}' has a malformed header entry ({})", path_, name, ex.what());
      }
    }
  }

  const std::string& path() const { return path_; }
  const std::map<std::string, Entry>& entries() const { return entries_; }
  const Entry* find(const std::string& name) const {
    const auto it = entries_.find(name);
    return it == entries_.end() ? nullptr : &it->second;
  }
  // Elements [first, first + n) of `e` (row-major) as f32, appended to out.
  void read(const Entry& e, int64_t first, int64_t n, std::vector<float>& out) {
    std::vector<unsigned char> buf(static_cast<std::size_t>(n * e.elem));
    in_.seekg(static_cast<std::streamoff>(e.begin + static_cast<uint64_t>(first * e.elem)));
    in_.read(reinterpret_cast<char*>(buf.data()), static_cast<std::streamsize>(buf.size()));
    PP3D_REQUIRE(in_.good(), "read error on '{}'", path_);
    for (int64_t i = 0; i < n; ++i) {
      const unsigned char* b = buf.data() + i * e.elem;
      if (e.elem == 4) {
        float f;
        std::memcpy(&f, b, 4);  // little endian hosts only (as the rest of pp3d's file formats)
        out.push_back(f);
      } else {
        const auto h = static_cast<uint16_t>(b[0] | (b[1] << 8));
        out.push_back(e.dtype == "BF16" ? bf16_to_f32(h) : f16_to_f32(h));
      }
    }
  }

 private:
  std::string path_;
  std::ifstream in_;
  std::map<std::string, Entry> entries_;
};

// tensor name -> file, for a directory (index or model.safetensors) or a single file.
std::map<std::string, std::string> weight_map(const std::string& path, std::vector<std::string>& files) {
  std::map<std::string, std::string> map;
  const fs::path p(path);
  PP3D_REQUIRE(fs::exists(p), "safetensors checkpoint '{}' does not exist", path);
  if (fs::is_regular_file(p)) {
    files = {path};
    return map;  // empty: every tensor in that file
  }
  const fs::path index = p / "model.safetensors.index.json";
  if (fs::exists(index)) {
    std::ifstream in(index);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(in);
      for (const auto& [name, file] : j.at("weight_map").items()) {
        map[name] = (p / file.get<std::string>()).string();
        if (std::find(files.begin(), files.end(), map[name]) == files.end()) files.push_back(map[name]);
      }
    } catch (const nlohmann::json::exception& e) {
      PP3D_REQUIRE(false, "'{}' is not a valid safetensors index ({})", index.string(), e.what());
    }
    return map;
  }
  PP3D_REQUIRE(fs::exists(p / "model.safetensors"), "'{}' holds neither model.safetensors nor "
               "model.safetensors.index.json", path);
  files = {(p / "model.safetensors").string()};
  return map;
}

}  // namespace

void load_safetensors_parameters(const std::string& path, const std::vector<Parameter*>& params,
                                 const SafetensorsLoadOptions& options) {
  std::vector<std::string> files;
  const auto map = weight_map(path, files);
  std::map<std::string, std::unique_ptr<SafetensorsFile>> open;
  auto file_of = [&](const std::string& name) -> SafetensorsFile& {
    const std::string f = map.empty() ? files.front() : (map.count(name) ? map.at(name) : std::string());
    PP3D_REQUIRE(!f.empty(), "safetensors checkpoint '{}' has no tensor '{}' (not in its index)", path, name);
    auto& slot = open[f];
    if (!slot) slot = std::make_unique<SafetensorsFile>(f);
    return *slot;
  };
  for (Parameter* p : params) {
    SafetensorsFile& file = file_of(p->name);
    const SafetensorsFile::Entry* e = file.find(p->name);
    PP3D_REQUIRE(e != nullptr, "'{}' has no tensor '{}'", file.path(), p->name);
    PP3D_REQUIRE(e->elem > 0, "'{}': tensor '{}' has dtype {}; pp3d reads F32, BF16 and F16", file.path(), p->name,
                 e->dtype);
    const Shape& g = p->global_shape;
    const bool padded = options.vocab_padded.count(p->name) > 0;
    Shape expect = g;
    if (padded) expect[0] = options.vocab_rows;
    PP3D_REQUIRE(e->shape == expect, "'{}': tensor '{}' has shape {}, the model expects {} (check config.json against "
                 "the model flags)", file.path(), p->name, shape_str(e->shape), shape_str(expect));
    const int64_t rows = g[0], cols = g.size() > 1 ? shape_numel(g) / rows : 1, file_rows = expect[0];
    // This rank's row and column ranges (ShardSpec: `segments` equal blocks along `dim`, each [offset, offset + length)).
    std::vector<std::pair<int64_t, int64_t>> row_ranges{{0, rows}}, col_ranges{{0, cols}};
    const ShardSpec& s = p->shard;
    if (s.sharded()) {
      PP3D_CHECK(g.size() <= 2 && (s.dim == 0 || s.dim == static_cast<int>(g.size()) - 1),
                 "load_safetensors_parameters: parameter '{}' is sharded along dim {} of {}", p->name, s.dim, shape_str(g));
      auto& ranges = s.dim == 0 ? row_ranges : col_ranges;
      const int64_t block = (s.dim == 0 ? rows : cols) / s.segments;
      ranges.clear();
      for (int64_t k = 0; k < s.segments; ++k) ranges.emplace_back(k * block + s.offset, k * block + s.offset + s.length);
    }
    std::vector<float> values;
    values.reserve(static_cast<std::size_t>(p->value.numel()));
    for (const auto& [r0, r1] : row_ranges) {
      for (int64_t r = r0; r < r1; ++r) {
        for (const auto& [c0, c1] : col_ranges) {
          if (r >= file_rows) values.insert(values.end(), static_cast<std::size_t>(c1 - c0), 0.0f);  // vocab padding
          else file.read(*e, r * cols + c0, c1 - c0, values);
        }
      }
    }
    PP3D_CHECK(static_cast<int64_t>(values.size()) == p->value.numel(), "load_safetensors_parameters: '{}' read {} values "
               "for a local shape {}", p->name, values.size(), shape_str(p->value.shape()));
    Tensor host = Tensor::empty(p->value.shape(), p->value.dtype());
    host.fill_from(values);
    p->value.copy_from(host);
  }
}

std::map<std::string, SafeTensor> read_safetensors(const std::string& path) {
  SafetensorsFile file(path);
  std::map<std::string, SafeTensor> out;
  for (const auto& [name, e] : file.entries()) {
    PP3D_REQUIRE(e.elem > 0, "'{}': tensor '{}' has dtype {} (supported: F32, BF16, F16)", path, name, e.dtype);
    SafeTensor t{name, e.shape, {}};
    t.data.reserve(static_cast<std::size_t>(shape_numel(e.shape)));
    file.read(e, 0, shape_numel(e.shape), t.data);
    out.emplace(name, std::move(t));
  }
  return out;
}

}  // namespace pp3d
