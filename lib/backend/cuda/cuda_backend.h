// CudaBackend: pp3d::Backend on one GPU (internal header; CUDA builds only).
//
// Owns a non-blocking CUDA stream (every op is queued on it, in call order), a
// cuBLASLt handle with a workspace allocated once (MemCategory::Workspace), a
// small cache of cuBLASLt algorithm choices, and grow-only scratch buffers
// (MemCategory::Workspace) that kernels needing partial sums use; scratch is
// reused across ops, which is safe because all ops run in order on one stream.
// Argument checks mirror CpuBackend's (same shapes, dtypes, messages); each op
// checks its launcher's cudaGetLastError(). Results are ready after
// synchronize(); sum_squares synchronizes itself (it returns a host value).
// Determinism: kernels use fixed reduction orders and no atomics, so two runs
// are bitwise equal on the same GPU model; GEMMs are deterministic as long as
// cuBLASLt picks the same algorithm (same shapes, alignment, toolkit, GPU).
// The calling thread's current device must be the backend's device (the
// constructor selects it). One object must not be used concurrently.
// Implementation: cuda_backend.cpp (setup, elementwise, bias), cuda_gemm.cpp,
// cuda_gemm_epilogue.cpp (the fused 16-bit Linear ops),
// cuda_nn_ops.cpp (layernorm, gelu, attention, embedding, xent, adamw).
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "pp3d/backend/backend.h"

