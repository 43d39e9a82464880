// Llama-family ops: RMSNorm, SwiGLU's gate, rotary position embedding and the
// repeat_kv packing behind grouped-query attention.
//
// Activations (x, y, dy, dx, gate, up, out, dout, dgate, dup) may each be f32,
// bf16 or f16 (the Llama's 16-bit compute; per-array dtype codes as in
// layernorm.cu, since the model mixes them: RMSNorm reads the f32 residual
// stream and writes a 16-bit y): read through f32 (load_as_f32), f32 math,
// each output rounded once (store_from_f32) -- the rounding points of the CPU
// backend's 16-bit emulation (lib/backend/cpu/cpu_llama_ops.cpp). weight,
// rstd and dweight are f32. With all-f32 arrays the math is the f32 kernels'.
//
// RMSNorm over the last dim n of x[rows, n] (one warp per row forward):
//   rstd = 1/sqrt(sum(x^2)/n + eps), y = x * rstd * w
// Backward with g = dy*w, xhat = x*rstd: dx = rstd * (g - xhat * mean(g*xhat))
//   (OVERWRITTEN); dw += sum_rows dy*xhat (ACCUMULATES), atomic-free and
//   deterministic like layernorm.cu: fixed row chunks (a function of rows only)
//   write partial rows, a second pass adds them in chunk order.
// SwiGLU: out = silu(g) u, dg = dout u s (1 + g (1 - s)), du = dout silu(g), s = sigmoid(g).
// RoPE (HF rotate_half): pairs (i, i + D/2) of every head rotate by
//   a = pos * theta^(-2i/D); the angle and its sin/cos in double, then rounded
//   (as the CPU backend). sign = -1 rotates back (backward). y may alias x.
// GQA packing: qkv[b, t, 0|1|2, h, :] = q[b, t, h], k[b, t, h/rep], v[b, t, h/rep]
//   (the MHA kernels of attention.cu then run on it); unpacking the gradients
//   sums the rep query heads of each kv head in head order (deterministic).
#include "common.cuh"
#include "launchers.h"

namespace pp3d::kernels {

namespace {

constexpr int kRowsPerBlock = 8;

__global__ void rmsnorm_forward_kernel(void* __restrict__ y, int ydt, float* __restrict__ rstd,
                                       const void* __restrict__ x, int xdt, const float* __restrict__ w, int64_t rows,
                                       int64_t n, float eps) {
  const int lane = threadIdx.x % kWarp;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  if (row >= rows) return;
  const int64_t r0 = row * n;
  float ss = 0.0f;
  for (int64_t j = lane; j < n; j += kWarp) {
    const float xj = load_as_f32(x, r0 + j, xdt);
    ss += xj * xj;
  }
  const float rs = 1.0f / sqrtf(warp_sum(ss) / static_cast<float>(n) + eps);
  for (int64_t j = lane; j < n; j += kWarp) store_from_f32(y, r0 + j, ydt, load_as_f32(x, r0 + j, xdt) * rs * w[j]);
  if (lane == 0) rstd[row] = rs;
}

int64_t rows_per_chunk(int64_t rows) {
  const int64_t r = (rows + 255) / 256;
  return r < 32 ? 32 : r;
}

// dx may alias dy: each element of dy is read before the same thread overwrites it.
__global__ void rmsnorm_backward_partial_kernel(void* dx, int dxdt, float* __restrict__ partial, const void* dy,
                                                int dydt, const void* __restrict__ x, int xdt,
                                                const float* __restrict__ w, const float* __restrict__ rstd,
                                                int64_t rows, int64_t n, int64_t chunk_rows) {
  __shared__ float sh[kWarp];
  float* pdw = partial + static_cast<int64_t>(blockIdx.x) * n;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) pdw[j] = 0.0f;
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * chunk_rows;
  const int64_t r1 = r0 + chunk_rows < rows ? r0 + chunk_rows : rows;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t rn = r * n;
    const float rs = rstd[r];
    float sgx = 0.0f;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x)
      sgx += load_as_f32(dy, rn + j, dydt) * w[j] * load_as_f32(x, rn + j, xdt) * rs;
    const float mgx = block_sum(sgx, sh) / static_cast<float>(n);
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      const float xhat = load_as_f32(x, rn + j, xdt) * rs;
      const float d = load_as_f32(dy, rn + j, dydt);
      pdw[j] += d * xhat;
      store_from_f32(dx, rn + j, dxdt, rs * (d * w[j] - xhat * mgx));
    }
  }
}

