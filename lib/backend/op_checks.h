// Shape checks shared by every Backend implementation (internal header), so the
// CPU and CUDA backends reject the same arguments with the same messages.
#pragma once

#include <cstdint>
#include <initializer_list>

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

// An activation operand that may be f32, bf16 or f16 (16-bit compute): the
// backend's check with the tensor's own dtype when it is a float dtype.
template <typename Check>
void check_act(Check&& check, const Tensor& t, const char* what) {
  check(t, t.defined() && is_floating(t.dtype()) ? t.dtype() : DType::F32, what);
}

inline void check_len(const Tensor& t, int64_t len, const char* what) {
  PP3D_CHECK(t.numel() == len, "{} has {} elements {}, expected {}", what, t.numel(), shape_str(t.shape()), len);
}

// LayerNorm forward arguments: x and y any float (f32/bf16/f16: 16-bit
// activations, f32 math), the rest f32; every tensor on the backend's device
// (`check(tensor, dtype, what)` is the backend's own check), shapes consistent.
// Returns rows; the normalised size is weight.numel().
template <typename Check>
int64_t check_layernorm_forward(Check&& check, const Tensor& x, const Tensor& weight, const Tensor& bias,
                                const Tensor& y, const Tensor& mean, const Tensor& rstd, float eps) {
  check_act(check, x, "layernorm_forward: x");
  check(weight, DType::F32, "layernorm_forward: weight");
  check(bias, DType::F32, "layernorm_forward: bias");
  check_act(check, y, "layernorm_forward: y");
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

// LayerNorm backward arguments (dy, x, dx any float; f32 parameter gradients:
// 16-bit ones go through detail::through_f32). Returns rows.
template <typename Check>
int64_t check_layernorm_backward(Check&& check, const Tensor& dy, const Tensor& x, const Tensor& weight,
                                 const Tensor& mean, const Tensor& rstd, const Tensor& dx, const Tensor& dweight,
                                 const Tensor& dbias) {
  check_act(check, dy, "layernorm_backward: dy");
  check_act(check, x, "layernorm_backward: x");
  check(weight, DType::F32, "layernorm_backward: weight");
  check(mean, DType::F32, "layernorm_backward: mean");
  check(rstd, DType::F32, "layernorm_backward: rstd");
  check_act(check, dx, "layernorm_backward: dx");
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

// ---- Llama-family ops ----------------------------------------------------------------

// RMSNorm forward (x, y any float: 16-bit activations, f32 math): returns rows; the normalised size is weight.numel().
template <typename Check>
int64_t check_rmsnorm_forward(Check&& check, const Tensor& x, const Tensor& weight, const Tensor& y,
                              const Tensor& rstd, float eps) {
  check_act(check, x, "rmsnorm_forward: x");
  check(weight, DType::F32, "rmsnorm_forward: weight");
  check_act(check, y, "rmsnorm_forward: y");
  check(rstd, DType::F32, "rmsnorm_forward: rstd");
  const int64_t rows = ln_rows(x, weight, "rmsnorm_forward");
  check_shape(y, x.shape(), "rmsnorm_forward: y");
  check_len(rstd, rows, "rmsnorm_forward: rstd");
  PP3D_CHECK(eps >= 0.0f, "rmsnorm_forward: eps must be >= 0, got {}", eps);
  return rows;
}

// RMSNorm backward (f32 dweight; 16-bit through detail::through_f32). Returns rows.
template <typename Check>
int64_t check_rmsnorm_backward(Check&& check, const Tensor& dy, const Tensor& x, const Tensor& weight,
                               const Tensor& rstd, const Tensor& dx, const Tensor& dweight) {
  check_act(check, dy, "rmsnorm_backward: dy");
  check_act(check, x, "rmsnorm_backward: x");
  check(weight, DType::F32, "rmsnorm_backward: weight");
  check(rstd, DType::F32, "rmsnorm_backward: rstd");
  check_act(check, dx, "rmsnorm_backward: dx");
  check(dweight, DType::F32, "rmsnorm_backward: dweight");
  const int64_t rows = ln_rows(x, weight, "rmsnorm_backward");
  check_shape(dy, x.shape(), "rmsnorm_backward: dy");
  check_shape(dx, x.shape(), "rmsnorm_backward: dx");
  check_len(rstd, rows, "rmsnorm_backward: rstd");
  check_len(dweight, weight.numel(), "rmsnorm_backward: dweight");
  return rows;
}

// SwiGLU operands: every tensor any float (16-bit: f32 math) with gate's numel.
template <typename Check>
void check_swiglu(Check&& check, const char* what, std::initializer_list<const Tensor*> ts) {
  const Tensor& first = **ts.begin();
  for (const Tensor* t : ts) {
    check_act(check, *t, what);
    check_same_numel(first, *t, what);
  }
}

// RoPE: x [B, T, H, D] any float (16-bit: f32 math) with D even, y the same shape; pos0 >= 0, theta > 0.
template <typename Check>
void check_rope(Check&& check, const Tensor& x, const Tensor& y, int64_t pos0, float theta, const char* what) {
  check_act(check, x, what);
  check_act(check, y, what);
  PP3D_CHECK(x.dim() == 4 && x.size(3) % 2 == 0, "{}: x must be [B, T, H, D] with D even, got {}", what,
             shape_str(x.shape()));
  check_shape(y, x.shape(), what);
  PP3D_CHECK(pos0 >= 0, "{}: pos0 must be >= 0, got {}", what, pos0);
  PP3D_CHECK(theta > 0.0f, "{}: rope theta must be > 0, got {}", what, theta);
}

struct GqaDims {
  int64_t B, T, Hq, Hkv, D;
};

// Grouped-query attention: q [B, T, Hq, D], k and v [B, T, Hkv, D] with Hkv
// dividing Hq, out like q, lse [B, Hq, T]; every tensor f32.
template <typename Check>
GqaDims check_gqa(Check&& check, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                  const Tensor& lse, const char* what) {
  // q, k, v, out (and dout, dq, dk, dv) share one dtype: f32, or bf16 / f16
  // (16-bit compute: f32 math, P and dS rounded as in attention_forward).
  check(lse, DType::F32, what);
  for (const Tensor* t : {&q, &k, &v, &out}) {
    check_act(check, *t, what);
    PP3D_CHECK(t->dtype() == q.dtype(), "{}: q, k, v, out must share one dtype, got {} and {}", what,
               dtype_name(q.dtype()), dtype_name(t->dtype()));
  }
  PP3D_CHECK(q.dim() == 4, "{}: q must be [B, T, Hq, D], got {}", what, shape_str(q.shape()));
  PP3D_CHECK(k.dim() == 4 && k.size(0) == q.size(0) && k.size(1) == q.size(1) && k.size(3) == q.size(3),
             "{}: k must be [B, T, Hkv, D] = [{}, {}, Hkv, {}], got {}", what, q.size(0), q.size(1), q.size(3),
             shape_str(k.shape()));
  check_shape(v, k.shape(), "gqa attention: v");
  const GqaDims g{q.size(0), q.size(1), q.size(2), k.size(2), q.size(3)};
  PP3D_CHECK(g.Hkv > 0 && g.Hq % g.Hkv == 0, "{}: the {} kv heads must divide the {} query heads", what, g.Hkv,
             g.Hq);
  check_shape(out, q.shape(), "gqa attention: out");
  check_shape(lse, {g.B, g.Hq, g.T}, "gqa attention: lse");
  return g;
}

// Backward: additionally dout like q, dq like q, dk and dv like k.
template <typename Check>
GqaDims check_gqa_backward(Check&& check, const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                           const Tensor& out, const Tensor& lse, const Tensor& dq, const Tensor& dk,
                           const Tensor& dv) {
  const GqaDims g = check_gqa(check, q, k, v, out, lse, "gqa_attention_backward");
  for (const Tensor* t : {&dout, &dq, &dk, &dv}) {
    check_act(check, *t, "gqa_attention_backward");
    PP3D_CHECK(t->dtype() == q.dtype(), "gqa_attention_backward: dout, dq, dk, dv must have q's dtype {}, got {}",
               dtype_name(q.dtype()), dtype_name(t->dtype()));
  }
  check_shape(dout, q.shape(), "gqa_attention_backward: dout");
  check_shape(dq, q.shape(), "gqa_attention_backward: dq");
  check_shape(dk, k.shape(), "gqa_attention_backward: dk");
  check_shape(dv, k.shape(), "gqa_attention_backward: dv");
  return g;
}

}  // namespace pp3d::detail
