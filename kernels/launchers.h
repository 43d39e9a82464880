// Host-side launchers for the kernels in kernels/*.cu. Each launcher computes
// the grid, launches on `stream` (a cudaStream_t passed as void* so this header
// needs no CUDA include) and returns cudaGetLastError() as an int (0 = success;
// the calling backend method turns it into a pp3d::Error with PP3D_CHECK_CUDA,
// keeping fmt out of .cu files). Pointers are device pointers; nothing is
// synchronised.
#pragma once

#include <cstdint>

namespace pp3d::kernels {

// y = gelu_tanh(x), n elements, fp32.
int gelu_forward(float* y, const float* x, int64_t n, void* stream);
// dx = dy * gelu_tanh'(x), n elements, fp32.
int gelu_backward(float* dx, const float* x, const float* dy, int64_t n, void* stream);
// The same with each array in its own dtype (0 f32, 1 bf16, 2 f16): f32 math, outputs rounded once.
int gelu_forward_typed(void* y, int y_dtype, const void* x, int x_dtype, int64_t n, void* stream);
int gelu_backward_typed(void* dx, int dx_dtype, const void* x, int x_dtype, const void* dy, int dy_dtype, int64_t n,
                        void* stream);

// ---- elementwise.cu (f32 unless noted) ----------------------------------------
int add_f32(float* out, const float* a, const float* b, int64_t n, void* stream);  // out may alias a or b
int scale_f32(float* x, float alpha, int64_t n, void* stream);
int axpy_f32(float* y, float alpha, const float* x, int64_t n, void* stream);
// Writes a 32-bit (f32/i32) or 16-bit (bf16/f16) bit pattern into n elements.
int fill_u32(void* x, uint32_t bits, int64_t n, void* stream);
int fill_u16(void* x, uint16_t bits, int64_t n, void* stream);
// dtype codes: 0 f32, 1 bf16, 2 f16 (pp3d::DType order); round to nearest even.
int cast(void* dst, int dst_dtype, const void* src, int src_dtype, int64_t n, void* stream);
// x = round(x * alpha), y = round(y + alpha * x): each array in its own dtype, f32 math, no FMA.
int scale_typed(void* x, int dtype, float alpha, int64_t n, void* stream);
int axpy_typed(void* y, int y_dtype, float alpha, const void* x, int x_dtype, int64_t n, void* stream);
// Number of double partials sum_squares needs (a function of n only).
int64_t sum_squares_blocks(int64_t n);
// *out (device) = sum of x^2 in double; partials: sum_squares_blocks(n) doubles of scratch.
int sum_squares(double* out, double* partials, const void* x, int dtype, int64_t n, void* stream);

// ---- bias.cu ------------------------------------------------------------------
int bias_add_f32(float* x, const float* bias, int64_t rows, int64_t n, void* stream);
// Scratch rows for bias_grad: partial needs bias_grad_chunks(rows) * n floats.
int64_t bias_grad_chunks(int64_t rows);
// dbias (dbias_dtype) = round(dbias + column sums of dy (dy_dtype)); f32 sums, 0 f32 / 1 bf16 / 2 f16.
int bias_grad(void* dbias, int dbias_dtype, const void* dy, int dy_dtype, int64_t rows, int64_t n, float* partial,
              void* stream);
int bias_grad_f32(float* dbias, const float* dy, int64_t rows, int64_t n, float* partial, void* stream);
// dst[j] = round(dst[j] + sum_c partial[c * stride + j]) for j < n, c < chunks (fixed-order f32 sum):
// pass 2 of bias_grad and layernorm_backward.
int add_chunk_sums(void* dst, int dst_dtype, const float* partial, int64_t chunks, int64_t stride, int64_t n,
                   void* stream);

// ---- layernorm.cu -------------------------------------------------------------
// x, y (and dy, x, dx in backward) in their own dtype (0 f32, 1 bf16, 2 f16; f32 math,
// outputs rounded once); w, b, mean, rstd f32; the parameter gradients dw, db accumulate
// in their own dtype (dw = round(dw + f32 total)).
int layernorm_forward(void* y, int y_dtype, float* mean, float* rstd, const void* x, int x_dtype, const float* w,
                      const float* b, int64_t rows, int64_t n, float eps, void* stream);
// Scratch for backward: partial needs layernorm_backward_chunks(rows) * 2 * n floats.
int64_t layernorm_backward_chunks(int64_t rows);
int layernorm_backward(void* dx, int dx_dtype, void* dw, int dw_dtype, void* db, int db_dtype, const void* dy,
                       int dy_dtype, const void* x, int x_dtype, const float* w, const float* mean, const float* rstd,
                       int64_t rows, int64_t n, float* partial, void* stream);

// ---- attention.cu (causal, D <= 128) ---------------------------------------------
// p_dtype 1 (bf16) / 2 (f16): the probabilities (and dS) rounded as a 16-bit flash
// kernel does (see attention.cu); 0: f32 throughout.
int attention_forward(float* out, float* lse, const float* qkv, int B, int T, int H, int D, float scale,
                      void* stream, int p_dtype = 0);
// di: B*H*T floats of scratch.
int attention_backward(float* dqkv, float* di, const float* dout, const float* qkv, const float* out,
                       const float* lse, int B, int T, int H, int D, float scale, void* stream, int p_dtype = 0);

// ---- embedding.cu -------------------------------------------------------------
int embedding_forward(float* out, const int32_t* ids, const float* table, int64_t n, int64_t v, int64_t c,
                      int64_t id_offset, bool accumulate, void* stream);
int embedding_backward(float* dtable, const int32_t* ids, const float* dout, int64_t n, int64_t v, int64_t c,
                       int64_t id_offset, void* stream);

// ---- xent.cu ------------------------------------------------------------------
int xent_stats(float* local_max, float* local_sumexp, float* target_logit, const float* logits,
               const int32_t* targets, int64_t n, int64_t vl, int64_t vocab_start, int64_t valid, void* stream);
int xent_backward(float* dlogits, const float* logits, const int32_t* targets, const float* gmax, const float* gsum,
                  int64_t n, int64_t vl, int64_t vocab_start, int64_t valid, float weight, void* stream);

// ---- llama_ops.cu -----------------------------------------------------------------
// Activations in their own dtype (0 f32, 1 bf16, 2 f16; f32 math, outputs rounded
// once); w, rstd and dw f32.
int rmsnorm_forward(void* y, int y_dtype, float* rstd, const void* x, int x_dtype, const float* w, int64_t rows,
                    int64_t n, float eps, void* stream);
// Scratch for backward: partial needs rmsnorm_backward_chunks(rows) * n floats.
int64_t rmsnorm_backward_chunks(int64_t rows);
int rmsnorm_backward(void* dx, int dx_dtype, float* dw, const void* dy, int dy_dtype, const void* x, int x_dtype,
                     const float* w, const float* rstd, int64_t rows, int64_t n, float* partial, void* stream);
int swiglu_forward(void* out, int out_dtype, const void* gate, int gate_dtype, const void* up, int up_dtype,
                   int64_t n, void* stream);
int swiglu_backward(void* dgate, int dgate_dtype, void* dup, int dup_dtype, const void* gate, int gate_dtype,
                    const void* up, int up_dtype, const void* dout, int dout_dtype, int64_t n, void* stream);
// x, y [B, T, H, D]; sign +1 forward, -1 backward (y may alias x).
int rope(void* y, int y_dtype, const void* x, int x_dtype, int64_t B, int64_t T, int64_t H, int64_t D, int64_t pos0,
         float theta, float sign, void* stream);
// f32 only (the fallback GQA path: MHA kernels on a repeat_kv pack).
// qkv [tokens, 3, Hq, D] from q [tokens, Hq, D], k/v [tokens, Hkv, D] (repeat_kv).
int gqa_pack(float* qkv, const float* q, const float* k, const float* v, int64_t tokens, int Hq, int Hkv, int D,
             void* stream);
// dq = dqkv's q part; dk/dv = the sums over each kv head's query heads.
int gqa_unpack_grads(float* dq, float* dk, float* dv, const float* dqkv, int64_t tokens, int Hq, int Hkv, int D,
                     void* stream);
// ---- adamw.cu -----------------------------------------------------------------
struct AdamWArgs {
  float lr, b1, b2, eps, wd, gs, inv_bc1, inv_bc2;
};
// master may be nullptr (then param is f32 and updated in place).
int adamw(void* param, int param_dtype, float* master, const float* grad, float* m, float* v, int64_t n,
          AdamWArgs args, void* stream);

}  // namespace pp3d::kernels
