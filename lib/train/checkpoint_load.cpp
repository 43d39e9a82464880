// load_checkpoint: for every wanted tensor part, reads the overlapping stored
// pieces (whole pieces, checksum-verified, cached per tensor), copies the
// overlaps and checks that every wanted element was found.
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>

#include "pp3d/core/error.h"
#include "train/checkpoint_internal.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace pp3d {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Reads pieces from the shard files of one checkpoint (open files cached).
class ShardReader {
 public:
  explicit ShardReader(std::string dir) : dir_(std::move(dir)) {}

  std::vector<float> read(const detail::Piece& p, const std::string& tensor) {
    File& f = open(p.file);
    PP3D_CHECK(p.offset + p.bytes <= f.size,
               "checkpoint shard file '{}' is truncated: tensor '{}' needs bytes [{}, {}) but the file has {} bytes",
               f.path, tensor, p.offset, p.offset + p.bytes, f.size);
    std::vector<float> v(static_cast<std::size_t>(p.numel()));
    f.in.seekg(static_cast<std::streamoff>(p.offset));
    f.in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(p.bytes));
    PP3D_CHECK(f.in.good(), "read error in checkpoint shard file '{}' at byte {} (tensor '{}'): {}", f.path, p.offset,
               tensor, std::strerror(errno));
    const uint32_t crc = detail::crc32(v.data(), p.bytes);
    PP3D_CHECK(crc == p.crc,
               "checksum mismatch in checkpoint shard file '{}' (tensor '{}', slice {}, bytes [{}, {})): stored crc32 "
               "{:08x}, computed {:08x}: the file is corrupt",
               f.path, tensor, p.slab.str(), p.offset, p.offset + p.bytes, p.crc, crc);
    return v;
  }

 private:
  struct File {
    std::string path;
    std::ifstream in;
    uint64_t size = 0;
  };
  File& open(const std::string& name) {
    auto it = files_.find(name);
    if (it != files_.end()) return *it->second;
    auto f = std::make_unique<File>();
    f->path = (fs::path(dir_) / name).string();
    PP3D_CHECK(fs::exists(f->path), "checkpoint shard file '{}' is missing", f->path);
    f->size = fs::file_size(f->path);
    f->in.open(f->path, std::ios::binary);
    PP3D_CHECK(f->in.good(), "cannot open checkpoint shard file '{}': {}", f->path, std::strerror(errno));
    return *files_.emplace(name, std::move(f)).first->second;
  }

  std::string dir_;
  std::map<std::string, std::unique_ptr<File>> files_;
};

void store(const CheckpointTensor& t, const std::vector<float>& host) {
  if (t.data.device().is_cpu() && t.data.dtype() == DType::F32) {
    std::memcpy(t.data.raw(), host.data(), host.size() * sizeof(float));
    return;
  }
  Tensor h = Tensor::empty(t.data.shape(), t.data.dtype());
  h.fill_from(host);
  Tensor dst = t.data;
  dst.copy_from(h);
}

// Fills one tensor from the pieces of `stored` (the manifest entry named `name`).
void load_one(const std::string& dir, const CheckpointTensor& t, const std::string& name, const json& stored,
              ShardReader& reader) {
  Shape shape;
  for (const json& e : stored.at("shape")) shape.push_back(e.get<int64_t>());
  const Shape want_shape = t.global_shape.empty() ? Shape{1} : t.global_shape;
  const Shape got_shape = shape.empty() ? Shape{1} : shape;
  PP3D_CHECK(got_shape == want_shape,
             "checkpoint '{}': tensor '{}' has shape {} in the checkpoint but {} in the model (different model config?)",
             dir, name, shape_str(shape), shape_str(t.global_shape));
  PP3D_CHECK(stored.value("dtype", std::string("f32")) == "f32", "checkpoint '{}': tensor '{}' has dtype '{}'; only "
             "f32 is supported", dir, name, stored.value("dtype", std::string()));
  std::vector<detail::Piece> pieces;
  for (const json& p : stored.at("pieces")) pieces.push_back(detail::piece_from_json(p, "'" + name + "'"));

  std::vector<float> host(static_cast<std::size_t>(t.data.numel()));
  std::map<std::size_t, std::vector<float>> cache;  // piece index -> verified values
  for (const detail::Part& part : detail::tensor_parts(t)) {
    detail::Want w{part.slab, part.flat_begin, part.flat_end, host.data() + part.data_pos};
    int64_t found = 0;
    for (std::size_t i = 0; i < pieces.size(); ++i) {
      if (detail::copy_overlap(w, pieces[i], nullptr) == 0) continue;
      auto it = cache.find(i);
      if (it == cache.end()) it = cache.emplace(i, reader.read(pieces[i], name)).first;
      found += detail::copy_overlap(w, pieces[i], it->second.data());
    }
    PP3D_CHECK(found == part.flat_end - part.flat_begin,
               "checkpoint '{}': tensor '{}' is incomplete: its pieces hold {} of the {} elements of slice {} (flat "
               "[{}, {})) this rank needs",
               dir, name, found, part.flat_end - part.flat_begin, part.slab.str(), part.flat_begin, part.flat_end);
  }
  store(t, host);
}

}  // namespace

CheckpointInfo load_checkpoint(const std::string& dir, const std::vector<CheckpointTensor>& tensors,
                               const CheckpointLoadOptions& options) {
  const json manifest = detail::read_manifest(dir);
  const CheckpointInfo info = detail::info_from_json(manifest, (fs::path(dir) / "manifest.json").string());
  const json& stored = manifest.at("tensors");
  ShardReader reader(dir);
  for (const CheckpointTensor& t : tensors) {
    if (!t.load) continue;
    if (stored.contains(t.name)) {
      load_one(dir, t, t.name, stored.at(t.name), reader);
    } else if (!t.fallback.empty() && stored.contains(t.fallback)) {
      load_one(dir, t, t.fallback, stored.at(t.fallback), reader);
    } else if (options.allow_missing_optimizer_state && (ends_with(t.name, ".exp_avg") || ends_with(t.name, ".exp_avg_sq"))) {
      detail::tensor_parts(t);  // validates the range
      store(t, std::vector<float>(static_cast<std::size_t>(t.data.numel()), 0.0f));
    } else {
      PP3D_FAIL("checkpoint '{}' has no tensor '{}'{} (it holds {} tensors; saved from model {} with layout tp={} "
                "pp={} dp={} zero={})",
                dir, t.name, t.fallback.empty() ? "" : fmt::format(" (nor '{}')", t.fallback), stored.size(),
                info.model.str(), info.layout.tp, info.layout.pp, info.layout.dp, info.layout.zero_stage);
    }
  }
  return info;
}

}  // namespace pp3d
