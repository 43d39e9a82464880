// save_checkpoint: every rank writes its pieces into a temporary directory,
// rank 0 gathers the piece lists, writes the manifest last, fsyncs and renames
// the directory into place, then updates `latest` and applies retention. Each
// phase ends with an agreement (all-gather of "ok"/error strings) so a failure
// on any rank makes every rank throw the same error and nothing is renamed.
#include <algorithm>
#include <bit>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <regex>

#include <unistd.h>

#include "pp3d/core/error.h"
#include "train/checkpoint_internal.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace pp3d {

namespace {

static_assert(std::endian::native == std::endian::little, "checkpoint shard files are little-endian f32");

// Every rank's string, in rank order (lengths, then bytes packed into i32 words).
std::vector<std::string> all_gather_strings(Communicator& comm, const std::string& mine) {
  const int n = comm.size();
  Tensor len = Tensor::from_vector_i32({1}, {static_cast<int32_t>(mine.size())});
  Tensor lens = Tensor::zeros({n}, DType::I32);
  comm.all_gather(len, lens);
  int64_t max_len = 0;
  for (int r = 0; r < n; ++r) max_len = std::max<int64_t>(max_len, lens.data<int32_t>()[r]);
  const int64_t words = std::max<int64_t>((max_len + 3) / 4, 1);
  Tensor buf = Tensor::zeros({words}, DType::I32);
  std::memcpy(buf.raw(), mine.data(), mine.size());
  Tensor all = Tensor::zeros({words * n}, DType::I32);
  comm.all_gather(buf, all);
  std::vector<std::string> out(static_cast<std::size_t>(n));
  for (int r = 0; r < n; ++r)
    out[static_cast<std::size_t>(r)].assign(reinterpret_cast<const char*>(all.data<int32_t>() + r * words),
                                            static_cast<std::size_t>(lens.data<int32_t>()[r]));
  return out;
}

// Agreement point: returns every rank's payload, or throws on every rank when
// any rank reported an error (`error` non-empty).
std::vector<std::string> agree(Communicator& comm, const std::string& phase, const std::string& error,
                               const std::string& payload = "") {
  const std::vector<std::string> all = all_gather_strings(comm, error.empty() ? "K" + payload : "E" + error);
  std::string failed;
  std::vector<std::string> out;
  for (std::size_t r = 0; r < all.size(); ++r) {
    if (!all[r].empty() && all[r][0] == 'E')
      failed += fmt::format("{}rank {}: {}", failed.empty() ? "" : "; ", comm.global_rank(static_cast<int>(r)),
                            all[r].substr(1));
    out.push_back(all[r].empty() ? std::string() : all[r].substr(1));
  }
  if (!failed.empty()) PP3D_FAIL("checkpoint save failed during {} ({})", phase, failed);
  return out;
}

template <typename F>
std::string capture(F&& f) {
  try {
    f();
    return {};
  } catch (const std::exception& e) {
    return e.what()[0] ? e.what() : "unknown error";
  }
}

std::vector<float> host_f32(const Tensor& t) {
  if (t.device().is_cpu()) return t.to_vector();
  return t.to(Device::cpu()).to_vector();
}

// Writes this rank's saved tensors into `path`; returns its piece list as JSON.
json write_rank_file(const std::string& dir, const std::string& file, const std::vector<CheckpointTensor>& tensors) {
  json list = json::array();
  std::ofstream out;
  uint64_t offset = 0;
  for (const CheckpointTensor& t : tensors) {
    if (!t.save) continue;
    const std::vector<detail::Part> parts = detail::tensor_parts(t);
    if (!out.is_open()) {
      out.open(fs::path(dir) / file, std::ios::binary | std::ios::trunc);
      PP3D_CHECK(out.good(), "cannot create shard file '{}/{}': {}", dir, file, std::strerror(errno));
    }
    const std::vector<float> host = host_f32(t.data);
    json pieces = json::array();
    for (const detail::Part& p : parts) {
      detail::Piece pc;
      pc.file = file;
      pc.slab = p.slab;
      pc.flat_begin = p.flat_begin;
      pc.flat_end = p.flat_end;
      pc.offset = offset;
      pc.bytes = static_cast<uint64_t>(p.flat_end - p.flat_begin) * 4u;
      const float* src = host.data() + p.data_pos;
      pc.crc = detail::crc32(src, pc.bytes);
      out.write(reinterpret_cast<const char*>(src), static_cast<std::streamsize>(pc.bytes));
      PP3D_CHECK(out.good(), "write to shard file '{}/{}' failed (tensor '{}'): {}", dir, file, t.name,
                 std::strerror(errno));
      offset += pc.bytes;
      pieces.push_back(detail::piece_to_json(pc));
    }
    list.push_back({{"name", t.name}, {"shape", t.global_shape}, {"pieces", pieces}});
  }
  if (out.is_open()) {
    out.flush();
    PP3D_CHECK(out.good(), "write to shard file '{}/{}' failed: {}", dir, file, std::strerror(errno));
    out.close();
    detail::fsync_path((fs::path(dir) / file).string(), false);
  }
  return list;
}

// Rank 0: the manifest from every rank's piece list; checks that every tensor is covered exactly.
json build_manifest(const CheckpointInfo& info, const std::vector<std::string>& lists) {
  json m = detail::info_to_json(info);
  m["format"] = detail::kCheckpointFormatName;
  m["version"] = detail::kCheckpointFormatVersion;
  json tensors = json::object();
  std::map<std::string, int64_t> covered;
  for (const std::string& s : lists) {
    for (const json& t : json::parse(s)) {
      const std::string name = t.at("name").get<std::string>();
      if (!tensors.contains(name))
        tensors[name] = {{"shape", t.at("shape")}, {"dtype", detail::dtype_of_manifest()}, {"pieces", json::array()}};
      PP3D_CHECK(tensors[name]["shape"] == t.at("shape"), "tensor '{}' saved with shapes {} and {} by different ranks",
                 name, tensors[name]["shape"].dump(), t.at("shape").dump());
      for (const json& p : t.at("pieces")) {
        tensors[name]["pieces"].push_back(p);
        covered[name] += p.at("flat").at(1).get<int64_t>() - p.at("flat").at(0).get<int64_t>();
      }
    }
  }
  for (const auto& [name, n] : covered) {
    int64_t want = 1;
    for (const json& e : tensors[name]["shape"]) want *= e.get<int64_t>();
    PP3D_CHECK(n == want, "tensor '{}': the ranks saved {} elements of {} (a tensor saved twice or by no rank: check "
               "the CheckpointTensor save flags)", name, n, want);
  }
  m["tensors"] = tensors;
  return m;
}

// Deletes old checkpoint-<step> directories beyond keep_last, and stale temporaries.
void apply_retention(const std::string& output_dir, int keep_last, const std::string& keep) {
  const std::regex done(R"(checkpoint-(\d+))"), stale(R"(checkpoint-\d+\.(tmp|old)-.*)");
  std::vector<std::pair<int64_t, fs::path>> found;
  for (const auto& e : fs::directory_iterator(output_dir)) {
    if (!e.is_directory()) continue;
    const std::string n = e.path().filename().string();
    std::smatch m;
    if (std::regex_match(n, m, done)) found.emplace_back(std::stoll(m[1].str()), e.path());
    else if (std::regex_match(n, stale)) fs::remove_all(e.path());
  }
  std::sort(found.begin(), found.end());
  const auto drop = static_cast<int64_t>(found.size()) - keep_last;
  for (int64_t i = 0; i < drop; ++i)
    if (found[static_cast<std::size_t>(i)].second.filename() != fs::path(keep).filename())
      fs::remove_all(found[static_cast<std::size_t>(i)].second);
}

}  // namespace

