// CudaBackend: GPT's fused causal self-attention, qkv [B, T, 3, H, D].
//
// f32 qkv: the hand-written flash kernels (kernels/attention.cu, CUDA cores).
// 16-bit qkv (bf16/f16: GPT with compute_dtype param), one of two paths,
// chosen once per backend and logged on first use (attention_impl() names it):
//  - "cudnn_sdpa": cuDNN's fused flash attention (detail::CudnnSdpa, graphs
//    cached per shape; tensor cores) reading q, k, v in place from the fused
//    qkv, writing O and dq, dk, dv in 16 bits and lse in f32. Needs a build
//    with the cuDNN frontend headers (tools/setup_deps.sh).
//  - "flash_kernel": otherwise, the hand-written kernels on f32 copies of the
//    16-bit operands, rounding the probabilities as a 16-bit flash kernel
//    does (p_dtype, see kernels/attention.cu), outputs rounded once.
// Both compute what CpuBackend's 16-bit attention emulates
// (lib/backend/cpu/cpu_attention.cpp); tests/cuda/cuda_gpt16_attention_test.cpp
// compares them.
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_sdpa.h"
#include "backend/op_checks.h"
#include "launchers.h"
#include "pp3d/core/error.h"
#include "pp3d/core/log.h"

namespace pp3d {

namespace {
struct AttnDims {
  int64_t B, T, H, D;
};
AttnDims attn_dims(const Tensor& qkv, const char* what) {
  PP3D_CHECK(qkv.dim() == 5 && qkv.size(2) == 3, "{}: qkv must be [B, T, 3, H, D], got {}", what,
             shape_str(qkv.shape()));
  const AttnDims a{qkv.size(0), qkv.size(1), qkv.size(3), qkv.size(4)};
  PP3D_CHECK(a.D <= 128, "{}: head size D = {} is larger than the 128 the CUDA attention kernels support", what,
             a.D);
  PP3D_CHECK(a.B < 65536 && a.H < 65536 && a.T < (int64_t{1} << 30), "{}: qkv {} is too large (B, H < 65536)", what,
             shape_str(qkv.shape()));
  return a;
}

bool is16(DType dt) { return dt == DType::BF16 || dt == DType::F16; }

// Element offset `elems` into a 16-bit tensor's storage.
const void* at16(const Tensor& t, int64_t elems) { return static_cast<const char*>(t.raw()) + elems * 2; }
void* at16(Tensor& t, int64_t elems) { return static_cast<char*>(t.raw()) + elems * 2; }

Tensor f32_copy(Backend& be, const Tensor& t) {
  Tensor out = Tensor::empty(t.shape(), DType::F32, t.device(), MemCategory::Workspace);
  be.cast(t, out);
  return out;
}
}  // namespace

std::string CudaBackend::attention_impl(DType qkv_dtype) const {
  if (!is16(qkv_dtype)) return "flash_kernel";
  return detail::CudnnSdpa::available() ? "cudnn_sdpa" : "flash_kernel";
}

detail::CudnnSdpa* CudaBackend::sdpa_for(DType dt) {
  if (!attention_logged_) {
    attention_logged_ = true;
    logger()->info("attention: {} for {} q/k/v{}", attention_impl(dt), dtype_name(dt),
              detail::CudnnSdpa::available() ? " (cuDNN fused flash attention)"
                                             : " (no cuDNN frontend in this build: hand-written kernels)");
  }
  if (!detail::CudnnSdpa::available()) return nullptr;
  if (!sdpa_) sdpa_ = std::make_unique<detail::CudnnSdpa>(stream_, device_);
  return sdpa_.get();
}

void CudaBackend::attention_forward(const Tensor& qkv, Tensor& out, Tensor& lse, float scale) {
  const auto dev_check = [this](const Tensor& t, DType dt, const char* what) { check(t, dt, what); };
  detail::check_act(dev_check, qkv, "attention_forward: qkv");
  check(out, qkv.dtype(), "attention_forward: out (the dtype of qkv)");
  check(lse, DType::F32, "attention_forward: lse");
  const AttnDims a = attn_dims(qkv, "attention_forward");
  check_shape(out, {a.B, a.T, a.H, a.D}, "attention_forward: out");
  check_shape(lse, {a.B, a.H, a.T}, "attention_forward: lse");
  if (qkv.numel() == 0) return;
  const DType dt = qkv.dtype();
  if (dt == DType::F32) {
    PP3D_CHECK_CUDA(kernels::attention_forward(out.data<float>(), lse.data<float>(), qkv.data<float>(),
                                               static_cast<int>(a.B), static_cast<int>(a.T), static_cast<int>(a.H),
                                               static_cast<int>(a.D), scale, stream_));
    return;
  }
  const int64_t hd = a.H * a.D;
  if (detail::CudnnSdpa* sdpa = sdpa_for(dt)) {
    const detail::SdpaShape s{a.B, a.T, a.H, a.H, a.D, 3 * hd, 3 * hd, dt};
    sdpa->forward(s, at16(qkv, 0), at16(qkv, hd), at16(qkv, 2 * hd), out.raw(), lse.data<float>(), scale);
    return;
  }
  const Tensor qkv32 = f32_copy(*this, qkv);
  Tensor out32 = Tensor::empty(out.shape(), DType::F32, out.device(), MemCategory::Workspace);
  PP3D_CHECK_CUDA(kernels::attention_forward(out32.data<float>(), lse.data<float>(), qkv32.data<float>(),
                                             static_cast<int>(a.B), static_cast<int>(a.T), static_cast<int>(a.H),
                                             static_cast<int>(a.D), scale, stream_, static_cast<int>(dt)));
  cast(out32, out);
}

void CudaBackend::attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& lse,
                                     Tensor& dqkv, float scale) {
  const auto dev_check = [this](const Tensor& t, DType dt, const char* what) { check(t, dt, what); };
  detail::check_act(dev_check, qkv, "attention_backward: qkv");
  const DType dt = qkv.dtype();
  check(dout, dt, "attention_backward: dout (the dtype of qkv)");
  check(out, dt, "attention_backward: out (the dtype of qkv)");
  check(lse, DType::F32, "attention_backward: lse");
  check(dqkv, dt, "attention_backward: dqkv (the dtype of qkv)");
  const AttnDims a = attn_dims(qkv, "attention_backward");
  check_shape(out, {a.B, a.T, a.H, a.D}, "attention_backward: out");
  check_shape(dout, {a.B, a.T, a.H, a.D}, "attention_backward: dout");
  check_shape(lse, {a.B, a.H, a.T}, "attention_backward: lse");
  check_shape(dqkv, qkv.shape(), "attention_backward: dqkv");
  if (qkv.numel() == 0) return;
  PP3D_CHECK(dqkv.raw() != qkv.raw(), "attention_backward: dqkv must not share storage with qkv");
  auto* di = static_cast<float*>(scratch(0, static_cast<std::size_t>(a.B * a.H * a.T) * sizeof(float)));
  if (dt == DType::F32) {
    PP3D_CHECK_CUDA(kernels::attention_backward(dqkv.data<float>(), di, dout.data<float>(), qkv.data<float>(),
                                                out.data<float>(), lse.data<float>(), static_cast<int>(a.B),
                                                static_cast<int>(a.T), static_cast<int>(a.H), static_cast<int>(a.D),
                                                scale, stream_));
    return;
  }
  const int64_t hd = a.H * a.D;
  if (detail::CudnnSdpa* sdpa = sdpa_for(dt)) {
    const detail::SdpaShape s{a.B, a.T, a.H, a.H, a.D, 3 * hd, 3 * hd, dt};
    sdpa->backward(s, at16(qkv, 0), at16(qkv, hd), at16(qkv, 2 * hd), out.raw(), dout.raw(), lse.data<float>(),
                   at16(dqkv, 0), at16(dqkv, hd), at16(dqkv, 2 * hd), scale);
    return;
  }
  const Tensor qkv32 = f32_copy(*this, qkv), out32 = f32_copy(*this, out), dout32 = f32_copy(*this, dout);
  Tensor dqkv32 = Tensor::empty(dqkv.shape(), DType::F32, dqkv.device(), MemCategory::Workspace);
  PP3D_CHECK_CUDA(kernels::attention_backward(dqkv32.data<float>(), di, dout32.data<float>(), qkv32.data<float>(),
                                              out32.data<float>(), lse.data<float>(), static_cast<int>(a.B),
                                              static_cast<int>(a.T), static_cast<int>(a.H), static_cast<int>(a.D),
                                              scale, stream_, static_cast<int>(dt)));
  cast(dqkv32, dqkv);
}

}  // namespace pp3d
