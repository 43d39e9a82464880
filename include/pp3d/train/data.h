// Training data: token datasets (embedded synthetic corpus, byte-level text,
// memory-mapped token shards, weighted blends) and a layout-independent batch
// sampler.
//
// A TokenDataset is immutable after loading and may be shared between threads
// and loaders. Its splits are TokenSplits: in-memory token vectors (synthetic
// corpus, text) or read-only memory mappings of shard files, so no rank copies a
// shard into its heap. DataLoader is a pure function of (seed, step, row, data):
// the global batch of step s never depends on how many data-parallel ranks or
// micro-batches consume it, which is what lets every parallel layout (and every
// resume) reproduce the serial run. DataLoader methods are const and thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "pp3d/core/tensor.h"

namespace pp3d {

// A sequence of token ids made of pieces (one per shard file, or one owned vector).
// Reads check every id against the vocabulary and name the file and byte offset
// of a bad one.
class TokenSplit {
 public:
  struct Piece {
    const unsigned char* data = nullptr;  // first token
    int64_t tokens = 0;
    int bytes_per_token = 2;               // 2 (uint16) or 4 (uint32)
    int64_t file_offset = 0;               // byte offset of `data` in `file` (for messages)
    std::string file;                      // shard path, or a description of in-memory data
    std::shared_ptr<const void> owner;     // keeps the mapping / vector alive
  };

  TokenSplit() = default;
  // An owned in-memory split (uint16 ids), named `name` in messages.
  TokenSplit(std::vector<uint16_t> tokens, std::string name = "in-memory tokens");  // NOLINT: implicit by design

  void append(Piece piece);
  int64_t size() const { return starts_.empty() ? 0 : starts_.back(); }
  bool empty() const { return size() == 0; }
  const std::vector<Piece>& pieces() const { return pieces_; }
  uint32_t operator[](int64_t i) const;
  // Copies tokens [start, start + n) (may cross pieces) into out; every id must be < vocab.
  void read(int64_t start, int64_t n, int32_t* out, int64_t vocab) const;
  // Tokens [begin, end) as a split sharing this one's storage.
  TokenSplit slice(int64_t begin, int64_t end) const;
  std::vector<uint32_t> to_vector() const;  // small splits (tests, tools)

