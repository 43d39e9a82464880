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
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_check.h"
#include "backend/f32_grad.h"
#include "backend/op_checks.h"
#include "launchers.h"
#include "pp3d/core/error.h"

namespace pp3d {

namespace {

Tensor workspace(const Shape& shape, Device d) { return Tensor::empty(shape, DType::F32, d, MemCategory::Workspace); }

}  // namespace

void CudaBackend::rmsnorm_forward(const Tensor& x, const Tensor& weight, Tensor& y, Tensor& rstd, float eps) {
  const auto dev_check = [this](const Tensor& t, DType dt, const char* what) { check(t, dt, what); };
  const int64_t rows = detail::check_rmsnorm_forward(dev_check, x, weight, y, rstd, eps);
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
  PP3D_CHECK_CUDA(
      kernels::swiglu_forward(out.data<float>(), gate.data<float>(), up.data<float>(), gate.numel(), stream_));
}

void CudaBackend::swiglu_backward(const Tensor& gate, const Tensor& up, const Tensor& dout, Tensor& dgate,
                                  Tensor& dup) {
  const auto dev_check = [this](const Tensor& t, DType dt, const char* what) { check(t, dt, what); };
  detail::check_swiglu(dev_check, "swiglu_backward", {&gate, &up, &dout, &dgate, &dup});
  PP3D_CHECK_CUDA(kernels::swiglu_backward(dgate.data<float>(), dup.data<float>(), gate.data<float>(),
                                           up.data<float>(), dout.data<float>(), gate.numel(), stream_));
}

void CudaBackend::rope_forward(const Tensor& x, Tensor& y, int64_t pos0, float theta) {
  const auto dev_check = [this](const Tensor& t, DType dt, const char* what) { check(t, dt, what); };
  detail::check_rope(dev_check, x, y, pos0, theta, "rope_forward");
  PP3D_CHECK_CUDA(kernels::rope(y.data<float>(), x.data<float>(), x.size(0), x.size(1), x.size(2), x.size(3), pos0,
                                theta, 1.0f, stream_));
}

void CudaBackend::rope_backward(const Tensor& dy, Tensor& dx, int64_t pos0, float theta) {
  const auto dev_check = [this](const Tensor& t, DType dt, const char* what) { check(t, dt, what); };
  detail::check_rope(dev_check, dy, dx, pos0, theta, "rope_backward");
  PP3D_CHECK_CUDA(kernels::rope(dx.data<float>(), dy.data<float>(), dy.size(0), dy.size(1), dy.size(2), dy.size(3),
                                pos0, theta, -1.0f, stream_));
}

void CudaBackend::gqa_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out, Tensor& lse,
                                        float scale) {
  const auto dev_check = [this](const Tensor& t, DType dt, const char* what) { check(t, dt, what); };
  const detail::GqaDims g = detail::check_gqa(dev_check, q, k, v, out, lse, "gqa_attention_forward");
  if (q.numel() == 0) return;
  Tensor qkv = workspace({g.B, g.T, 3, g.Hq, g.D}, device());
  PP3D_CHECK_CUDA(kernels::gqa_pack(qkv.data<float>(), q.data<float>(), k.data<float>(), v.data<float>(), g.B * g.T,
                                    static_cast<int>(g.Hq), static_cast<int>(g.Hkv), static_cast<int>(g.D), stream_));
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
  PP3D_CHECK_CUDA(kernels::gqa_pack(qkv.data<float>(), q.data<float>(), k.data<float>(), v.data<float>(), g.B * g.T,
                                    Hq, Hkv, D, stream_));
  attention_backward(dout, qkv, out, lse, dqkv, scale);
  PP3D_CHECK_CUDA(kernels::gqa_unpack_grads(dq.data<float>(), dk.data<float>(), dv.data<float>(), dqkv.data<float>(),
                                            g.B * g.T, Hq, Hkv, D, stream_));
}

}  // namespace pp3d
