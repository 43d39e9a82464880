// Backend: every numeric op pp3d's model and optimizer use, behind one interface.
//
// CpuBackend (Eigen, always built) is the reference; CudaBackend implements the
// same contract on device tensors. Conventions shared by all ops:
//  - Tensors are contiguous and row-major; all tensors of one call live on the
//    backend's device. Shapes and dtypes are checked; a mismatch throws
//    pp3d::Error naming the argument.
//  - Compute is fp32. Unless an op says otherwise its floating tensors are f32;
//    ops documented as "any float" also accept bf16/f16 storage (read and
//    written through f32).
//  - Gradients of *parameters* (dweight, dbias, dtable) ACCUMULATE (+=), so
//    micro-batches add up without extra copies; gradients of *inputs* (dx, dq…)
//    are OVERWRITTEN.
//  - Ops run on the backend's current stream (CPU: synchronously, on the
//    calling thread). One Backend object is not safe for concurrent use.
#pragma once

#include <cstdint>
#include <memory>

#include "pp3d/core/device.h"
#include "pp3d/core/tensor.h"

namespace pp3d {

struct AdamWParams {
  float lr = 3e-4f;
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;  // decoupled: p -= lr * wd * p
  int64_t step = 1;           // 1-based step for bias correction
  float grad_scale = 1.0f;    // gradients are multiplied by this first (unscale / clip)
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual std::string name() const = 0;
  // Waits until all queued work on this backend is complete (no-op on CPU).
  virtual void synchronize() {}
  // The stream ops are queued on (a cudaStream_t for CUDA, nullptr on CPU), e.g. to
  // pass as the StreamHandle of a communicator's async call.
  virtual void* native_stream() const { return nullptr; }

  // ---- GEMM (any float for a, b; c any float) ----------------------------
  // Row-major C[m, n] = alpha * op(A)[m, k] * op(B)[k, n] + beta * C, where A is
  // stored [m, k] (or [k, m] if trans_a) and B [k, n] (or [n, k] if trans_b).
  // Strided batched: `batch` products, matrices `stride_*` elements apart
  // (0 stride = broadcast one matrix to every product).
  virtual void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const Tensor& a,
                    const Tensor& b, float beta, Tensor& c, int64_t batch = 1, int64_t stride_a = 0,
                    int64_t stride_b = 0, int64_t stride_c = 0) = 0;

  // ---- 16-bit GEMM (mixed-precision compute, tensor cores) ----------------------
  // gemm with both operands in `input_dtype` (bf16 or f16): an operand stored in
  // f32 is first rounded to input_dtype (nearest even; one cast on this backend's
  // device into a MemCategory::Workspace tensor), an operand already in
  // input_dtype is read as is (another 16-bit dtype is an error). Products
  // accumulate in f32; c is f32, or input_dtype (the f32 result
  // alpha*op(A)op(B) + beta*C rounded once). Arguments otherwise as in gemm.
  // The default runs gemm on the rounded operands: on CPU exactly the f32 GEMM
  // of the 16-bit values (the emulation of the GPU path), on CUDA cuBLASLt with
  // 16-bit A and B and CUBLAS_COMPUTE_32F (tensor cores).
  virtual void gemm16(DType input_dtype, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                      const Tensor& a, const Tensor& b, float beta, Tensor& c, int64_t batch = 1,
                      int64_t stride_a = 0, int64_t stride_b = 0, int64_t stride_c = 0);

  // ---- 16-bit Linear forward, bias fused (GPT's Linears with --compute-dtype param) ----
  // y[rows, out] = round(x[rows, in] . w[out, in]^T + bias[out]): x and w as in gemm16
  // (f32 rounded to input_dtype, or already input_dtype), product and bias add in f32,
  // y (input_dtype) rounded once. bias is f32 or input_dtype, or undefined (no bias).
  // The default runs gemm16 into an f32 Workspace tensor, bias_add and a cast: on CPU
  // the emulation, on CUDA the fallback of the cuBLASLt CUBLASLT_EPILOGUE_BIAS path
  // (the same f32 sum, rounded once by the epilogue; cuda_gemm.cpp).
  virtual void linear16_forward(DType input_dtype, int64_t rows, int64_t out, int64_t in, const Tensor& x,
                                const Tensor& w, const Tensor& bias, Tensor& y);