std::string save_checkpoint(const std::string& output_dir, const CheckpointInfo& info_in,
                            const std::vector<CheckpointTensor>& tensors, Communicator& comm,
                            const CheckpointSaveOptions& options) {
  CheckpointInfo info = info_in;
  info.world_size = comm.size();
  const bool root = comm.rank() == 0;
  const std::string final_dir = checkpoint_dir_name(output_dir, info.step);
  auto hook = [&](const char* phase) {
    if (options.fault_hook) options.fault_hook(phase);
  };

  // 1. Rank 0 creates the temporary directory and tells everyone its name.
  std::string tmp_dir;
  std::string err = capture([&] {
    PP3D_CHECK(info.step >= 0, "checkpoint step must be >= 0, got {}", info.step);
    for (const CheckpointTensor& t : tensors) detail::tensor_parts(t);  // validates shapes / ranges
    if (!root) return;
    std::error_code ec;
    fs::create_directories(output_dir, ec);
    PP3D_CHECK(!ec, "cannot create the output directory '{}': {}", output_dir, ec.message());
    std::random_device rd;
    const auto nonce = static_cast<uint64_t>(rd()) ^
                       static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
                       (static_cast<uint64_t>(::getpid()) << 20);
    tmp_dir = fmt::format("{}.tmp-{:x}", final_dir, nonce & 0xFFFFFFFFFFull);
    PP3D_CHECK(fs::create_directory(tmp_dir, ec) && !ec, "cannot create '{}': {}", tmp_dir,
               ec ? ec.message() : "it already exists");
  });
  tmp_dir = agree(comm, "setup", err, tmp_dir)[0];

  auto fail_cleanup = [&] {
    if (root) {
      std::error_code ec;
      fs::remove_all(tmp_dir, ec);
    }
  };
  try {
    // 2. Every rank writes (and fsyncs) its shard file.
    json pieces;
    err = capture([&] {
      pieces = write_rank_file(tmp_dir, fmt::format("rank-{:05d}.bin", comm.rank()), tensors);
      hook("shard_written");
    });
    const std::vector<std::string> lists = agree(comm, "shard write", err, err.empty() ? pieces.dump() : "");

    // 3. Rank 0: manifest last, fsync, rename into place, latest, retention.
    err = capture([&] {
      if (!root) return;
      const json manifest = build_manifest(info, lists);
      hook("before_manifest");
      const std::string mpath = (fs::path(tmp_dir) / "manifest.json").string();
      {
        std::ofstream out(mpath, std::ios::binary | std::ios::trunc);
        out << manifest.dump(1);
        out.flush();
        PP3D_CHECK(out.good(), "cannot write '{}': {}", mpath, std::strerror(errno));
      }
      detail::fsync_path(mpath, false);
      detail::fsync_path(tmp_dir, true);
      hook("before_rename");
      std::error_code ec;
      std::string old;
      if (fs::exists(final_dir)) {  // re-save of the same step: move the old one aside first
        old = tmp_dir;
        old.replace(old.rfind(".tmp-"), 5, ".old-");
        fs::rename(final_dir, old, ec);
        PP3D_CHECK(!ec, "cannot move the existing '{}' aside: {}", final_dir, ec.message());
      }
      fs::rename(tmp_dir, final_dir, ec);
      if (ec && !old.empty()) {
        std::error_code ec2;
        fs::rename(old, final_dir, ec2);  // put the previous one back
      }
      PP3D_CHECK(!ec, "cannot rename '{}' to '{}': {}", tmp_dir, final_dir, ec.message());
      detail::fsync_path(output_dir, true);
      if (!old.empty()) fs::remove_all(old, ec);
      if (options.update_latest)
        detail::write_file_atomic((fs::path(output_dir) / "latest").string(),
                                  fs::path(final_dir).filename().string() + "\n");
      if (options.keep_last > 0) apply_retention(output_dir, options.keep_last, final_dir);
    });
    agree(comm, "manifest / rename", err);
  } catch (...) {
    fail_cleanup();
    throw;
  }
  return final_dir;
}

}  // namespace pp3d
