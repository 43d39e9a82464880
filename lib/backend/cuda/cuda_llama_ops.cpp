// CudaBackend: RMSNorm, SwiGLU, RoPE and grouped-query attention. Argument
// checks are CpuBackend's (backend/op_checks.h); the math is described at the
// top of kernels/llama_ops.cu.
//
// Grouped-query attention packs q and the repeated k/v heads (HF repeat_kv)
// into the fused [B, T, 3, Hq, D] layout and runs the flash-style MHA kernels
// of kernels/attention.cu (the T x T scores never reach memory; lse is kept);
// backward unpacks dq and sums each kv head's query-head gradients in order.
// The packed copy costs (Hq + 2 Hq) / (Hq + 2 Hkv) times the q|k|v bytes in
// workspace; a kernel reading k/v per group directly is future work.
//
// 16-bit activations (bf16/f16, the Llama's 16-bit compute): RMSNorm, SwiGLU
// and RoPE widen their 16-bit inputs into f32 workspace copies, run the f32
// kernel and round each output once (Backend::cast) -- the CPU emulation's
// math, at the cost of extra casts (16-bit-I/O kernels are future work).
// 16-bit grouped-query attention packs in f32, rounds the packed q|k|v (exact:
// they were 16-bit) and runs the 16-bit fused attention (cuDNN SDPA, P and dS
// in 16 bits); backward widens the packed 16-bit dqkv, sums each kv head's
// query-group gradients in f32 and rounds dk, dv once (the CPU op instead
// accumulates the group in f32 before one rounding: a difference of the
// per-query-head dK/dV rounding inside cuDNN).
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_check.h"
#include "backend/f32_grad.h"
#include "backend/op_checks.h"
#include "launchers.h"
#include "pp3d/core/error.h"

namespace pp3d {

namespace {

Tensor workspace(const Shape& shape, Device d, DType dt = DType::F32) {
  return Tensor::empty(shape, dt, d, MemCategory::Workspace);
}

bool is16(const Tensor& t) { return t.defined() && t.dtype() != DType::F32; }

// t as f32: itself, or an f32 workspace copy of a 16-bit tensor.
Tensor widen(Backend& be, const Tensor& t) {
  if (!is16(t)) return t;
  Tensor out = workspace(t.shape(), t.device());
  be.cast(t, out);
  return out;
}
// Where an f32 kernel writes `out`: itself, or f32 workspace rounded into it by narrow().
Tensor f32_target(const Tensor& out) { return is16(out) ? workspace(out.shape(), out.device()) : out; }
void narrow(Backend& be, const Tensor& out32, Tensor& out) {
  if (is16(out)) be.cast(out32, out);
}

}  // namespace

void CudaBackend::rmsnorm_forward(const Tensor& x, const Tensor& weight, Tensor& y, Tensor& rstd, float eps) {
  const auto dev_check = [this](const Tensor& t, DType dt, const char* what) { check(t, dt, what); };
  const int64_t rows = detail::check_rmsnorm_forward(dev_check, x, weight, y, rstd, eps);
  if (is16(x) || is16(y)) {
    Tensor y32 = f32_target(y);
    rmsnorm_forward(widen(*this, x), weight, y32, rstd, eps);
    narrow(*this, y32, y);
    return;
  }
  PP3D_CHECK_CUDA(kernels::rmsnorm_forward(y.data<float>(), rstd.data<float>(), x.data<float>(), weight.data<float>(),
                                           rows, weight.numel(), eps, stream_));
}

void CudaBackend::rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& rstd,
                                   Tensor& dx, Tensor& dweight_out) {
  // A 16-bit dweight (--grad-dtype param): accumulated into an f32 copy, rounded once.
  check_float(dweight_out, "rmsnorm_backward: dweight");
  detail::through_f32(*this, dweight_out,
                      [&](Tensor& dweight) { rmsnorm_backward_f32(dy, x, weight, rstd, dx, dweight); });
}