  // ---- 16-bit Linear + GELU, fused the way cuBLASLt's GELU epilogues compute it --------
  // (Transformer Engine / llm.c; GPT's c_fc -> GELU -> mlp_proj with --compute-dtype param.)
  // Forward: pre = x . w^T + bias in f32 (x, w, bias as in linear16_forward);
  // aux[rows, out] = round(pre) (what backward reads) and y[rows, out] = round(gelu(pre)):
  // GELU (tanh form, as gelu_forward) of the UNROUNDED f32 sum. aux and y in input_dtype.
  // The default runs gemm16 into an f32 Workspace tensor, bias_add, cast to aux and
  // gelu_forward(f32 -> 16-bit y): on CPU the emulation, on CUDA the fallback of the
  // cuBLASLt CUBLASLT_EPILOGUE_GELU_AUX_BIAS path (cuda_gemm_epilogue.cpp).
  virtual void linear16_gelu_forward(DType input_dtype, int64_t rows, int64_t out, int64_t in, const Tensor& x,
                                     const Tensor& w, const Tensor& bias, Tensor& aux, Tensor& y);
  // The input-gradient GEMM of a Linear whose input was GELU's output, fused with GELU's
  // backward: dx[rows, in] = round((dy[rows, out] . w[out, in])_f32 * gelu'(aux[rows, in])),
  // the f32 GEMM result not rounded before the multiply; dy and w as gemm16's operands,
  // aux (linear16_gelu_forward's) and dx in input_dtype; dx overwritten. The default runs
  // gemm16 into an f32 Workspace tensor and gelu_backward(aux, f32 dy -> 16-bit dx); CUDA
  // runs one cuBLASLt matmul with CUBLASLT_EPILOGUE_DGELU (the bias gradient of the layer
  // below stays a separate accumulating bias_grad: DGELU_BGRAD would overwrite it).
  virtual void linear16_dgelu_backward(DType input_dtype, int64_t rows, int64_t out, int64_t in, const Tensor& dy,
                                       const Tensor& w, const Tensor& aux, Tensor& dx);

  // ---- elementwise (f32) ------------------------------------------------------
  virtual void add(const Tensor& a, const Tensor& b, Tensor& out) = 0;  // out = a + b (out may alias)
  virtual void scale(Tensor& x, float alpha) = 0;                      // x *= alpha
  virtual void axpy(float alpha, const Tensor& x, Tensor& y) = 0;      // y += alpha * x
  virtual void fill(Tensor& x, float value) = 0;                       // any float or i32
  virtual void copy(const Tensor& src, Tensor& dst) = 0;               // same dtype and numel
  virtual void cast(const Tensor& src, Tensor& dst) = 0;               // between f32/bf16/f16
  // Sum of squares of all elements, accumulated in double (any float).
  virtual double sum_squares(const Tensor& x) = 0;

  // ---- bias -------------------------------------------------------------------
  // x[rows, n] += bias[n] broadcast over rows.
  virtual void bias_add(Tensor& x, const Tensor& bias) = 0;
  // dbias[n] += sum over rows of dy[rows, n] (dy any float, summed in f32).
  virtual void bias_grad(const Tensor& dy, Tensor& dbias) = 0;

