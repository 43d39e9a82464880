// DataLoader: batch rows as a pure function of (seed, step, row).
#include "pp3d/core/error.h"
#include "pp3d/core/rng.h"
#include "pp3d/train/data.h"

namespace pp3d {

DataLoader::DataLoader(std::shared_ptr<const TokenDataset> data, int64_t global_batch, int64_t seq_len,
                       uint64_t seed)
    : data_(std::move(data)), global_batch_(global_batch), seq_len_(seq_len),
      train_key_(rng_key(seed, "data")), val_key_(rng_key(seed, "data/val")) {
  PP3D_CHECK(data_ != nullptr, "DataLoader needs a dataset");
  PP3D_CHECK(global_batch_ >= 1, "global batch size must be >= 1, got {}", global_batch_);
  PP3D_CHECK(seq_len_ >= 1, "sequence length must be >= 1, got {}", seq_len_);
  PP3D_CHECK(static_cast<int64_t>(data_->train.size()) >= seq_len_ + 1,
             "training split has {} tokens, fewer than seq_len + 1 = {}; use more data or a shorter --seq-len",
             data_->train.size(), seq_len_ + 1);
  PP3D_CHECK(static_cast<int64_t>(data_->val.size()) >= seq_len_ + 1,
             "validation split has {} tokens, fewer than seq_len + 1 = {}; use more data or a shorter --seq-len",
             data_->val.size(), seq_len_ + 1);
}

int64_t DataLoader::window_start(int64_t step, int64_t row, bool val) const {
  const uint64_t key = val ? val_key_ : train_key_;
  const auto n = static_cast<int64_t>(val ? data_->val.size() : data_->train.size());
  const auto positions = static_cast<uint64_t>(n - seq_len_);  // starts 0 .. n - seq_len - 1
  const auto s = static_cast<uint64_t>(step), r = static_cast<uint64_t>(row);
  const auto w = philox4x32({static_cast<uint32_t>(r), static_cast<uint32_t>(r >> 32), static_cast<uint32_t>(s),
                             static_cast<uint32_t>(s >> 32)},
                            {static_cast<uint32_t>(key), static_cast<uint32_t>(key >> 32)});
  const uint64_t u = (static_cast<uint64_t>(w[0]) << 32) | w[1];
  return static_cast<int64_t>(u % positions);
}

Batch DataLoader::make_rows(int64_t step, int64_t row0, int64_t row1, bool val) const {
  PP3D_CHECK(step >= 0, "{} index must be >= 0, got {}", val ? "validation batch" : "step", step);
  PP3D_CHECK(0 <= row0 && row0 < row1 && row1 <= global_batch_,
             "batch rows [{}, {}) are not inside the global batch [0, {})", row0, row1, global_batch_);
  const auto& tokens = val ? data_->val : data_->train;
  const int64_t rows = row1 - row0;
  Batch b;
  b.step = step;
  b.row0 = row0;
  b.inputs = Tensor::empty({rows, seq_len_}, DType::I32);
  b.targets = Tensor::empty({rows, seq_len_}, DType::I32);
  int32_t* in = b.inputs.data<int32_t>();
  int32_t* tg = b.targets.data<int32_t>();
  for (int64_t r = 0; r < rows; ++r) {
    const uint16_t* w = tokens.data() + window_start(step, row0 + r, val);
    for (int64_t t = 0; t < seq_len_; ++t) {
      in[r * seq_len_ + t] = w[t];
      tg[r * seq_len_ + t] = w[t + 1];
    }
  }
  return b;
}

Batch DataLoader::get_rows(int64_t step, int64_t row0, int64_t row1) const {
  return make_rows(step, row0, row1, false);
}

Batch DataLoader::get_val_rows(int64_t index, int64_t row0, int64_t row1) const {
  return make_rows(index, row0, row1, true);
}

}  // namespace pp3d
