// Internal helpers of the tensor-parallel primitives: block permutations used
// to turn rank-ordered collective buffers into [B, T, C] / [N, out] layouts.
#pragma once

#include <cstdint>

#include "pp3d/backend/backend.h"
#include "pp3d/core/tensor.h"

namespace pp3d::detail {

// src viewed as [X, Y, Z] -> a new tensor [Y, X, Z] (reshaped to `out_shape`),
// dst[y, x, :] = src[x, y, :]; X*Y contiguous copies of Z elements.
Tensor swap_leading_dims(Backend& be, const Tensor& src, int64_t X, int64_t Y, int64_t Z, const Shape& out_shape,
                         MemCategory cat = MemCategory::Activations);

// src viewed as [X, Y, Z] -> a new tensor [X, Z] holding src[:, y, :].
Tensor take_middle_block(Backend& be, const Tensor& src, int64_t X, int64_t Y, int64_t Z, int64_t y);

// `shape` with its last dim replaced by `last`.
Shape with_last_dim(Shape shape, int64_t last);

}  // namespace pp3d::detail
