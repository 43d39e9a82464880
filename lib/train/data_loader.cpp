// DataLoader: batch rows as a pure function of (seed, step, row, data).
#include <algorithm>

#include "pp3d/core/error.h"
#include "pp3d/core/rng.h"
#include "pp3d/train/data.h"

namespace pp3d {

namespace {

// Uniform window start in [0, positions) for counter (a, b) under `key`.
int64_t random_start(uint64_t key, uint64_t a, uint64_t b, int64_t positions) {
  const auto w = philox4x32({static_cast<uint32_t>(a), static_cast<uint32_t>(a >> 32), static_cast<uint32_t>(b),
                             static_cast<uint32_t>(b >> 32)},
                            {static_cast<uint32_t>(key), static_cast<uint32_t>(key >> 32)});
  const uint64_t u = (static_cast<uint64_t>(w[0]) << 32) | w[1];
  return static_cast<int64_t>(u % static_cast<uint64_t>(positions));
}

}  // namespace

DataLoader::DataLoader(std::shared_ptr<const TokenDataset> data, int64_t global_batch, int64_t seq_len,
                       uint64_t seed, Sampler sampler)
    : data_(std::move(data)), global_batch_(global_batch), seq_len_(seq_len), sampler_(sampler),
      train_key_(rng_key(seed, "data")), val_key_(rng_key(seed, "data/val")) {
  PP3D_CHECK(data_ != nullptr, "DataLoader needs a dataset");
  PP3D_CHECK(global_batch_ >= 1, "global batch size must be >= 1, got {}", global_batch_);
  PP3D_CHECK(seq_len_ >= 1, "sequence length must be >= 1, got {}", seq_len_);
  if (sampler_ == Sampler::Auto) sampler_ = data_->synthetic ? Sampler::Random : Sampler::Epoch;
  if (!data_->blend.empty()) blend_fractions_ = blend_fractions(data_->blend);
  const int parts = data_->blend.empty() ? 1 : static_cast<int>(data_->blend.size());
  for (int p = 0; p < parts; ++p) {
    const TokenDataset& d = part(p);
    const std::string where = data_->blend.empty() ? std::string() : fmt::format(" of '{}'", data_->blend[p].spec);
    for (bool val : {false, true}) {
      const TokenSplit& split = val ? d.val : d.train;
      const char* name = val ? "validation" : "training";
      PP3D_CHECK(split.size() >= seq_len_ + 1, "{} split{} has {} tokens, fewer than seq_len + 1 = {}; use more "
                 "data or a shorter --seq-len", name, where, split.size(), seq_len_ + 1);
      SplitIndex ix;
      for (const auto& piece : split.pieces()) {
        const int64_t windows = piece.tokens >= seq_len_ + 1 ? (piece.tokens - 1) / seq_len_ : 0;
        ix.windows.push_back(ix.windows.back() + windows);
        ix.tokens.push_back(ix.tokens.back() + piece.tokens);
      }
      PP3D_CHECK(sampler_ != Sampler::Epoch || ix.windows.back() >= 1, "{} split{}: no shard holds seq_len + 1 = "
                 "{} tokens, so the epoch sampler has no window; use longer shards, a shorter --seq-len or "
                 "--sampler random", name, where, seq_len_ + 1);
      (val ? val_index_ : train_index_).push_back(std::move(ix));
    }
  }
}

int DataLoader::blend_part(int64_t step, int64_t row, bool /*val*/) const {
  if (blend_fractions_.empty()) return 0;
  return blend_slot(blend_fractions_, static_cast<uint64_t>(step * global_batch_ + row)).part;
}

int64_t DataLoader::epoch_window_start(int p, int64_t index, bool val) const {
  const SplitIndex& ix = (val ? val_index_ : train_index_)[p];
  const int64_t n = ix.windows.back();
  const int64_t epoch = val ? 0 : index / n;  // validation: always the same permutation
  // Validation windows do not depend on the part's position in a blend, so a
  // source's own validation loss equals that of a run on the source alone.
  const uint64_t base = rng_key(val ? val_key_ : train_key_, fmt::format("part{}", val ? 0 : p));
  const uint64_t key = rng_key(base, fmt::format("epoch{}", epoch));
  const auto w = static_cast<int64_t>(permute_index(static_cast<uint64_t>(index % n), static_cast<uint64_t>(n), key));
  const auto k = static_cast<std::size_t>(std::upper_bound(ix.windows.begin(), ix.windows.end(), w) -
                                          ix.windows.begin() - 1);
  return ix.tokens[k] + (w - ix.windows[k]) * seq_len_;
}

int64_t DataLoader::part_window_start(int p, int64_t index, bool val) const {
  if (sampler_ == Sampler::Epoch) return epoch_window_start(p, index, val);
  const TokenDataset& d = part(p);
  const int64_t positions = (val ? d.val : d.train).size() - seq_len_;  // starts 0 .. n - seq_len - 1
  return random_start(val ? val_key_ : train_key_, static_cast<uint64_t>(index), ~static_cast<uint64_t>(p),
                      positions);
}

int64_t DataLoader::window_start(int64_t step, int64_t row, bool val) const {
  const auto g = static_cast<uint64_t>(step * global_batch_ + row);
  if (!blend_fractions_.empty()) {
    const BlendSlot slot = blend_slot(blend_fractions_, g);
    return part_window_start(slot.part, slot.index, val);
  }
  if (sampler_ == Sampler::Epoch) return epoch_window_start(0, static_cast<int64_t>(g), val);
  // The original random sampler's stream (kept so embedded-corpus runs are unchanged).
  const int64_t positions = (val ? data_->val : data_->train).size() - seq_len_;
  return random_start(val ? val_key_ : train_key_, static_cast<uint64_t>(row), static_cast<uint64_t>(step), positions);
}

Batch DataLoader::make_rows(int64_t step, int64_t row0, int64_t row1, bool val, int source) const {
  PP3D_CHECK(source < num_sources(), "data source {} does not exist (the data has {})", source, num_sources());
  PP3D_CHECK(step >= 0, "{} index must be >= 0, got {}", val ? "validation batch" : "step", step);
  PP3D_CHECK(0 <= row0 && row0 < row1 && row1 <= global_batch_,
             "batch rows [{}, {}) are not inside the global batch [0, {})", row0, row1, global_batch_);
  const int64_t rows = row1 - row0;
  Batch b;
  b.step = step;
  b.row0 = row0;
  b.inputs = Tensor::empty({rows, seq_len_}, DType::I32);
  b.targets = Tensor::empty({rows, seq_len_}, DType::I32);
  int32_t* in = b.inputs.data<int32_t>();
  int32_t* tg = b.targets.data<int32_t>();
  std::vector<int32_t> window(static_cast<std::size_t>(seq_len_ + 1));
  for (int64_t r = 0; r < rows; ++r) {
    const int p = source >= 0 ? source : blend_part(step, row0 + r, val);
    const int64_t start = source >= 0 ? part_window_start(source, step * global_batch_ + row0 + r, val)
                                      : window_start(step, row0 + r, val);
    const TokenDataset& d = part(p);
    (val ? d.val : d.train).read(start, seq_len_ + 1, window.data(), data_->vocab_size);
    std::copy(window.begin(), window.end() - 1, in + r * seq_len_);
    std::copy(window.begin() + 1, window.end(), tg + r * seq_len_);
  }
  return b;
}

Batch DataLoader::get_rows(int64_t step, int64_t row0, int64_t row1) const {
  return make_rows(step, row0, row1, false);
}

Batch DataLoader::get_val_rows(int64_t index, int64_t row0, int64_t row1) const {
  return make_rows(index, row0, row1, true);
}

Batch DataLoader::get_source_val_rows(int source, int64_t index, int64_t row0, int64_t row1) const {
  PP3D_CHECK(source >= 0, "data source must be >= 0, got {}", source);
  return make_rows(index, row0, row1, true, source);
}

std::string DataLoader::source_name(int source) const {
  PP3D_CHECK(source >= 0 && source < num_sources(), "data source {} does not exist (the data has {})", source,
             num_sources());
  return data_->blend.empty() ? std::string("data") : data_->blend[static_cast<std::size_t>(source)].spec;
}

std::vector<int64_t> DataLoader::epoch_windows() const {
  std::vector<int64_t> n;
  for (const SplitIndex& ix : train_index_) n.push_back(ix.windows.back());
  return n;
}

std::vector<std::string> DataLoader::epoch_events(int64_t step) const {
  std::vector<std::string> events;
  if (sampler_ != Sampler::Epoch) return events;
  const auto g0 = static_cast<uint64_t>(step * global_batch_), g1 = g0 + static_cast<uint64_t>(global_batch_);
  std::vector<int64_t> k0{static_cast<int64_t>(g0)}, k1{static_cast<int64_t>(g1)};
  if (!blend_fractions_.empty()) {
    k0 = blend_counts(blend_fractions_, g0);
    k1 = blend_counts(blend_fractions_, g1);
  }
  for (std::size_t p = 0; p < k0.size(); ++p) {
    const int64_t n = train_index_[p].windows.back();
    // Epochs whose last sample (index (e + 1) n - 1) falls in [k0, k1).
    for (int64_t e = k0[p] / n; (e + 1) * n - 1 < k1[p]; ++e) {
      const std::string what = data_->blend.empty() ? "the training data" : "'" + data_->blend[p].spec + "'";
      events.push_back(fmt::format("epoch {} of {} ({} windows of {} tokens) ends in step {}; epoch {} starts "
                                   "reshuffled", e + 1, what, n, seq_len_, step + 1, e + 2));
    }
  }
  return events;
}

}  // namespace pp3d
