// Dataset readers: byte-level text files/folders and llm.c token shards.
#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>
#include <iterator>

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

// Splits `all` into train (first 1 - val_fraction) and val (the rest).
void split_tail(std::vector<uint16_t> all, double val_fraction, TokenDataset& d) {
  const auto n_val = static_cast<std::size_t>(static_cast<double>(all.size()) * val_fraction);
  d.val.assign(all.end() - static_cast<std::ptrdiff_t>(n_val), all.end());
  all.resize(all.size() - n_val);
  d.train = std::move(all);
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
  split_tail(std::move(all), val_fraction, d);
  d.description = fmt::format("byte-level text '{}' ({} file(s)): {} train bytes, {} val bytes", path,
                              files.size(), d.train.size(), d.val.size());
  return d;
}

std::vector<uint16_t> read_llmc_shard(const std::string& path, int64_t vocab_size) {
  PP3D_CHECK(vocab_size >= 1 && vocab_size <= 65536, "vocab_size must be in [1, 65536], got {}", vocab_size);
  std::ifstream in(path, std::ios::binary);
  PP3D_CHECK(in.good(), "cannot open llm.c token shard '{}' for reading", path);
  in.seekg(0, std::ios::end);
  const auto file_bytes = static_cast<int64_t>(in.tellg());
  in.seekg(0);
  PP3D_CHECK(file_bytes >= kShardHeaderBytes,
             "llm.c token shard '{}' is truncated: {} bytes, but the header alone is {} bytes (byte offset {} is "
             "past the end); re-create the shard", path, file_bytes, kShardHeaderBytes, file_bytes);
  std::array<int32_t, kShardHeaderInts> header{};
  in.read(reinterpret_cast<char*>(header.data()), kShardHeaderBytes);
  PP3D_CHECK(header[0] == kLlmcShardMagic,
             "'{}' is not an llm.c token shard: magic at byte offset 0 is {}, expected {} (give a file written by "
             "llm.c's data scripts, or a text file without the .bin extension)", path, header[0], kLlmcShardMagic);
  PP3D_CHECK(header[1] == 1, "llm.c token shard '{}' has version {} at byte offset 4; only version 1 (uint16 "
             "tokens) is supported", path, header[1]);
  const int64_t ntok = header[2];
  PP3D_CHECK(ntok >= 0, "llm.c token shard '{}' declares a negative token count {} at byte offset 8", path, ntok);
  const int64_t expect = kShardHeaderBytes + 2 * ntok;
  PP3D_CHECK(file_bytes >= expect,
             "llm.c token shard '{}' is truncated: header (byte offset 8) declares {} tokens = {} bytes, but the "
             "file ends at byte offset {}; re-download or re-create the shard", path, ntok, expect, file_bytes);
  std::vector<uint16_t> tokens(static_cast<std::size_t>(ntok));
  in.read(reinterpret_cast<char*>(tokens.data()), 2 * ntok);
  PP3D_CHECK(in.good(), "read error in llm.c token shard '{}' after byte offset {}", path, kShardHeaderBytes);
  for (int64_t i = 0; i < ntok; ++i) {
    PP3D_CHECK(tokens[i] < vocab_size,
               "llm.c token shard '{}': token {} (index {}, byte offset {}) is >= the vocabulary size {}; use a "
               "model with a larger --vocab-size or the tokenizer the model expects", path, tokens[i], i,
               kShardHeaderBytes + 2 * i, vocab_size);
  }
  return tokens;
}

void write_llmc_shard(const std::string& path, const std::vector<uint16_t>& tokens) {
  PP3D_CHECK(tokens.size() <= 0x7fffffffu, "too many tokens ({}) for one llm.c shard", tokens.size());
  std::array<int32_t, kShardHeaderInts> header{};
  header[0] = kLlmcShardMagic;
  header[1] = 1;
  header[2] = static_cast<int32_t>(tokens.size());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  PP3D_CHECK(out.good(), "cannot open '{}' for writing", path);
  out.write(reinterpret_cast<const char*>(header.data()), kShardHeaderBytes);
  out.write(reinterpret_cast<const char*>(tokens.data()), static_cast<std::streamsize>(2 * tokens.size()));
  PP3D_CHECK(out.good(), "write error on '{}'", path);
}

TokenDataset load_llmc_dataset(const std::string& path, int64_t vocab_size) {
  const fs::path p(path);
  PP3D_REQUIRE(fs::exists(p), "llm.c shard path '{}' does not exist", path);
  TokenDataset d;
  d.vocab_size = vocab_size;
  auto append = [&](std::vector<uint16_t>& dst, const fs::path& f) {
    const auto t = read_llmc_shard(f.string(), vocab_size);
    dst.insert(dst.end(), t.begin(), t.end());
  };
  if (fs::is_directory(p)) {
    std::vector<fs::path> train, val;
    for (const auto& f : sorted_files(p)) {
      if (!has_bin_ext(f)) continue;
      const std::string name = f.filename().string();
      if (name.find("train") != std::string::npos) train.push_back(f);
      else if (name.find("val") != std::string::npos) val.push_back(f);
    }
    PP3D_CHECK(!train.empty(), "folder '{}' has no llm.c training shards (files named *train*.bin)", path);
    PP3D_CHECK(!val.empty(), "folder '{}' has no llm.c validation shards (files named *val*.bin)", path);
    for (const auto& f : train) append(d.train, f);
    for (const auto& f : val) append(d.val, f);
    d.description = fmt::format("llm.c shards in '{}': {} train file(s) {} tokens, {} val file(s) {} tokens",
                                path, train.size(), d.train.size(), val.size(), d.val.size());
    return d;
  }
  std::string name = p.filename().string();
  const auto pos = name.find("train");
  fs::path val_path;
  if (pos != std::string::npos) val_path = p.parent_path() / name.replace(pos, 5, "val");
  if (!val_path.empty() && fs::exists(val_path)) {
    append(d.train, p);
    append(d.val, val_path);
    d.description = fmt::format("llm.c shards '{}' ({} tokens) + '{}' ({} tokens)", path, d.train.size(),
                                val_path.string(), d.val.size());
  } else {
    split_tail(read_llmc_shard(path, vocab_size), 0.1, d);
    d.description = fmt::format("llm.c shard '{}': {} train tokens, last 10% = {} val tokens", path,
                                d.train.size(), d.val.size());
  }
  return d;
}

TokenDataset load_dataset(const std::string& spec, uint64_t seed, int64_t shard_vocab) {
  if (spec.empty() || spec == "synthetic") {
    SyntheticCorpusOptions opt;
    opt.seed = seed;
    return make_synthetic_dataset(opt);
  }
  const fs::path p(spec);
  PP3D_REQUIRE(fs::exists(p), "data path '{}' does not exist (give a text file, a folder of text files, a .bin "
               "llm.c shard or folder of shards, or omit --data for the embedded corpus)", spec);
  bool shards = has_bin_ext(p);
  if (fs::is_directory(p)) {
    for (const auto& f : sorted_files(p)) shards = shards || has_bin_ext(f);
  }
  return shards ? load_llmc_dataset(spec, shard_vocab) : load_text_dataset(spec);
}

}  // namespace pp3d