__global__ void rmsnorm_backward_final_kernel(float* dw, const float* partial, int64_t chunks, int64_t n) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= n) return;
  float s = 0.0f;
  for (int64_t c = 0; c < chunks; ++c) s += partial[c * n + j];
  dw[j] += s;
}

__global__ void swiglu_forward_kernel(void* out, int odt, const void* g, int gdt, const void* u, int udt,
                                      int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float gi = load_as_f32(g, i, gdt);
  store_from_f32(out, i, odt, gi / (1.0f + expf(-gi)) * load_as_f32(u, i, udt));
}

// dgate / dup may alias gate / up: all inputs of element i are read first.
__global__ void swiglu_backward_kernel(void* dg, int dgdt, void* du, int dudt, const void* g, int gdt, const void* u,
                                       int udt, const void* dout, int ddt, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float gi = load_as_f32(g, i, gdt), ui = load_as_f32(u, i, udt), d = load_as_f32(dout, i, ddt);
  const float s = 1.0f / (1.0f + expf(-gi));
  store_from_f32(dg, i, dgdt, d * ui * s * (1.0f + gi * (1.0f - s)));
  store_from_f32(du, i, dudt, d * gi * s);
}

// One thread per pair (token r, head h, i < D/2).
__global__ void rope_kernel(void* y, int ydt, const void* x, int xdt, int64_t tokens, int T, int H, int D,
                            int64_t pos0, double theta, float sign) {
  const int half = D / 2;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= tokens * H * half) return;
  const int i = static_cast<int>(idx % half);
  const int64_t rh = idx / half;  // token * H + head
  const int64_t t = (rh / H) % T;
  const double a = static_cast<double>(pos0 + t) * pow(theta, -2.0 * i / D);
  double sd, cd;
  sincos(a, &sd, &cd);
  const float c = static_cast<float>(cd), s = sign * static_cast<float>(sd);
  const int64_t e0 = rh * D + i, e1 = e0 + half;
  const float x0 = load_as_f32(x, e0, xdt), x1 = load_as_f32(x, e1, xdt);
  store_from_f32(y, e0, ydt, x0 * c - x1 * s);
  store_from_f32(y, e1, ydt, x1 * c + x0 * s);
}

// One thread per element of qkv [B*T, 3, Hq, D].
__global__ void gqa_pack_kernel(float* qkv, const float* q, const float* k, const float* v, int64_t tokens, int Hq,
                                int Hkv, int D) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= tokens * 3 * Hq * D) return;
  const int d = static_cast<int>(idx % D);
  const int h = static_cast<int>((idx / D) % Hq);
  const int part = static_cast<int>((idx / (static_cast<int64_t>(D) * Hq)) % 3);
  const int64_t t = idx / (3LL * Hq * D);
  const int hk = h / (Hq / Hkv);
  if (part == 0) qkv[idx] = q[(t * Hq + h) * D + d];
  else qkv[idx] = (part == 1 ? k : v)[(t * Hkv + hk) * D + d];
}

// One thread per element of dq, then per element of dk and dv (summing the group in order).
__global__ void gqa_unpack_kernel(float* dq, float* dk, float* dv, const float* dqkv, int64_t tokens, int Hq, int Hkv,
                                  int D) {
  const int64_t nq = tokens * Hq * D, nkv = tokens * Hkv * D;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int rep = Hq / Hkv;
  if (idx < nq) {
    const int64_t t = idx / (static_cast<int64_t>(Hq) * D), hd = idx % (static_cast<int64_t>(Hq) * D);
    dq[idx] = dqkv[t * 3 * Hq * D + hd];
  } else if (idx < nq + 2 * nkv) {
    const int64_t j = (idx - nq) % nkv;
    const int part = idx - nq < nkv ? 1 : 2;
    const int d = static_cast<int>(j % D);
    const int hk = static_cast<int>((j / D) % Hkv);
    const int64_t t = j / (static_cast<int64_t>(Hkv) * D);
    const float* src = dqkv + (t * 3 + part) * Hq * D + static_cast<int64_t>(hk) * rep * D + d;
    float s = 0.0f;
    for (int r = 0; r < rep; ++r) s += src[static_cast<int64_t>(r) * D];
    (part == 1 ? dk : dv)[j] = s;
  }
}

}  // namespace