 private:
  std::vector<Piece> pieces_;
  std::vector<int64_t> starts_;  // starts_[i + 1] = tokens in pieces 0..i; starts_[0] = 0
};

struct TokenDataset;
struct BlendPart {
  double weight = 0.0;  // normalised: the parts' weights sum to 1
  std::string spec;     // the path as given
  std::shared_ptr<const TokenDataset> data;
};

struct TokenDataset {
  TokenSplit train;          // training split
  TokenSplit val;            // validation split
  int64_t vocab_size = 256;  // every token is < vocab_size
  std::string description;   // one line for the log ("synthetic corpus, 2.0 MB", ...)
  bool synthetic = false;    // the embedded corpus (its default sampler is "random")
  // How the ids were made: "bytes" (embedded corpus, text files, prepare_data's
  // byte-level shards), the path of the tokenizer.json next to tools/prepare_data's
  // shards, or "" (unknown, e.g. plain llm.c shards; blends whose parts differ).
  std::string tokenizer;
  // A weighted blend (--data "0.7 a 0.3 b"): batches draw from these parts and
  // train/val above are empty. Parts are never blends themselves.
  std::vector<BlendPart> blend;
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

// ---- (c) token shards (memory-mapped) ---------------------------------------------
// Header: 256 little-endian int32; then the tokens.
//   header[0] magic 20240520 (llm.c's)
//   header[1] version: 1 = uint16 ids (llm.c), 2 = uint32 ids (pp3d's variant for
//             vocabularies above 65536)
//   header[2] token count (>= 0); the file holds exactly 1024 + count * (2 or 4) bytes
//             or more (trailing bytes are ignored, as llm.c does)
//   header[3] bytes per token: 0 or 2 for version 1 (llm.c writes 0), 4 for version 2
// Bad files throw pp3d::Error naming the file and byte offset.
constexpr int32_t kLlmcShardMagic = 20240520;
// Maps `path` read-only and checks its header and size; ids are checked when read.
TokenSplit map_token_shard(const std::string& path);
// Reads a whole shard into memory, every id checked against vocab_size (tests, tools).
std::vector<uint32_t> read_token_shard(const std::string& path, int64_t vocab_size);
std::vector<uint16_t> read_llmc_shard(const std::string& path, int64_t vocab_size);
// Writes version 1 (uint16) when every id < 65536 and !force32, else version 2.
void write_token_shard(const std::string& path, const std::vector<uint32_t>& tokens, bool force32 = false);
void write_llmc_shard(const std::string& path, const std::vector<uint16_t>& tokens);
// `path` is a folder (files matching *train*.bin are the training split,
// *val*.bin the validation split, each in sorted order) or one .bin file (its
// validation split is the sibling with "train" replaced by "val" if that exists,
// otherwise the last 10% of its tokens). A `meta.json` next to the shards (written
// by tools/prepare_data) sets the vocabulary size; otherwise `vocab_size`.
TokenDataset load_llmc_dataset(const std::string& path, int64_t vocab_size = 50257);

// Picks the reader for `spec`: "" or "synthetic" -> the embedded corpus (seed
// `seed`); a .bin file, or a folder holding .bin files -> token shards (vocab
// `shard_vocab` unless a meta.json says otherwise); any other file or folder ->
// byte-level text; "W1 PATH1 W2 PATH2 ..." (Megatron's form, weights > 0,
// normalised) -> a weighted blend of those datasets.
// A path ending in .yaml / .yml -> a blend file: a YAML list of {weight: W, path: P}
// entries (or a flat [W1, P1, W2, P2] list), paths relative to the file's folder.
TokenDataset load_dataset(const std::string& spec, uint64_t seed = 20240601, int64_t shard_vocab = 50257);
// Megatron's "W1 PATH1 W2 PATH2 ..." -> {(W1, PATH1), ...} (weights as given); empty
// when `spec` is a single path. A malformed blend is a pp3d::UserError.
std::vector<std::pair<double, std::string>> parse_blend_spec(const std::string& spec);
// One source, never a blend (what load_dataset does for each part).
TokenDataset load_single_dataset(const std::string& spec, uint64_t seed, int64_t shard_vocab);

// Entropy of the unigram (single-token) distribution of `tokens`, in bits;
// multiply by ln 2 for nats (the unit of the training loss).
double unigram_entropy_bits(const std::vector<uint16_t>& tokens, int64_t vocab_size);
// The same over a dataset's training split (a blend: its parts mixed by weight),
// reading at most `max_tokens` tokens per part so that a huge mapped dataset is
// not paged in; ids are checked against the vocabulary on the way.
double unigram_entropy_bits(const TokenDataset& data, int64_t max_tokens = int64_t{1} << 24);

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

// How rows pick their windows.
//   Epoch: sampling without replacement. The split's non-overlapping windows
//     (seq_len + 1 tokens starting at multiples of seq_len inside one piece) are
//     permuted per epoch by a seeded bijection computed lazily (O(1) memory);
//     global sample g = step * global_batch + row is window perm_e(g mod N) of
//     epoch e = g / N. Validation: one fixed permutation.
//   Random: every row is an independent uniformly random window start (with
//     replacement): the original sampler, the default for the embedded corpus.
//   Auto: Random for the embedded corpus, Epoch for everything else.
enum class Sampler { Auto, Epoch, Random };
Sampler parse_sampler(const std::string& name);  // "auto" | "epoch" | "random"
const char* sampler_name(Sampler s);

// Seeded bijection of [0, n) (a Feistel network with cycle walking): the epoch
// permutation. Exposed for tests.
uint64_t permute_index(uint64_t i, uint64_t n, uint64_t key);
// Deterministic blend schedule. Part i takes the fraction weight_i / (weight_i +
// ... + weight_last) of the samples the parts before it left, spread evenly
// (sample x of that stream goes to part i when floor(f (x + 1)) > floor(f x)), so
// over every prefix of G samples part i gets weight_i * G within a few samples,
// and sample g's part and index in that part's stream are O(parts) to compute.
struct BlendSlot {
  int part = 0;
  int64_t index = 0;
};
// The per-level fractions above, as numerators over 2^32 (the last is 2^32).
std::vector<uint64_t> blend_fractions(const std::vector<BlendPart>& parts);
BlendSlot blend_slot(const std::vector<uint64_t>& fractions, uint64_t g);
// How many of the samples [0, g) each part gets.
std::vector<int64_t> blend_counts(const std::vector<uint64_t>& fractions, uint64_t g);

class DataLoader {
 public:
  // Preconditions (checked): global_batch >= 1, seq_len >= 1, and each split
  // holds at least seq_len + 1 tokens (Epoch: at least one window).
  DataLoader(std::shared_ptr<const TokenDataset> data, int64_t global_batch, int64_t seq_len, uint64_t seed,
             Sampler sampler = Sampler::Auto);
  // The whole global batch of training step `step` (>= 0).
  Batch get_batch(int64_t step) const { return get_rows(step, 0, global_batch_); }
  // Rows [row0, row1) of that batch, generated without the others; equal to the
  // same rows of get_batch(step). 0 <= row0 < row1 <= global_batch.
  Batch get_rows(int64_t step, int64_t row0, int64_t row1) const;
  // Validation batch `index` (the same windows every time it is asked for).
  Batch get_val_batch(int64_t index) const { return get_val_rows(index, 0, global_batch_); }
  Batch get_val_rows(int64_t index, int64_t row0, int64_t row1) const;
  // The same for one source of a blend: every row comes from source `source`'s
  // validation split (its own fixed windows), for per-source validation loss.
  Batch get_source_val_rows(int source, int64_t index, int64_t row0, int64_t row1) const;
  // Blend parts (1 for a plain dataset) and their names (the paths as given).
  int num_sources() const { return data_->blend.empty() ? 1 : static_cast<int>(data_->blend.size()); }
  std::string source_name(int source) const;

