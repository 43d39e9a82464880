// Training data: token datasets (embedded synthetic corpus, byte-level text,
// llm.c token shards) and a layout-independent batch sampler.
//
// A TokenDataset owns its tokens (uint16, so vocabularies up to 65536, the
// llm.c shard limit) in host memory; it is immutable after loading and may be
// shared between threads and loaders. DataLoader is a pure function of
// (seed, step, row): the global batch of step s never depends on how many
// data-parallel ranks or micro-batches consume it, which is what lets every
// parallel layout reproduce the serial run. DataLoader methods are const and
// thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "pp3d/core/tensor.h"

namespace pp3d {

struct TokenDataset {
  std::vector<uint16_t> train;  // training split
  std::vector<uint16_t> val;    // validation split
  int64_t vocab_size = 256;     // every token is < vocab_size
  std::string description;      // one line for the log ("synthetic corpus, 2.0 MB", ...)
};

// ---- (a) the embedded synthetic corpus ---------------------------------------
// Deterministic templated English with small arithmetic and recall, e.g.
// "alice has 3 apples and gets 4 more, so alice has 7 apples." Sentence i is a
// pure function of (seed, i). Byte-level (vocab 256).
std::string generate_synthetic_text(uint64_t seed, int64_t min_bytes);

struct SyntheticCorpusOptions {
  uint64_t seed = 20240601;
  int64_t train_bytes = 2 << 20;  // at least this many bytes (whole sentences)
  int64_t val_bytes = 256 << 10;
};
// Train and validation splits come from distinct generator streams
// (rng_key(seed, "corpus/train") and rng_key(seed, "corpus/val")).
TokenDataset make_synthetic_dataset(const SyntheticCorpusOptions& opt = {});

// ---- (b) byte-level text --------------------------------------------------------
// `path` is a file or a folder (all regular files below it, concatenated in
// sorted path order). The last `val_fraction` of the bytes is the validation split.
TokenDataset load_text_dataset(const std::string& path, double val_fraction = 0.1);

// ---- (c) llm.c token shards -------------------------------------------------------
// Format: 256 int32 header (magic 20240520, version 1, token count), then the
// tokens as uint16. Bad files throw pp3d::Error naming the file and byte offset.
constexpr int32_t kLlmcShardMagic = 20240520;
std::vector<uint16_t> read_llmc_shard(const std::string& path, int64_t vocab_size);
void write_llmc_shard(const std::string& path, const std::vector<uint16_t>& tokens);
// `path` is a folder (files matching *train*.bin are the training split,
// *val*.bin the validation split, each in sorted order) or one .bin file (its
// validation split is the sibling with "train" replaced by "val" if that exists,
// otherwise the last 10% of its tokens).
TokenDataset load_llmc_dataset(const std::string& path, int64_t vocab_size = 50257);

// Picks the reader for `spec`: "" or "synthetic" -> the embedded corpus (seed
// `seed`); a .bin file, or a folder holding .bin files -> llm.c shards (vocab
// `shard_vocab`); any other file or folder -> byte-level text.
TokenDataset load_dataset(const std::string& spec, uint64_t seed = 20240601, int64_t shard_vocab = 50257);

// Entropy of the unigram (single-token) distribution of `tokens`, in bits;
// multiply by ln 2 for nats (the unit of the training loss).
double unigram_entropy_bits(const std::vector<uint16_t>& tokens, int64_t vocab_size);

// ---- (d) batches ----------------------------------------------------------------------
// Rows [row0, row1) of a batch: inputs[r, t] = window[t], targets[r, t] = window[t + 1]
// for a window of seq_len + 1 consecutive tokens. Host i32 tensors [rows, seq_len].
struct Batch {
  int64_t step = 0;
  int64_t row0 = 0;
  Tensor inputs;
  Tensor targets;
  int64_t rows() const { return inputs.defined() ? inputs.size(0) : 0; }
};

class DataLoader {
 public:
  // Preconditions (checked): global_batch >= 1, seq_len >= 1, and each split
  // holds at least seq_len + 1 tokens.
  DataLoader(std::shared_ptr<const TokenDataset> data, int64_t global_batch, int64_t seq_len, uint64_t seed);

  // The whole global batch of training step `step` (>= 0).
  Batch get_batch(int64_t step) const { return get_rows(step, 0, global_batch_); }
  // Rows [row0, row1) of that batch, generated without the others; equal to the
  // same rows of get_batch(step). 0 <= row0 < row1 <= global_batch.
  Batch get_rows(int64_t step, int64_t row0, int64_t row1) const;
  // Validation batch `index` (the same windows every time it is asked for).
  Batch get_val_batch(int64_t index) const { return get_val_rows(index, 0, global_batch_); }
  Batch get_val_rows(int64_t index, int64_t row0, int64_t row1) const;

  // Start offset of row `row` of step `step` in the train (or val) split.
  int64_t window_start(int64_t step, int64_t row, bool val) const;

  int64_t global_batch() const { return global_batch_; }
  int64_t seq_len() const { return seq_len_; }
  const TokenDataset& dataset() const { return *data_; }

 private:
  Batch make_rows(int64_t step, int64_t row0, int64_t row1, bool val) const;

  std::shared_ptr<const TokenDataset> data_;
  int64_t global_batch_;
  int64_t seq_len_;
  uint64_t train_key_;
  uint64_t val_key_;
};

}  // namespace pp3d
