// CudaBackend: RMSNorm, SwiGLU, RoPE and grouped-query attention. Argument
// checks are CpuBackend's (backend/op_checks.h); the math is described at the
// top of kernels/llama_ops.cu.
//
// RMSNorm, SwiGLU and RoPE read and write each activation in its own dtype
// (f32, bf16 or f16: the Llama's 16-bit compute) with f32 math inside the
// kernel and each output rounded once -- the CPU emulation's rounding points
// (lib/backend/cpu/cpu_llama_ops.cpp), with no widened copies. RMSNorm's
// weight, rstd and dweight are f32 (a 16-bit dweight, --grad-dtype param,
// goes through an f32 copy rounded once: detail::through_f32).
//
// Grouped-query attention, 16-bit q/k/v with the cuDNN frontend in the build
// ("cudnn_sdpa", attention_impl): cuDNN's fused flash attention
// (detail::CudnnSdpa) reads q [B, T, Hq, D] and k, v [B, T, Hkv, D] in place
// (no repeat_kv copy: query head h uses kv head h / (Hq / Hkv)) and writes out
// and dq, dk, dv in q's dtype, lse in f32; P and dS are 16-bit inside.
// dK / dV of a kv head sum its query group: cuDNN's SDPA backward graph
// (cudnn_frontend scaled_dot_product_flash_attention.h) declares per-query-head
// dK / dV terms in q's dtype reduced by an ADD over the group; whether the
// fused engine rounds those terms before the sum is not documented. The CPU
// emulation sums the group in f32 and rounds once; tests/cuda/
// cuda_llama_ops_test.cpp measures which of the two cuDNN's result is closer to.
// Forward is deterministic; backward is not bitwise (cuDNN accumulates dQ in an
// f32 workspace in an unspecified order unless its deterministic mode is set).
//
// Fallback (f32 q/k/v, or a build without the cuDNN frontend): q and the
// repeated k/v heads (HF repeat_kv) are packed in f32 into the fused
// [B, T, 3, Hq, D] layout and the MHA path runs on it (attention_forward: the
// flash kernels of kernels/attention.cu, with 16-bit q/k/v on the rounded
// pack); backward unpacks dq and sums each kv head's query-head gradients in
// f32, in head order, rounding dk, dv once. The pack costs (3 Hq) / (Hq + 2 Hkv)
// times the q|k|v bytes in workspace and Hq / Hkv times the K/V attention work.
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_sdpa.h"
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

int code(const Tensor& t) { return static_cast<int>(t.dtype()); }  // kernels' dtype code (0 f32, 1 bf16, 2 f16)

// q [B, T, Hq, D], k and v [B, T, Hkv, D], contiguous: tokens Hq*D / Hkv*D elements apart.
detail::SdpaShape sdpa_shape(const detail::GqaDims& g, DType dt) {
  return {g.B, g.T, g.Hq, g.Hkv, g.D, g.Hq * g.D, g.Hkv * g.D, dt};
}

}  // namespace

void CudaBackend::rmsnorm_forward(const Tensor& x, const Tensor& weight, Tensor& y, Tensor& rstd, float eps) {
  const auto dev_check = [this](const Tensor& t, DType dt, const char* what) { check(t, dt, what); };
  const int64_t rows = detail::check_rmsnorm_forward(dev_check, x, weight, y, rstd, eps);
  PP3D_CHECK_CUDA(kernels::rmsnorm_forward(y.raw(), code(y), rstd.data<float>(), x.raw(), code(x),
                                           weight.data<float>(), rows, weight.numel(), eps, stream_));
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
  PP3D_CHECK_CUDA(kernels::rmsnorm_backward(dx.raw(), code(dx), dweight.data<float>(), dy.raw(), code(dy), x.raw(),
                                            code(x), weight.data<float>(), rstd.data<float>(), rows, n, partial,
                                            stream_));
}

void CudaBackend::swiglu_forward(const Tensor& gate, const Tensor& up, Tensor& out) {
  const auto dev_check = [this](const Tensor& t, DType dt, const char* what) { check(t, dt, what); };
  detail::check_swiglu(dev_check, "swiglu_forward", {&gate, &up, &out});
  PP3D_CHECK_CUDA(kernels::swiglu_forward(out.raw(), code(out), gate.raw(), code(gate), up.raw(), code(up),
                                          gate.numel(), stream_));
}

void CudaBackend::swiglu_backward(const Tensor& gate, const Tensor& up, const Tensor& dout, Tensor& dgate,
                                  Tensor& dup) {
  const auto dev_check = [this](const Tensor& t, DType dt, const char* what) { check(t, dt, what); };
  detail::check_swiglu(dev_check, "swiglu_backward", {&gate, &up, &dout, &dgate, &dup});
  PP3D_CHECK_CUDA(kernels::swiglu_backward(dgate.raw(), code(dgate), dup.raw(), code(dup), gate.raw(), code(gate),
                                           up.raw(), code(up), dout.raw(), code(dout), gate.numel(), stream_));
}

void CudaBackend::rope_forward(const Tensor& x, Tensor& y, int64_t pos0, float theta) {
  const auto dev_check = [this](const Tensor& t, DType dt, const char* what) { check(t, dt, what); };
  detail::check_rope(dev_check, x, y, pos0, theta, "rope_forward");
  PP3D_CHECK_CUDA(kernels::rope(y.raw(), code(y), x.raw(), code(x), x.size(0), x.size(1), x.size(2), x.size(3), pos0,
                                theta, 1.0f, stream_));
}

void CudaBackend::rope_backward(const Tensor& dy, Tensor& dx, int64_t pos0, float theta) {
  const auto dev_check = [this](const Tensor& t, DType dt, const char* what) { check(t, dt, what); };
  detail::check_rope(dev_check, dy, dx, pos0, theta, "rope_backward");
  PP3D_CHECK_CUDA(kernels::rope(dx.raw(), code(dx), dy.raw(), code(dy), dy.size(0), dy.size(1), dy.size(2),
                                dy.size(3), pos0, theta, -1.0f, stream_));
}

void CudaBackend::gqa_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out, Tensor& lse,
                                        float scale) {
  const auto dev_check = [this](const Tensor& t, DType dt, const char* what) { check(t, dt, what); };
  const detail::GqaDims g = detail::check_gqa(dev_check, q, k, v, out, lse, "gqa_attention_forward");
  if (q.numel() == 0) return;
  if (detail::CudnnSdpa* sdpa = is16(q) ? sdpa_for(q.dtype()) : nullptr) {
    sdpa->forward(sdpa_shape(g, q.dtype()), q.raw(), k.raw(), v.raw(), out.raw(), lse.data<float>(), scale);
    return;
  }
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
  if (detail::CudnnSdpa* sdpa = is16(q) ? sdpa_for(q.dtype()) : nullptr) {
    for (const Tensor* in : {&q, &k, &v, &dout})  // cuDNN reads the inputs while it writes the gradients
      for (const Tensor* grad : {&dq, &dk, &dv})
        PP3D_CHECK(grad->raw() != in->raw(), "gqa_attention_backward: dq, dk, dv must not share storage with q, k, "
                                             "v or dout (16-bit, cuDNN fused attention)");
    sdpa->backward(sdpa_shape(g, q.dtype()), q.raw(), k.raw(), v.raw(), out.raw(), dout.raw(), lse.data<float>(),
                   dq.raw(), dk.raw(), dv.raw(), scale);
    return;
  }
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
