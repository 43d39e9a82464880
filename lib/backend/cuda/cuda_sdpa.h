// cuDNN fused flash attention (SDPA forward + backward; causal; bf16 / f16; GQA)
// through the header-only cuDNN frontend graph API (internal header; CUDA builds).
//
// Built only when the frontend headers were found at configure time
// (PP3D_HAVE_CUDNN_FRONTEND; tools/setup_deps.sh unpacks the pinned
// nvidia-cudnn-frontend wheel into .deps/cudnn_frontend). Otherwise available()
// is false and every call throws. CudaBackend's attention runs it for 16-bit
// qkv (lib/backend/cuda/cuda_attention.cpp); tests/cuda/cuda_sdpa_test.cpp
// checks it against the CPU backend's f32 attention on the same 16-bit-rounded
// inputs, tests/cuda/cuda_act16_test.cpp the wired path against the CPU's
// 16-bit emulation.
//
// Layout: q [B, T, Hq, D] and k, v [B, T, Hkv, D] given by a base pointer and
// the element stride between consecutive tokens (3*H*D for GPT's fused
// [B, T, 3, H, D] qkv, Hq*D / Hkv*D for separate tensors); heads D elements
// apart, sequences T token strides apart. out / dout [B, T, Hq, D] contiguous;
// lse [B, Hq, T] f32 = log-sum-exp of each query's scaled, masked scores (the
// same quantity as Backend::attention_forward's lse, cuDNN's "Stats").
// Gradients dq, dk, dv use the layout and strides of q, k, v (overwritten).
// One graph is built per (shape, strides, dtype, scale, direction) and cached;
// the workspace grows on demand. Runs on the stream given at construction.
// Not thread-safe.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>

#include "pp3d/core/dtype.h"

namespace pp3d::detail {

struct SdpaShape {
  int64_t B = 0, T = 0, Hq = 0, Hkv = 0, D = 0;
  int64_t q_tok_stride = 0, kv_tok_stride = 0;  // elements between consecutive tokens
  DType dtype = DType::BF16;                    // of q, k, v, out, dout, dq, dk, dv
};

class CudnnSdpa {
 public:
  explicit CudnnSdpa(cudaStream_t stream, int device);
  ~CudnnSdpa();
  CudnnSdpa(const CudnnSdpa&) = delete;
  CudnnSdpa& operator=(const CudnnSdpa&) = delete;

  // True when this build has the cuDNN frontend (the calls below work on a GPU).
  static bool available();

  void forward(const SdpaShape& s, const void* q, const void* k, const void* v, void* out, float* lse,
               float scale);
  void backward(const SdpaShape& s, const void* q, const void* k, const void* v, const void* out,
                const void* dout, const float* lse, void* dq, void* dk, void* dv, float scale);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pp3d::detail
