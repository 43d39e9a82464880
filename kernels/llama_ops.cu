// Llama-family ops (fp32): RMSNorm, SwiGLU's gate, rotary position embedding
// and the repeat_kv packing behind grouped-query attention.
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

__global__ void rmsnorm_forward_kernel(float* __restrict__ y, float* __restrict__ rstd, const float* __restrict__ x,
                                       const float* __restrict__ w, int64_t rows, int64_t n, float eps) {
  const int lane = threadIdx.x % kWarp;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  if (row >= rows) return;
  const float* xr = x + row * n;
  float ss = 0.0f;
  for (int64_t j = lane; j < n; j += kWarp) ss += xr[j] * xr[j];
  const float rs = 1.0f / sqrtf(warp_sum(ss) / static_cast<float>(n) + eps);
  float* yr = y + row * n;
  for (int64_t j = lane; j < n; j += kWarp) yr[j] = xr[j] * rs * w[j];
  if (lane == 0) rstd[row] = rs;
}

int64_t rows_per_chunk(int64_t rows) {
  const int64_t r = (rows + 255) / 256;
  return r < 32 ? 32 : r;
}

// dx may alias dy: each element of dy is read before the same thread overwrites it.
__global__ void rmsnorm_backward_partial_kernel(float* dx, float* __restrict__ partial, const float* dy,
                                                const float* __restrict__ x, const float* __restrict__ w,
                                                const float* __restrict__ rstd, int64_t rows, int64_t n,
                                                int64_t chunk_rows) {
  __shared__ float sh[kWarp];
  float* pdw = partial + static_cast<int64_t>(blockIdx.x) * n;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) pdw[j] = 0.0f;
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * chunk_rows;
  const int64_t r1 = r0 + chunk_rows < rows ? r0 + chunk_rows : rows;
  for (int64_t r = r0; r < r1; ++r) {
    const float* dyr = dy + r * n;
    const float* xr = x + r * n;
    const float rs = rstd[r];
    float sgx = 0.0f;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) sgx += dyr[j] * w[j] * xr[j] * rs;
    const float mgx = block_sum(sgx, sh) / static_cast<float>(n);
    float* dxr = dx + r * n;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      const float xhat = xr[j] * rs;
      const float d = dyr[j];
      pdw[j] += d * xhat;
      dxr[j] = rs * (d * w[j] - xhat * mgx);
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

__global__ void swiglu_forward_kernel(float* out, const float* g, const float* u, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

// dgate / dup may alias gate / up: all inputs of element i are read first.
__global__ void swiglu_backward_kernel(float* dg, float* du, const float* g, const float* u, const float* dout,
                                       int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float gi = g[i], ui = u[i], d = dout[i];
  const float s = 1.0f / (1.0f + expf(-gi));
  dg[i] = d * ui * s * (1.0f + gi * (1.0f - s));
  du[i] = d * gi * s;
}

// One thread per pair (token r, head h, i < D/2).
__global__ void rope_kernel(float* y, const float* x, int64_t tokens, int T, int H, int D, int64_t pos0, double theta,
                            float sign) {
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
  const float* xr = x + rh * D;
  float* yr = y + rh * D;
  const float x0 = xr[i], x1 = xr[i + half];
  yr[i] = x0 * c - x1 * s;
  yr[i + half] = x1 * c + x0 * s;
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

int rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, int64_t rows, int64_t n, float eps,
                    void* stream) {
  if (rows == 0 || n == 0) return 0;
  const unsigned blocks = static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock);
  rmsnorm_forward_kernel<<<blocks, kRowsPerBlock * kWarp, 0, static_cast<cudaStream_t>(stream)>>>(y, rstd, x, w, rows,
                                                                                                  n, eps);
  return static_cast<int>(cudaGetLastError());
}

int64_t rmsnorm_backward_chunks(int64_t rows) {
  return rows == 0 ? 0 : (rows + rows_per_chunk(rows) - 1) / rows_per_chunk(rows);
}

int rmsnorm_backward(float* dx, float* dw, const float* dy, const float* x, const float* w, const float* rstd,
                     int64_t rows, int64_t n, float* partial, void* stream) {
  if (rows == 0 || n == 0) return 0;
  auto s = static_cast<cudaStream_t>(stream);
  const int64_t chunks = rmsnorm_backward_chunks(rows);
  rmsnorm_backward_partial_kernel<<<static_cast<unsigned>(chunks), 256, 0, s>>>(dx, partial, dy, x, w, rstd, rows, n,
                                                                                rows_per_chunk(rows));
  const int e = static_cast<int>(cudaGetLastError());
  if (e != 0) return e;
  rmsnorm_backward_final_kernel<<<grid_for(n, 128), 128, 0, s>>>(dw, partial, chunks, n);
  return static_cast<int>(cudaGetLastError());
}

int swiglu_forward(float* out, const float* gate, const float* up, int64_t n, void* stream) {
  if (n == 0) return 0;
  swiglu_forward_kernel<<<grid_for(n, 256), 256, 0, static_cast<cudaStream_t>(stream)>>>(out, gate, up, n);
  return static_cast<int>(cudaGetLastError());
}

int swiglu_backward(float* dgate, float* dup, const float* gate, const float* up, const float* dout, int64_t n,
                    void* stream) {
  if (n == 0) return 0;
  swiglu_backward_kernel<<<grid_for(n, 256), 256, 0, static_cast<cudaStream_t>(stream)>>>(dgate, dup, gate, up, dout,
                                                                                          n);
  return static_cast<int>(cudaGetLastError());
}

int rope(float* y, const float* x, int64_t B, int64_t T, int64_t H, int64_t D, int64_t pos0, float theta, float sign,
         void* stream) {
  const int64_t pairs = B * T * H * (D / 2);
  if (pairs == 0) return 0;
  rope_kernel<<<grid_for(pairs, 256), 256, 0, static_cast<cudaStream_t>(stream)>>>(
      y, x, B * T, static_cast<int>(T), static_cast<int>(H), static_cast<int>(D), pos0, static_cast<double>(theta),
      sign);
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