void CudaBackend::rmsnorm_backward_f32(const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& rstd,
                                       Tensor& dx, Tensor& dweight) {
  const auto dev_check = [this](const Tensor& t, DType dt, const char* what) { check(t, dt, what); };
  const int64_t rows = detail::check_rmsnorm_backward(dev_check, dy, x, weight, rstd, dx, dweight);
  if (is16(dy) || is16(x) || is16(dx)) {
    Tensor dx32 = f32_target(dx);
    rmsnorm_backward(widen(*this, dy), widen(*this, x), weight, rstd, dx32, dweight);
    narrow(*this, dx32, dx);
    return;
  }
  const int64_t n = weight.numel();
  if (rows == 0) return;
  auto* partial = static_cast<float*>(
      scratch(0, static_cast<std::size_t>(kernels::rmsnorm_backward_chunks(rows) * n) * sizeof(float)));
  PP3D_CHECK_CUDA(kernels::rmsnorm_backward(dx.data<float>(), dweight.data<float>(), dy.data<float>(),
                                            x.data<float>(), weight.data<float>(), rstd.data<float>(), rows, n,
                                            partial, stream_));
}

void CudaBackend::swiglu_forward(const Tensor& gate, const Tensor& up, Tensor& out) {
  const auto dev_check = [this](const Tensor& t, DType dt, const char* what) { check(t, dt, what); };
  detail::check_swiglu(dev_check, "swiglu_forward", {&gate, &up, &out});
  if (is16(gate) || is16(up) || is16(out)) {
    Tensor out32 = f32_target(out);
    swiglu_forward(widen(*this, gate), widen(*this, up), out32);
    narrow(*this, out32, out);
    return;
  }
  PP3D_CHECK_CUDA(
      kernels::swiglu_forward(out.data<float>(), gate.data<float>(), up.data<float>(), gate.numel(), stream_));
}

void CudaBackend::swiglu_backward(const Tensor& gate, const Tensor& up, const Tensor& dout, Tensor& dgate,
                                  Tensor& dup) {
  const auto dev_check = [this](const Tensor& t, DType dt, const char* what) { check(t, dt, what); };
  detail::check_swiglu(dev_check, "swiglu_backward", {&gate, &up, &dout, &dgate, &dup});
  if (is16(gate) || is16(up) || is16(dout) || is16(dgate) || is16(dup)) {
    const Tensor g32 = widen(*this, gate), u32 = widen(*this, up);
    Tensor dg32 = f32_target(dgate), du32 = f32_target(dup);
    swiglu_backward(g32, u32, widen(*this, dout), dg32, du32);
    narrow(*this, dg32, dgate);
    narrow(*this, du32, dup);
    return;
  }
  PP3D_CHECK_CUDA(kernels::swiglu_backward(dgate.data<float>(), dup.data<float>(), gate.data<float>(),
                                           up.data<float>(), dout.data<float>(), gate.numel(), stream_));
}

void CudaBackend::rope_forward(const Tensor& x, Tensor& y, int64_t pos0, float theta) {
  const auto dev_check = [this](const Tensor& t, DType dt, const char* what) { check(t, dt, what); };
  detail::check_rope(dev_check, x, y, pos0, theta, "rope_forward");
  if (is16(x) || is16(y)) {
    Tensor y32 = f32_target(y);
    rope_forward(widen(*this, x), y32, pos0, theta);
    narrow(*this, y32, y);
    return;
  }
  PP3D_CHECK_CUDA(kernels::rope(y.data<float>(), x.data<float>(), x.size(0), x.size(1), x.size(2), x.size(3), pos0,
                                theta, 1.0f, stream_));
}