int rmsnorm_forward(void* y, int y_dtype, float* rstd, const void* x, int x_dtype, const float* w, int64_t rows,
                    int64_t n, float eps, void* stream) {
  if (rows == 0 || n == 0) return 0;
  const unsigned blocks = static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock);
  rmsnorm_forward_kernel<<<blocks, kRowsPerBlock * kWarp, 0, static_cast<cudaStream_t>(stream)>>>(
      y, y_dtype, rstd, x, x_dtype, w, rows, n, eps);
  return static_cast<int>(cudaGetLastError());
}

int64_t rmsnorm_backward_chunks(int64_t rows) {
  return rows == 0 ? 0 : (rows + rows_per_chunk(rows) - 1) / rows_per_chunk(rows);
}

int rmsnorm_backward(void* dx, int dx_dtype, float* dw, const void* dy, int dy_dtype, const void* x, int x_dtype,
                     const float* w, const float* rstd, int64_t rows, int64_t n, float* partial, void* stream) {
  if (rows == 0 || n == 0) return 0;
  auto s = static_cast<cudaStream_t>(stream);
  const int64_t chunks = rmsnorm_backward_chunks(rows);
  rmsnorm_backward_partial_kernel<<<static_cast<unsigned>(chunks), 256, 0, s>>>(
      dx, dx_dtype, partial, dy, dy_dtype, x, x_dtype, w, rstd, rows, n, rows_per_chunk(rows));
  const int e = static_cast<int>(cudaGetLastError());
  if (e != 0) return e;
  rmsnorm_backward_final_kernel<<<grid_for(n, 128), 128, 0, s>>>(dw, partial, chunks, n);
  return static_cast<int>(cudaGetLastError());
}

int swiglu_forward(void* out, int out_dtype, const void* gate, int gate_dtype, const void* up, int up_dtype,
                   int64_t n, void* stream) {
  if (n == 0) return 0;
  swiglu_forward_kernel<<<grid_for(n, 256), 256, 0, static_cast<cudaStream_t>(stream)>>>(out, out_dtype, gate,
                                                                                         gate_dtype, up, up_dtype, n);
  return static_cast<int>(cudaGetLastError());
}

int swiglu_backward(void* dgate, int dgate_dtype, void* dup, int dup_dtype, const void* gate, int gate_dtype,
                    const void* up, int up_dtype, const void* dout, int dout_dtype, int64_t n, void* stream) {
  if (n == 0) return 0;
  swiglu_backward_kernel<<<grid_for(n, 256), 256, 0, static_cast<cudaStream_t>(stream)>>>(
      dgate, dgate_dtype, dup, dup_dtype, gate, gate_dtype, up, up_dtype, dout, dout_dtype, n);
  return static_cast<int>(cudaGetLastError());
}

int rope(void* y, int y_dtype, const void* x, int x_dtype, int64_t B, int64_t T, int64_t H, int64_t D, int64_t pos0,
         float theta, float sign, void* stream) {
  const int64_t pairs = B * T * H * (D / 2);
  if (pairs == 0) return 0;
  rope_kernel<<<grid_for(pairs, 256), 256, 0, static_cast<cudaStream_t>(stream)>>>(
      y, y_dtype, x, x_dtype, B * T, static_cast<int>(T), static_cast<int>(H), static_cast<int>(D), pos0,
      static_cast<double>(theta), sign);
  return static_cast<int>(cudaGetLastError());
}

int gqa_pack(float* qkv, const float* q, const float* k, const float* v, int64_t tokens, int Hq, int Hkv, int D,
             void* stream) {
  const int64_t n = tokens * 3 * Hq * D;
  if (n == 0) return 0;
  gqa_pack_kernel<<<grid_for(n, 256), 256, 0, static_cast<cudaStream_t>(stream)>>>(qkv, q, k, v, tokens, Hq, Hkv, D);
  return static_cast<int>(cudaGetLastError());
}

int gqa_unpack_grads(float* dq, float* dk, float* dv, const float* dqkv, int64_t tokens, int Hq, int Hkv, int D,
                     void* stream) {
  const int64_t n = tokens * (Hq + 2LL * Hkv) * D;
  if (n == 0) return 0;
  gqa_unpack_kernel<<<grid_for(n, 256), 256, 0, static_cast<cudaStream_t>(stream)>>>(dq, dk, dv, dqkv, tokens, Hq,
                                                                                     Hkv, D);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace pp3d::kernels
