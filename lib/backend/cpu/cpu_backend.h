// CpuBackend: the reference implementation of pp3d::Backend (internal header).
//
// fp32 compute on host tensors. GEMMs go through Eigen (parallelised by
// Eigen's OpenMP path); the other ops are OpenMP loops over rows or fixed
// element chunks with contiguous, vectorisable inner loops. Every reduction
// has a fixed order, so results do not depend on the number of OpenMP threads
// (the GEMM itself excepted: Eigen's blocking may change with the thread
// count for large k). Ops run synchronously on the calling thread; one object
// must not be used concurrently. Implementation files: cpu_backend.cpp,
// cpu_gemm.cpp, cpu_layernorm_gelu.cpp, cpu_attention.cpp,
// cpu_embedding_xent.cpp, cpu_adamw.cpp, cpu_llama_ops.cpp (RMSNorm, SwiGLU, RoPE;
// grouped-query attention is in cpu_attention.cpp).
#pragma once

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>

#include "backend/f32_grad.h"
#include "pp3d/backend/backend.h"

namespace pp3d {

class CpuBackend final : public Backend {
 public:
  Device device() const override { return Device::cpu(); }
  std::string name() const override { return "cpu"; }

  void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const Tensor& a,
            const Tensor& b, float beta, Tensor& c, int64_t batch, int64_t stride_a, int64_t stride_b,
            int64_t stride_c) override;

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

  void rmsnorm_forward(const Tensor& x, const Tensor& weight, Tensor& y, Tensor& rstd, float eps) override;
  void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& rstd, Tensor& dx,
                        Tensor& dweight) override;
  void swiglu_forward(const Tensor& gate, const Tensor& up, Tensor& out) override;
  void swiglu_backward(const Tensor& gate, const Tensor& up, const Tensor& dout, Tensor& dgate,
                       Tensor& dup) override;
  void rope_forward(const Tensor& x, Tensor& y, int64_t pos0, float theta) override;
  void rope_backward(const Tensor& dy, Tensor& dx, int64_t pos0, float theta) override;
  void gqa_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out, Tensor& lse,
                             float scale) override;
  void gqa_attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                              const Tensor& out, const Tensor& lse, Tensor& dq, Tensor& dk, Tensor& dv,
                              float scale) override;

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

 private:
  // The f32-gradient kernels behind the ops whose parameter-gradient output
  // may be 16-bit (detail::with_f32_grad wraps them).
  void bias_grad_f32(const Tensor& dy, Tensor& dbias);
  void layernorm_backward_f32(const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& mean,
                              const Tensor& rstd, Tensor& dx, Tensor& dweight, Tensor& dbias);
  void embedding_backward_f32(const Tensor& ids, const Tensor& dout, Tensor& dtable, int64_t id_offset);
  void rope_apply(const Tensor& x, Tensor& y, int64_t pos0, float theta, float sin_sign, const char* what);
};

namespace detail {

// Elements per OpenMP work item for flat loops; below this many elements a
// loop runs on the calling thread only (thread start-up would dominate).
constexpr int64_t kCpuChunk = 1 << 14;

// Throws unless `t` is defined and lives on the host.
void cpu_check_tensor(const Tensor& t, const char* what);
// Throws unless `t` is a defined host tensor of dtype `dt`.
void cpu_check(const Tensor& t, DType dt, const char* what);
// Throws unless `t` is a defined host tensor of a floating dtype.
void cpu_check_float(const Tensor& t, const char* what);

// Element-range conversions between a float tensor's storage and f32.
// `offset` and `count` are in elements; the range must lie inside `t`.
void load_f32(const Tensor& t, int64_t offset, int64_t count, float* out);
void store_f32(const float* in, Tensor& t, int64_t offset, int64_t count);

// Parameter-gradient outputs may be 16-bit (GptOptions::grad_dtype): fn runs on
// an f32 copy that is rounded back once (detail::through_f32, shared with CUDA).
template <typename Fn>
void with_f32_grad(Backend& be, Tensor& g, const char* what, Fn&& fn) {
  cpu_check_float(g, what);
  through_f32(be, g, std::forward<Fn>(fn));
}

// 16-bit activation operands (GptOptions::compute_dtype = param): the CPU
// emulates a kernel with bf16/f16 inputs and outputs and f32 math inside by
// widening each 16-bit input (as_f32: t itself when f32, else an f32
// Workspace copy), running the f32 kernel, and rounding each output once
// (f32_out gives an f32 tensor to write, round_out stores it into `out`).
Tensor as_f32(Backend& be, const Tensor& t);
Tensor f32_out(const Tensor& out);
void round_out(Backend& be, const Tensor& out32, Tensor& out);
// True when any of the defined tensors is bf16 or f16.
bool any_16bit(std::initializer_list<const Tensor*> ts);

// Runs f(begin, end) over [0, n) split into blocks of `grain`, the blocks
// spread over OpenMP threads (one block runs inline). The split depends only
// on n and grain, never on the thread count.
template <typename F>
void parallel_for(int64_t n, int64_t grain, F&& f) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int64_t blocks = (n + grain - 1) / grain;
  if (blocks == 1) {
    f(int64_t{0}, n);
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t blk = 0; blk < blocks; ++blk) f(blk * grain, std::min(n, (blk + 1) * grain));
}

// Rows per parallel block so that one block covers about kCpuChunk elements.
inline int64_t row_grain(int64_t row_len) { return std::max<int64_t>(1, kCpuChunk / std::max<int64_t>(row_len, 1)); }

}  // namespace detail
}  // namespace pp3d