void CudaBackend::rope_backward(const Tensor& dy, Tensor& dx, int64_t pos0, float theta) {
  const auto dev_check = [this](const Tensor& t, DType dt, const char* what) { check(t, dt, what); };
  detail::check_rope(dev_check, dy, dx, pos0, theta, "rope_backward");
  if (is16(dy) || is16(dx)) {
    Tensor dx32 = f32_target(dx);
    rope_backward(widen(*this, dy), dx32, pos0, theta);
    narrow(*this, dx32, dx);
    return;
  }
  PP3D_CHECK_CUDA(kernels::rope(dx.data<float>(), dy.data<float>(), dy.size(0), dy.size(1), dy.size(2), dy.size(3),
                                pos0, theta, -1.0f, stream_));
}

void CudaBackend::gqa_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out, Tensor& lse,
                                        float scale) {
  const auto dev_check = [this](const Tensor& t, DType dt, const char* what) { check(t, dt, what); };
  const detail::GqaDims g = detail::check_gqa(dev_check, q, k, v, out, lse, "gqa_attention_forward");
  if (q.numel() == 0) return;
  Tensor qkv = workspace({g.B, g.T, 3, g.Hq, g.D}, device());
  const Tensor q32 = widen(*this, q), k32 = widen(*this, k), v32 = widen(*this, v);
  PP3D_CHECK_CUDA(kernels::gqa_pack(qkv.data<float>(), q32.data<float>(), k32.data<float>(), v32.data<float>(),
                                    g.B * g.T, static_cast<int>(g.Hq), static_cast<int>(g.Hkv), static_cast<int>(g.D),
                                    stream_));
  if (is16(q)) {  // 16-bit: the fused 16-bit attention on the (exactly) rounded pack
    Tensor qkv16 = workspace(qkv.shape(), device(), q.dtype());
    cast(qkv, qkv16);
    attention_forward(qkv16, out, lse, scale);
    return;
  }
  attention_forward(qkv, out, lse, scale);
}

void CudaBackend::gqa_attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                                         const Tensor& out, const Tensor& lse, Tensor& dq, Tensor& dk, Tensor& dv,
                                         float scale) {
  const auto dev_check = [this](const Tensor& t, DType dt, const char* what) { check(t, dt, what); };
  const detail::GqaDims g = detail::check_gqa_backward(dev_check, dout, q, k, v, out, lse, dq, dk, dv);
  if (q.numel() == 0) return;
  const int Hq = static_cast<int>(g.Hq), Hkv = static_cast<int>(g.Hkv), D = static_cast<int>(g.D);
  Tensor qkv = workspace({g.B, g.T, 3, g.Hq, g.D}, device());
  Tensor dqkv = workspace(qkv.shape(), device());
  const Tensor q32 = widen(*this, q), k32 = widen(*this, k), v32 = widen(*this, v);
  PP3D_CHECK_CUDA(kernels::gqa_pack(qkv.data<float>(), q32.data<float>(), k32.data<float>(), v32.data<float>(),
                                    g.B * g.T, Hq, Hkv, D, stream_));
  if (is16(q)) {  // 16-bit: fused 16-bit attention backward, dqkv widened for the f32 group sums
    Tensor qkv16 = workspace(qkv.shape(), device(), q.dtype()), dqkv16 = workspace(qkv.shape(), device(), q.dtype());
    cast(qkv, qkv16);
    attention_backward(dout, qkv16, out, lse, dqkv16, scale);
    cast(dqkv16, dqkv);
  } else {
    attention_backward(dout, qkv, out, lse, dqkv, scale);
  }
  Tensor dq32 = f32_target(dq), dk32 = f32_target(dk), dv32 = f32_target(dv);
  PP3D_CHECK_CUDA(kernels::gqa_unpack_grads(dq32.data<float>(), dk32.data<float>(), dv32.data<float>(),
                                            dqkv.data<float>(), g.B * g.T, Hq, Hkv, D, stream_));
  narrow(*this, dq32, dq);
  narrow(*this, dk32, dk);
  narrow(*this, dv32, dv);
}

}  // namespace pp3d
