// Dataset readers: byte-level text files/folders and llm.c token shards.
#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>
#include <cmath>
#include <cstdlib>
#include <iterator>
#include <sstream>
#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "pp3d/core/error.h"
#include "pp3d/core/user_error.h"
#include "pp3d/train/data.h"

namespace pp3d {

namespace fs = std::filesystem;

namespace {

constexpr int kShardHeaderInts = 256;
constexpr int64_t kShardHeaderBytes = kShardHeaderInts * 4;

std::vector<fs::path> sorted_files(const fs::path& dir) {
  std::vector<fs::path> files;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

std::string read_file_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  PP3D_CHECK(in.good(), "cannot open '{}' for reading", p.string());
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

bool has_bin_ext(const fs::path& p) { return p.extension() == ".bin"; }

// Splits `all` into train (first 1 - val_fraction) and val (the rest), sharing storage.
void split_tail(const TokenSplit& all, double val_fraction, TokenDataset& d) {
  const auto n_val = static_cast<int64_t>(static_cast<double>(all.size()) * val_fraction);
  d.train = all.slice(0, all.size() - n_val);
  d.val = all.slice(all.size() - n_val, all.size());
}

}  // namespace

TokenDataset load_text_dataset(const std::string& path, double val_fraction) {
  PP3D_CHECK(val_fraction > 0.0 && val_fraction < 1.0, "val_fraction must be in (0, 1), got {}", val_fraction);
  const fs::path p(path);
  PP3D_REQUIRE(fs::exists(p), "data path '{}' does not exist (give a text file, a folder of text files, a .bin "
               "llm.c shard or folder of shards, or omit --data for the embedded corpus)", path);
  std::vector<fs::path> files = fs::is_directory(p) ? sorted_files(p) : std::vector<fs::path>{p};
  PP3D_CHECK(!files.empty(), "data folder '{}' holds no regular files", path);
  std::vector<uint16_t> all;
  for (const auto& f : files) {
    const std::string bytes = read_file_bytes(f);
    for (char c : bytes) all.push_back(static_cast<unsigned char>(c));
  }
  PP3D_CHECK(!all.empty(), "data path '{}' is empty ({} file(s), 0 bytes)", path, files.size());
  TokenDataset d;
  d.vocab_size = 256;
  d.tokenizer = "bytes";
  split_tail(TokenSplit(std::move(all), fmt::format("text '{}'", path)), val_fraction, d);
  d.description = fmt::format("byte-level text '{}' ({} file(s)): {} train bytes, {} val bytes", path,
                              files.size(), d.train.size(), d.val.size());
  return d;
}

namespace {

// A read-only mapping of a whole file, unmapped when the last piece using it goes.
struct FileMapping {
  void* addr = MAP_FAILED;
  std::size_t bytes = 0;
  ~FileMapping() {
    if (addr != MAP_FAILED) ::munmap(addr, bytes);
  }
};

}  // namespace

TokenSplit map_token_shard(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  PP3D_CHECK(fd >= 0, "cannot open token shard '{}' for reading: {}", path, std::strerror(errno));
  struct stat st{};
  const int stat_rc = ::fstat(fd, &st);
  const auto file_bytes = static_cast<int64_t>(st.st_size);
  auto map = std::make_shared<FileMapping>();
  if (stat_rc == 0 && file_bytes > 0) {
    map->bytes = static_cast<std::size_t>(file_bytes);
    map->addr = ::mmap(nullptr, map->bytes, PROT_READ, MAP_SHARED, fd, 0);
  }
  const int map_errno = errno;
  ::close(fd);
  PP3D_CHECK(stat_rc == 0, "cannot stat token shard '{}'", path);
  PP3D_CHECK(file_bytes >= kShardHeaderBytes,
             "token shard '{}' is truncated: {} bytes, but the header alone is {} bytes (byte offset {} is "
             "past the end); re-create the shard", path, file_bytes, kShardHeaderBytes, file_bytes);
  PP3D_CHECK(map->addr != MAP_FAILED, "cannot memory-map token shard '{}': {}", path, std::strerror(map_errno));
  // Windows are read at random places: no read-ahead beyond the pages asked for.
  ::madvise(map->addr, map->bytes, MADV_RANDOM);
  std::array<int32_t, 4> h{};
  std::memcpy(h.data(), map->addr, sizeof(h));
  PP3D_CHECK(h[0] == kLlmcShardMagic,
             "'{}' is not a token shard: magic at byte offset 0 is {}, expected {} (give a file written by "
             "tools/prepare_data or llm.c's data scripts, or a text file without the .bin extension)", path, h[0],
             kLlmcShardMagic);
  PP3D_CHECK(h[1] == 1 || h[1] == 2, "token shard '{}' has version {} at byte offset 4; supported: 1 (uint16 "
             "ids, llm.c) and 2 (uint32 ids)", path, h[1]);
  const int width = h[1] == 1 ? 2 : 4;
  PP3D_CHECK(h[3] == 0 || h[3] == width, "token shard '{}' (version {}) declares {} bytes per token at byte "
             "offset 12; version {} means {} (0 is accepted for llm.c files)", path, h[1], h[3], h[1], width);
  const int64_t ntok = h[2];
  PP3D_CHECK(ntok >= 0, "token shard '{}' declares a negative token count {} at byte offset 8", path, ntok);
  const int64_t expect = kShardHeaderBytes + width * ntok;
  PP3D_CHECK(file_bytes >= expect,
             "token shard '{}' is truncated: header (byte offset 8) declares {} tokens of {} bytes = {} bytes "
             "with the header, but the file ends at byte offset {}; re-download or re-create the shard", path,
             ntok, width, expect, file_bytes);
  TokenSplit::Piece p;
  p.data = static_cast<const unsigned char*>(map->addr) + kShardHeaderBytes;
  p.tokens = ntok;
  p.bytes_per_token = width;
  p.file_offset = kShardHeaderBytes;
  p.file = path;
  p.owner = map;
  TokenSplit s;
  s.append(std::move(p));
  return s;
}

std::vector<uint32_t> read_token_shard(const std::string& path, int64_t vocab_size) {
  PP3D_CHECK(vocab_size >= 1, "vocab_size must be >= 1, got {}", vocab_size);
  const TokenSplit s = map_token_shard(path);
  std::vector<int32_t> ids(static_cast<std::size_t>(s.size()));
  s.read(0, s.size(), ids.data(), vocab_size);
  return {ids.begin(), ids.end()};
}

std::vector<uint16_t> read_llmc_shard(const std::string& path, int64_t vocab_size) {
  PP3D_CHECK(vocab_size >= 1 && vocab_size <= 65536, "vocab_size must be in [1, 65536], got {}", vocab_size);
  const auto ids = read_token_shard(path, vocab_size);
  return {ids.begin(), ids.end()};
}

void write_token_shard(const std::string& path, const std::vector<uint32_t>& tokens, bool force32) {
  PP3D_CHECK(tokens.size() <= 0x7fffffffu, "too many tokens ({}) for one shard (at most 2^31 - 1)", tokens.size());
  const bool wide = force32 || std::any_of(tokens.begin(), tokens.end(), [](uint32_t t) { return t > 0xffff; });
  std::array<int32_t, kShardHeaderInts> header{};
  header[0] = kLlmcShardMagic;
  header[1] = wide ? 2 : 1;
  header[2] = static_cast<int32_t>(tokens.size());
  header[3] = wide ? 4 : 2;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  PP3D_CHECK(out.good(), "cannot open '{}' for writing", path);
  out.write(reinterpret_cast<const char*>(header.data()), kShardHeaderBytes);
  if (wide) {
    out.write(reinterpret_cast<const char*>(tokens.data()), static_cast<std::streamsize>(4 * tokens.size()));
  } else {
    const std::vector<uint16_t> narrow(tokens.begin(), tokens.end());
    out.write(reinterpret_cast<const char*>(narrow.data()), static_cast<std::streamsize>(2 * narrow.size()));
  }
  PP3D_CHECK(out.good(), "write error on '{}'", path);
}

void write_llmc_shard(const std::string& path, const std::vector<uint16_t>& tokens) {
  write_token_shard(path, std::vector<uint32_t>(tokens.begin(), tokens.end()));
}

namespace {

// vocab_size and tokenizer from tools/prepare_data's meta.json next to the shards, if there is one.
int64_t read_meta(const fs::path& dir, int64_t fallback, std::string& tokenizer) {
  const fs::path meta = dir / "meta.json";
  if (!fs::exists(meta)) return fallback;
  try {
    const auto j = nlohmann::json::parse(read_file_bytes(meta));
    const int64_t v = j.at("vocab_size").get<int64_t>();
    PP3D_CHECK(v >= 1, "'{}': vocab_size must be >= 1, got {}", meta.string(), v);
    const std::string kind = j.value("tokenizer", "");
    if (kind == "bytes") tokenizer = "bytes";
    if (kind == "tokenizer.json" && fs::exists(dir / "tokenizer.json")) tokenizer = (dir / "tokenizer.json").string();
    return v;
  } catch (const nlohmann::json::exception& e) {
    PP3D_FAIL("'{}' is not a valid dataset meta file ({}); re-create it with tools/prepare_data or delete it",
              meta.string(), e.what());
  }
}

void append_shard(TokenSplit& dst, const fs::path& f) {
  const TokenSplit shard = map_token_shard(f.string());  // named: a temporary's pieces() would dangle
  for (const auto& p : shard.pieces()) dst.append(p);
}

}  // namespace

TokenDataset load_llmc_dataset(const std::string& path, int64_t vocab_size) {
  const fs::path p(path);
  PP3D_REQUIRE(fs::exists(p), "token shard path '{}' does not exist", path);
  TokenDataset d;
  d.vocab_size = read_meta(fs::is_directory(p) ? p : p.parent_path(), vocab_size, d.tokenizer);
  if (fs::is_directory(p)) {
    std::vector<fs::path> train, val;
    for (const auto& f : sorted_files(p)) {
      if (!has_bin_ext(f)) continue;
      const std::string name = f.filename().string();
      if (name.find("train") != std::string::npos) train.push_back(f);
      else if (name.find("val") != std::string::npos) val.push_back(f);
    }
    PP3D_CHECK(!train.empty(), "folder '{}' has no training shards (files named *train*.bin)", path);
    PP3D_CHECK(!val.empty(), "folder '{}' has no validation shards (files named *val*.bin)", path);
    for (const auto& f : train) append_shard(d.train, f);
    for (const auto& f : val) append_shard(d.val, f);
    d.description = fmt::format("token shards in '{}' (memory-mapped, vocab {}): {} train file(s) {} tokens, {} "
                                "val file(s) {} tokens", path, d.vocab_size, train.size(), d.train.size(),
                                val.size(), d.val.size());
    return d;
  }
  std::string name = p.filename().string();
  const auto pos = name.find("train");
  fs::path val_path;
  if (pos != std::string::npos) val_path = p.parent_path() / name.replace(pos, 5, "val");
  if (!val_path.empty() && fs::exists(val_path)) {
    append_shard(d.train, p);
    append_shard(d.val, val_path);
    d.description = fmt::format("token shards '{}' ({} tokens) + '{}' ({} tokens), memory-mapped, vocab {}", path,
                                d.train.size(), val_path.string(), d.val.size(), d.vocab_size);
  } else {
    split_tail(map_token_shard(path), 0.1, d);
    d.description = fmt::format("token shard '{}' (memory-mapped, vocab {}): {} train tokens, last 10% = {} val "
                                "tokens", path, d.vocab_size, d.train.size(), d.val.size());
  }
  return d;
}

TokenDataset load_single_dataset(const std::string& spec, uint64_t seed, int64_t shard_vocab) {
  if (spec.empty() || spec == "synthetic") {
    SyntheticCorpusOptions opt;
    opt.seed = seed;
    return make_synthetic_dataset(opt);
  }
  const fs::path p(spec);
  PP3D_REQUIRE(fs::exists(p), "data path '{}' does not exist (give a text file, a folder of text files, a .bin "
               "token shard or folder of shards, 'W1 PATH1 W2 PATH2' for a blend, or omit --data for the embedded "
               "corpus)", spec);
  bool shards = has_bin_ext(p);
  if (fs::is_directory(p)) {
    for (const auto& f : sorted_files(p)) shards = shards || has_bin_ext(f);
  }
  return shards ? load_llmc_dataset(spec, shard_vocab) : load_text_dataset(spec);
}

}  // namespace pp3d
