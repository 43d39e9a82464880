// Helpers shared by the data tests (train_data_test, train_data_epoch_test).
#pragma once

#include <unistd.h>

#include <filesystem>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "pp3d/core/error.h"
#include "pp3d/core/tensor.h"
#include "pp3d/train/trainer.h"

namespace pp3d::test {

// The message of the pp3d::Error f throws, or "<no error>".
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

// An empty folder <tmp>/pp3d_<name>_<pid> (removed first if it exists).
inline std::filesystem::path fresh_temp_dir(const std::string& name) {
  const auto d = std::filesystem::temp_directory_path() / ("pp3d_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d;
}

// n token ids first + (i * 7919) % mod: every id in [first, first + mod) appears, in no simple order.
inline std::vector<uint32_t> ramp(int64_t n, uint32_t first, uint32_t mod) {
  std::vector<uint32_t> v;
  for (int64_t i = 0; i < n; ++i) v.push_back(first + static_cast<uint32_t>((i * 7919) % mod));
  return v;
}

// A one-layer, 16-wide GPT with 4 rows of 8 tokens per step: seconds per run.
inline TrainConfig tiny_train_config(int64_t vocab_size, int64_t max_steps) {
  TrainConfig c;
  c.num_layers = 1;
  c.hidden_size = 16;
  c.num_heads = 2;
  c.seq_len = 8;
  c.micro_batch_size = 4;
  c.max_steps = max_steps;
  c.warmup_steps = 0;
  c.eval_batches = 1;
  c.vocab_size = vocab_size;
  c.quiet = true;
  return c;
}

// The values of an i32 host tensor.
inline std::vector<int32_t> i32_values(const Tensor& t) {
  return std::vector<int32_t>(t.data<int32_t>(), t.data<int32_t>() + t.numel());
}

}  // namespace pp3d::test
