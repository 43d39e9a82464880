// Counter-based random numbers (Philox-4x32-10) for layout-independent init.
//
// Element i of a stream is a pure function of (key, i): any slice of a
// parameter can be generated on its own and equals that slice of the full
// draw. A parameter's key is derived from (seed, parameter name), so shards
// on different ranks compute exactly their part of the serial model's weights.
// All functions are pure and thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

#include "pp3d/core/tensor.h"

namespace pp3d {

// One Philox-4x32-10 block: 4 random words for a 128-bit counter and 64-bit key.
std::array<uint32_t, 4> philox4x32(std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key);

// Stable 64-bit key from a seed and a name (FNV-1a of the name mixed with the seed).
uint64_t rng_key(uint64_t seed, std::string_view name);

// Element `index` of the stream `key`: uniform in [0, 1), and standard normal
// (Box-Muller on the first two words, computed in double).
float rng_uniform(uint64_t key, uint64_t index);
float rng_normal(uint64_t key, uint64_t index);

// Fills rows [row0, row0 + rows) x cols [col0, col0 + cols) of a logical
// [*, full_cols] matrix into `out` (row-major, `cols` wide) with
// mean + std * normal(key, r * full_cols + c).
void rng_normal_block(float* out, uint64_t key, int64_t row0, int64_t rows, int64_t col0, int64_t cols,
                      int64_t full_cols, float mean, float std);
void rng_uniform_block(float* out, uint64_t key, int64_t row0, int64_t rows, int64_t col0, int64_t cols,
                       int64_t full_cols, float lo, float hi);

// Tensor form: `t` (host f32/bf16/f16, viewed as [rows, cols] with cols =
// last dim) receives the block starting at (row0, col0) of the full matrix.
void rng_normal_fill(Tensor& t, uint64_t key, int64_t row0, int64_t col0, int64_t full_cols, float mean,
                     float std);

}  // namespace pp3d