  // ---- LayerNorm over the last dim n of x[rows, n] -------------------------------
  // y = (x - mean) * rstd * weight + bias; saves mean[rows], rstd[rows]. x, y (and
  // dy, dx in backward) any float (16-bit activations: f32 math, outputs rounded
  // once); weight, bias, mean, rstd f32.
  virtual void layernorm_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& y,
                                 Tensor& mean, Tensor& rstd, float eps) = 0;
  // dx = dL/dx (overwritten); dweight += ..., dbias += ...
  virtual void layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& mean,
                                  const Tensor& rstd, Tensor& dx, Tensor& dweight, Tensor& dbias) = 0;

  // ---- GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) ----
  // x, y, dy, dx any float (16-bit activations: f32 math, the output rounded once).
  virtual void gelu_forward(const Tensor& x, Tensor& y) = 0;
  virtual void gelu_backward(const Tensor& x, const Tensor& dy, Tensor& dx) = 0;  // dx overwritten

  // ---- causal self-attention, per (batch, head) ------------------------------------
  // qkv [B, T, 3, H, D] (q, k, v for H heads of size D, GPT-2 layout);
  // out [B, T, H, D]; lse [B, H, T] = log-sum-exp of each query's scaled,
  // causally masked scores, saved for backward. scale is usually 1/sqrt(D).
  virtual void attention_forward(const Tensor& qkv, Tensor& out, Tensor& lse, float scale) = 0;
  // dqkv [B, T, 3, H, D] overwritten; recomputes probabilities from qkv and lse.
  // 16-bit attention: qkv, out, dout, dqkv all bf16 (or all f16), lse f32: q, k, v
  // and O (dq, dk, dv) in 16 bits, S, the softmax statistics and the accumulations
  // in f32, and the probabilities P (and dS in backward) rounded to 16 bits where
  // a flash kernel feeds them to a tensor-core GEMM (cuDNN SDPA on CUDA; the CPU
  // emulates it: lib/backend/cpu/cpu_attention.cpp states the exact math).
  virtual void attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& lse,
                                  Tensor& dqkv, float scale) = 0;
  // The implementation attention_forward / _backward run for qkv of this dtype
  // (for logs and metrics): "cpu", "cpu_emulation_16bit", "flash_kernel", "cudnn_sdpa".
  virtual std::string attention_impl(DType qkv_dtype) const;

  // ---- Llama-family ops ---------------------------------------------------------------
  // Backends that lack one throw pp3d::Error naming it (the defaults below).
  //
  // RMSNorm over the last dim n of x[rows, n] (f32): rstd = 1/sqrt(mean(x^2) + eps),
  // y = x * rstd * weight; saves rstd[rows].
  virtual void rmsnorm_forward(const Tensor& x, const Tensor& weight, Tensor& y, Tensor& rstd, float eps);
  // dx = dL/dx (overwritten); dweight += sum over rows of dy * x * rstd (f32 or 16-bit).
  virtual void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& rstd,
                                Tensor& dx, Tensor& dweight);
  // SwiGLU's gate (f32, all the same numel): out = silu(gate) * up, silu(g) = g / (1 + exp(-g)).
  virtual void swiglu_forward(const Tensor& gate, const Tensor& up, Tensor& out);
  // dgate, dup overwritten (they may alias gate, up).
  virtual void swiglu_backward(const Tensor& gate, const Tensor& up, const Tensor& dout, Tensor& dgate,
                               Tensor& dup);
  // Rotary position embedding, Hugging Face Llama convention (rotate_half: the
  // two halves of each head, not interleaved pairs). x [B, T, H, D] (f32, D even);
  // token t has position pos0 + t; for i < D/2, a = pos * theta^(-2i/D):
  //   y[i] = x[i] cos a - x[i + D/2] sin a,   y[i + D/2] = x[i + D/2] cos a + x[i] sin a.
  // y may alias x.
  virtual void rope_forward(const Tensor& x, Tensor& y, int64_t pos0, float theta);
  // dx = R^T dy (the inverse rotation); dx may alias dy.
  virtual void rope_backward(const Tensor& dy, Tensor& dx, int64_t pos0, float theta);
  // Causal grouped-query attention (f32): q [B, T, Hq, D], k and v [B, T, Hkv, D]
  // with Hkv dividing Hq; query head h uses kv head h / (Hq / Hkv) (HF repeat_kv;
  // Hkv = 1 is multi-query). out [B, T, Hq, D]; lse [B, Hq, T] = log-sum-exp of
  // each query's scaled, masked scores (kept instead of the T x T probabilities).
  virtual void gqa_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out, Tensor& lse,
                                     float scale);
  // dq, dk, dv overwritten; recomputes the probabilities from q, k and lse.
  virtual void gqa_attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                                      const Tensor& out, const Tensor& lse, Tensor& dq, Tensor& dk, Tensor& dv,
                                      float scale);

  // ---- embedding ------------------------------------------------------------------
  // ids [N] (i32); table [V_local, C] holds rows for ids [id_offset, id_offset + V_local).
  // out[N, C] = (accumulate ? out : 0) + table[id - id_offset] for ids in range,
  // + 0 for ids outside it (vocab-parallel lookups).
  virtual void embedding_forward(const Tensor& ids, const Tensor& table, Tensor& out, int64_t id_offset,
                                 bool accumulate) = 0;
  // dtable[id - id_offset] += dout[i] for in-range ids, in index order (deterministic).
  virtual void embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dtable, int64_t id_offset) = 0;

  // ---- softmax cross-entropy over a vocabulary slice --------------------------------
  // logits [N, V_local] hold columns for global ids [vocab_start, vocab_start + V_local);
  // only the first `valid` columns are real (the rest is padding and ignored).
  // Per row: local_max = max over valid columns, local_sumexp = sum exp(l - local_max),
  // target_logit = logits[target - vocab_start] if the target is in this slice, else 0.
  // A full-vocabulary loss is log(sumexp) + max - target_logit.
  virtual void xent_stats(const Tensor& logits, const Tensor& targets, int64_t vocab_start, int64_t valid,
                          Tensor& local_max, Tensor& local_sumexp, Tensor& target_logit) = 0;
  // dlogits[i, j] = weight * (exp(l_ij - global_max_i) / global_sumexp_i - [j == target_i])
  // for valid columns, 0 for padding. global_sumexp is relative to global_max.
  virtual void xent_backward(const Tensor& logits, const Tensor& targets, int64_t vocab_start, int64_t valid,
                             const Tensor& global_max, const Tensor& global_sumexp, float weight,
                             Tensor& dlogits) = 0;

  // ---- optimizer --------------------------------------------------------------------
  // AdamW on one tensor. grad, m, v are f32. If `master` is defined (f32), the
  // update is applied to master and param (any float) receives a cast of it;
  // otherwise param must be f32 and is updated in place.
  virtual void adamw_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, Tensor& master,
                          const AdamWParams& p) = 0;
};

// `value` as f32 for the ops that read f32 only (LayerNorm, bias, embedding):
// `value` itself when it is f32, else a cast into a new MemCategory::Workspace
// tensor on be's device (16-bit parameters; small tensors, cast per use).
Tensor value_as_f32(Backend& be, const Tensor& value);

// The reference backend (always available).
std::unique_ptr<Backend> make_cpu_backend();
// A backend for `device` (CUDA requires a CUDA build and a visible GPU).
std::unique_ptr<Backend> make_backend(Device device);

}  // namespace pp3d