namespace pp3d {

namespace detail {
class CudnnSdpa;

// A cuBLASLt epilogue of one (unbatched) lt_matmul, in our row-major terms:
//  - bias (dtype bias_dtype, length n) non-null: bias[j] is added to every row of C in
//    the f32 epilogue, before C is rounded to its type (CUBLASLT_EPILOGUE_BIAS);
//  - gelu: C = gelu(sum) and aux[m, n] (row-major, dtype aux_dtype, row stride n) =
//    the f32 sum (+ bias) rounded (CUBLASLT_EPILOGUE_GELU_AUX[_BIAS]);
//  - dgelu: C = (the f32 product) * gelu'(aux[m, n]) (CUBLASLT_EPILOGUE_DGELU).
struct LtEpilogue {
  const void* bias = nullptr;
  DType bias_dtype = DType::F32;
  bool gelu = false, dgelu = false;
  const void* aux = nullptr;  // written (gelu) or read (dgelu)
  DType aux_dtype = DType::F32;
};
}  // namespace detail

struct CudaBackendOptions {
  bool allow_tf32 = false;                         // fp32 GEMMs on TF32 tensor cores (not bitwise fp32)
  std::size_t gemm_workspace_bytes = 32u << 20;   // cuBLASLt workspace (32 MiB suits Hopper)
};

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device, const CudaBackendOptions& opts = {});
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  Device device() const override { return Device::cuda(device_); }
  std::string name() const override { return "cuda:" + std::to_string(device_); }
  void synchronize() override;
  void* native_stream() const override { return stream_; }
  cudaStream_t stream() const { return stream_; }
  bool allow_tf32() const { return opts_.allow_tf32; }
  void set_allow_tf32(bool on) { opts_.allow_tf32 = on; }

  void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const Tensor& a,
            const Tensor& b, float beta, Tensor& c, int64_t batch, int64_t stride_a, int64_t stride_b,
            int64_t stride_c) override;
  // cuBLASLt with CUBLASLT_EPILOGUE_BIAS (one pass, y written in 16 bits), GELU_AUX(_BIAS)
  // and DGELU; the base class's unfused path when cuBLASLt offers no algorithm
  // (cuda_gemm_epilogue.cpp).
  void linear16_forward(DType input_dtype, int64_t rows, int64_t out, int64_t in, const Tensor& x, const Tensor& w,
                        const Tensor& bias, Tensor& y) override;
  void linear16_gelu_forward(DType input_dtype, int64_t rows, int64_t out, int64_t in, const Tensor& x,
                             const Tensor& w, const Tensor& bias, Tensor& aux, Tensor& y) override;
  void linear16_dgelu_backward(DType input_dtype, int64_t rows, int64_t out, int64_t in, const Tensor& dy,
                               const Tensor& w, const Tensor& aux, Tensor& dx) override;
  // Calls of those three that ran as one cuBLASLt matmul with its epilogue, and calls
  // that fell back to the separate kernels (sizes cuBLASLt rejects, e.g. an aux leading
  // dimension not divisible by 8; tests and benchmarks read them).
  struct EpilogueCounts {
    int64_t fused = 0, fallback = 0;
  };
  const EpilogueCounts& epilogue_counts() const { return epilogue_counts_; }

  void add(const Tensor& a, const Tensor& b, Tensor& out) override;
  void scale(Tensor& x, float alpha) override;
  void axpy(float alpha, const Tensor& x, Tensor& y) override;
  void fill(Tensor& x, float value) override;
  void copy(const Tensor& src, Tensor& dst) override;
  void cast(const Tensor& src, Tensor& dst) override;
  double sum_squares(const Tensor& x) override;

  void bias_add(Tensor& x, const Tensor& bias) override;
  void bias_grad(const Tensor& dy, Tensor& dbias) override;

  void layernorm_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& y, Tensor& mean,
                         Tensor& rstd, float eps) override;
  void layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& mean,
                          const Tensor& rstd, Tensor& dx, Tensor& dweight, Tensor& dbias) override;

  void gelu_forward(const Tensor& x, Tensor& y) override;
  void gelu_backward(const Tensor& x, const Tensor& dy, Tensor& dx) override;

  void attention_forward(const Tensor& qkv, Tensor& out, Tensor& lse, float scale) override;
  void attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& lse,
                          Tensor& dqkv, float scale) override;

  void embedding_forward(const Tensor& ids, const Tensor& table, Tensor& out, int64_t id_offset,
                         bool accumulate) override;
  void embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dtable, int64_t id_offset) override;

  void xent_stats(const Tensor& logits, const Tensor& targets, int64_t vocab_start, int64_t valid,
                  Tensor& local_max, Tensor& local_sumexp, Tensor& target_logit) override;
  void xent_backward(const Tensor& logits, const Tensor& targets, int64_t vocab_start, int64_t valid,
                     const Tensor& global_max, const Tensor& global_sumexp, float weight,
                     Tensor& dlogits) override;

  void adamw_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, Tensor& master,
                  const AdamWParams& p) override;

  // Llama-family ops (cuda_llama_ops.cpp, kernels/llama_ops.cu).
  void rmsnorm_forward(const Tensor& x, const Tensor& weight, Tensor& y, Tensor& rstd, float eps) override;
  void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& rstd, Tensor& dx,
                        Tensor& dweight) override;
  void swiglu_forward(const Tensor& gate, const Tensor& up, Tensor& out) override;
  void swiglu_backward(const Tensor& gate, const Tensor& up, const Tensor& dout, Tensor& dgate,
                       Tensor& dup) override;
  void rope_forward(const Tensor& x, Tensor& y, int64_t pos0, float theta) override;
  void rope_backward(const Tensor& dy, Tensor& dx, int64_t pos0, float theta) override;
  // "cudnn_sdpa" for 16-bit qkv when this build has the cuDNN frontend, else "flash_kernel"
  // (cuda_attention.cpp).
  std::string attention_impl(DType qkv_dtype) const override;
  void gqa_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out, Tensor& lse,
                             float scale) override;
  void gqa_attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                              const Tensor& out, const Tensor& lse, Tensor& dq, Tensor& dk, Tensor& dv,
                              float scale) override;

  // ---- internals shared by the implementation files ----
  // Throws unless `t` is defined and lives on this backend's GPU (optionally with dtype dt).
  void check_tensor(const Tensor& t, const char* what) const;
  void check(const Tensor& t, DType dt, const char* what) const;
  void check_float(const Tensor& t, const char* what) const;
  // Device scratch of at least `bytes` in slot `slot` (0..kScratchSlots-1), valid until the
  // next call with the same slot; contents undefined.
  static constexpr int kScratchSlots = 4;
  void* scratch(int slot, std::size_t bytes);

 private:
  // The f32-gradient bodies of the ops whose parameter gradient may be 16-bit (the public
  // op runs them on an f32 copy through detail::through_f32). bias_grad, layernorm_backward,
  // scale and axpy need none: their kernels accumulate into a 16-bit gradient directly.
  void embedding_backward_f32(const Tensor& ids, const Tensor& dout, Tensor& dtable, int64_t id_offset);
  void rmsnorm_backward_f32(const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& rstd,
                            Tensor& dx, Tensor& dweight);

  // One cuBLASLt matmul in column-major terms (see cuda_gemm.cpp); returns false when
  // cuBLASLt offers no algorithm for this configuration.
  bool lt_matmul(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const void* a, DType ta,
                 const void* b, DType tb, float beta, void* c, DType tc, int64_t batch, int64_t stride_a,
                 int64_t stride_b, int64_t stride_c, const detail::LtEpilogue& epi = {});

  // The fused 16-bit Linear ops' common path (cuda_gemm_epilogue.cpp): y[rows, n] =
  // epilogue(a[rows, k] . op(b)) with op(b) = b^T (trans_b, b [n, k]) or b ([k, n]), a and b
  // rounded to dt when f32, y (and `out16`'s other 16-bit tensors) already checked by the
  // caller. Counts the call fused when cuBLASLt ran it; false (nothing written) otherwise.
  bool fused_linear16(DType dt, bool trans_b, int64_t rows, int64_t n, int64_t k, const Tensor& a, const Tensor& b,
                      Tensor& y, const detail::LtEpilogue& epi, const char* what);

  // The cuDNN SDPA for 16-bit attention (created on first use; nullptr when this build
  // lacks the cuDNN frontend). Logs the attention choice once.
  detail::CudnnSdpa* sdpa_for(DType dt);

  int device_ = 0;
  CudaBackendOptions opts_;
  std::unique_ptr<detail::CudnnSdpa> sdpa_;
  bool attention_logged_ = false;
  cudaStream_t stream_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
  Tensor gemm_ws_;
  std::array<Tensor, kScratchSlots> scratch_;
  // (key fields...) -> algorithm; key built in cuda_gemm.cpp.
  std::map<std::string, cublasLtMatmulAlgo_t> algo_cache_;
  EpilogueCounts epilogue_counts_;
};

// Factory used by make_backend(Device::cuda(i)).
std::unique_ptr<Backend> make_cuda_backend(int device);

}  // namespace pp3d