  // Start offset of row `row` of step `step` in the train (or val) split
  // (a blend: in the part blend_part(step, row, val) picks).
  int64_t window_start(int64_t step, int64_t row, bool val) const;
  int blend_part(int64_t step, int64_t row, bool val) const;

  Sampler sampler() const { return sampler_; }
  // Epoch sampler: windows per epoch of the training split (of each blend part).
  std::vector<int64_t> epoch_windows() const;
  // Epoch sampler: one line per (part and) epoch that ends within step `step`'s
  // batch ("epoch 1 of the training data ends in step 37 ..."); empty otherwise.
  std::vector<std::string> epoch_events(int64_t step) const;

  int64_t global_batch() const { return global_batch_; }
  int64_t seq_len() const { return seq_len_; }
  const TokenDataset& dataset() const { return *data_; }

 private:
  // source < 0: the blend picks each row's part; otherwise every row from part `source`.
  Batch make_rows(int64_t step, int64_t row0, int64_t row1, bool val, int source = -1) const;
  // Start of sample `index` of part p's (train or val) stream.
  int64_t part_window_start(int p, int64_t index, bool val) const;
  const TokenDataset& part(int p) const { return data_->blend.empty() ? *data_ : *data_->blend[p].data; }
  // Epoch sampler: start of the sample `index` of part p's split.
  int64_t epoch_window_start(int p, int64_t index, bool val) const;

  std::shared_ptr<const TokenDataset> data_;
  int64_t global_batch_;
  int64_t seq_len_;
  Sampler sampler_;
  uint64_t train_key_;
  uint64_t val_key_;
  std::vector<uint64_t> blend_fractions_;
  // Per part and split: windows and tokens prefix-summed over the split's pieces.
  struct SplitIndex {
    std::vector<int64_t> windows{0};
    std::vector<int64_t> tokens{0};
  };
  std::vector<SplitIndex> train_index_, val_index_;
};

}  // namespace pp3d
