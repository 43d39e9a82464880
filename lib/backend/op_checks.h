// Shape checks shared by every Backend implementation (internal header), so the
// CPU and CUDA backends reject the same arguments with the same messages.
#pragma once

#include <cstdint>

#include "pp3d/core/error.h"
#include "pp3d/core/tensor.h"

namespace pp3d::detail {

// LayerNorm: x[rows, n] against a [n] parameter; returns rows.
inline int64_t ln_rows(const Tensor& x, const Tensor& w, const char* what) {
  PP3D_CHECK(w.dim() == 1, "{}: weight must be 1-d, got shape {}", what, shape_str(w.shape()));
  PP3D_CHECK(x.dim() >= 1 && x.size(-1) == w.numel() && w.numel() > 0,
             "{}: x {} must end in the normalised size {}", what, shape_str(x.shape()), w.numel());
  return x.numel() / w.numel();
}

// Backends whose kernels take f32 parameter gradients only (CUDA so far): a
// clear error for 16-bit gradients (GptOptions::grad_dtype, --grad-dtype param)
// before the generic dtype check would report a bare mismatch.
inline void check_no_grad16(const Tensor& g, const char* backend, const char* what) {
  PP3D_CHECK(!g.defined() || !(g.dtype() == DType::BF16 || g.dtype() == DType::F16),
             "{}: 16-bit gradients are not implemented in the {} backend yet ({} is {}; use --grad-dtype f32)", what,
             backend, shape_str(g.shape()), dtype_name(g.dtype()));
}

inline void check_len(const Tensor& t, int64_t len, const char* what) {
  PP3D_CHECK(t.numel() == len, "{} has {} elements {}, expected {}", what, t.numel(), shape_str(t.shape()), len);
}

// LayerNorm forward arguments: every tensor f32 and on the backend's device
// (`check(tensor, dtype, what)` is the backend's own check), shapes consistent.
// Returns rows; the normalised size is weight.numel().
template <typename Check>
int64_t check_layernorm_forward(Check&& check, const Tensor& x, const Tensor& weight, const Tensor& bias,
                                const Tensor& y, const Tensor& mean, const Tensor& rstd, float eps) {
  check(x, DType::F32, "layernorm_forward: x");
  check(weight, DType::F32, "layernorm_forward: weight");
  check(bias, DType::F32, "layernorm_forward: bias");
  check(y, DType::F32, "layernorm_forward: y");
  check(mean, DType::F32, "layernorm_forward: mean");
  check(rstd, DType::F32, "layernorm_forward: rstd");
  const int64_t rows = ln_rows(x, weight, "layernorm_forward");
  const int64_t n = weight.numel();
  check_len(bias, n, "layernorm_forward: bias");
  check_shape(y, x.shape(), "layernorm_forward: y");
  check_len(mean, rows, "layernorm_forward: mean");
  check_len(rstd, rows, "layernorm_forward: rstd");
  PP3D_CHECK(eps >= 0.0f, "layernorm_forward: eps must be >= 0, got {}", eps);
  return rows;
}

// LayerNorm backward arguments (f32 parameter gradients; see check_no_grad16). Returns rows.
template <typename Check>
int64_t check_layernorm_backward(Check&& check, const Tensor& dy, const Tensor& x, const Tensor& weight,
                                 const Tensor& mean, const Tensor& rstd, const Tensor& dx, const Tensor& dweight,
                                 const Tensor& dbias) {
  check(dy, DType::F32, "layernorm_backward: dy");
  check(x, DType::F32, "layernorm_backward: x");
  check(weight, DType::F32, "layernorm_backward: weight");
  check(mean, DType::F32, "layernorm_backward: mean");
  check(rstd, DType::F32, "layernorm_backward: rstd");
  check(dx, DType::F32, "layernorm_backward: dx");
  check(dweight, DType::F32, "layernorm_backward: dweight");
  check(dbias, DType::F32, "layernorm_backward: dbias");
  const int64_t rows = ln_rows(x, weight, "layernorm_backward");
  const int64_t n = weight.numel();
  check_shape(dy, x.shape(), "layernorm_backward: dy");
  check_shape(dx, x.shape(), "layernorm_backward: dx");
  check_len(mean, rows, "layernorm_backward: mean");
  check_len(rstd, rows, "layernorm_backward: rstd");
  check_len(dweight, n, "layernorm_backward: dweight");
  check_len(dbias, n, "layernorm_backward: dbias");
  return rows;
}

// The [N, C] shape check shared by the embedding ops.
inline void check_rows(const Tensor& t, int64_t n, int64_t c, const char* what) {
  PP3D_CHECK(t.dim() == 2 && t.size(0) == n && t.size(1) == c, "{} must be [{}, {}], got {}", what, n, c,
             shape_str(t.shape()));
}

// Cross-entropy: logits [N, V_local], targets [N] and valid; returns N.
inline int64_t xent_rows(const Tensor& logits, const Tensor& targets, int64_t valid, const char* what) {
  PP3D_CHECK(logits.dim() == 2, "{}: logits must be [N, V_local], got {}", what, shape_str(logits.shape()));
  PP3D_CHECK(targets.dim() == 1 && targets.size(0) == logits.size(0), "{}: targets must be [{}], got {}", what,
             logits.size(0), shape_str(targets.shape()));
  PP3D_CHECK(valid >= 0 && valid <= logits.size(1), "{}: valid = {} outside [0, V_local = {}]", what, valid,
             logits.size(1));
  return logits.size(0);
}

}  // namespace pp3d::detail
