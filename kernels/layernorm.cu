// LayerNorm over the last dim n of x[rows, n], forward and backward (fp32 math).
// x, y, dy, dx may each be f32, bf16 or f16 (16-bit activations, GPT's compute_dtype
// param): read through f32 (load_as_f32), outputs rounded once (store_from_f32); f32
// tensors give the same results as before. w, b, mean, rstd, dw, db are f32.
// Forward (one warp per row, two passes like the CPU reference):
//   mean = sum(x)/n, var = sum((x-mean)^2)/n, rstd = 1/sqrt(var+eps)
//   y = (x-mean)*rstd*w + b; saves mean[rows], rstd[rows].
// Backward, with g = dy*w and xhat = (x-mean)*rstd:
//   dx = rstd * (g - mean(g) - xhat * mean(g*xhat))   (input gradient: OVERWRITTEN)
//   dw += sum_rows dy*xhat, db += sum_rows dy          (parameter gradients: ACCUMULATE)
// Deterministic, atomic-free: pass 1 gives each thread block a fixed chunk of rows
// (layernorm_backward_chunks(rows), a function of rows only, same split as the CPU
// backend); per row the block reduces sum(g), sum(g*xhat) with a fixed tree, writes
// dx, and each thread adds dy*xhat, dy for the columns it owns (j = tid + k*blockDim)
// into the chunk's partial row partial[chunk, 0:n) / [n:2n) in global memory (one
// owner per element, rows in order). Pass 2: thread j adds the chunk partials in
// chunk order into dw[j], db[j].
#include "common.cuh"
#include "launchers.h"

namespace pp3d::kernels {

namespace {

constexpr int kRowsPerBlock = 8;  // forward: 8 warps, one row each

__global__ void layernorm_forward_kernel(void* __restrict__ y, int ydt, float* __restrict__ mean,
                                         float* __restrict__ rstd, const void* __restrict__ x, int xdt,
                                         const float* __restrict__ w, const float* __restrict__ b, int64_t rows,
                                         int64_t n, float eps) {
  const int lane = threadIdx.x % kWarp;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  if (row >= rows) return;  // whole warp exits together
  const int64_t r0 = row * n;
  float s = 0.0f;
  for (int64_t j = lane; j < n; j += kWarp) s += load_as_f32(x, r0 + j, xdt);
  const float mu = warp_sum(s) / static_cast<float>(n);
  float ss = 0.0f;
  for (int64_t j = lane; j < n; j += kWarp) {
    const float d = load_as_f32(x, r0 + j, xdt) - mu;
    ss += d * d;
  }
  const float rs = 1.0f / sqrtf(warp_sum(ss) / static_cast<float>(n) + eps);
  for (int64_t j = lane; j < n; j += kWarp)
    store_from_f32(y, r0 + j, ydt, (load_as_f32(x, r0 + j, xdt) - mu) * rs * w[j] + b[j]);
  if (lane == 0) {
    mean[row] = mu;
    rstd[row] = rs;
  }
}

int64_t rows_per_chunk(int64_t rows) {
  const int64_t r = (rows + 255) / 256;
  return r < 32 ? 32 : r;
}

// dx may alias dy: each element of dy is read before the same thread overwrites it.
__global__ void layernorm_backward_partial_kernel(void* dx, int dxdt, float* __restrict__ partial, const void* dy,
                                                  int dydt, const void* __restrict__ x, int xdt,
                                                  const float* __restrict__ w,
                                                  const float* __restrict__ mean, const float* __restrict__ rstd,
                                                  int64_t rows, int64_t n, int64_t chunk_rows) {
  __shared__ float sh[kWarp];
  float* pdw = partial + static_cast<int64_t>(blockIdx.x) * 2 * n;
  float* pdb = pdw + n;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    pdw[j] = 0.0f;
    pdb[j] = 0.0f;
  }
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * chunk_rows;
  const int64_t r1 = r0 + chunk_rows < rows ? r0 + chunk_rows : rows;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t rn = r * n;
    const float mu = mean[r], rs = rstd[r];
    float sg = 0.0f, sgx = 0.0f;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      const float g = load_as_f32(dy, rn + j, dydt) * w[j];
      sg += g;
      sgx += g * (load_as_f32(x, rn + j, xdt) - mu) * rs;
    }
    sg = block_sum(sg, sh);
    sgx = block_sum(sgx, sh);
    const float mg = sg / static_cast<float>(n), mgx = sgx / static_cast<float>(n);
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      const float xhat = (load_as_f32(x, rn + j, xdt) - mu) * rs;
      const float d = load_as_f32(dy, rn + j, dydt);
      pdw[j] += d * xhat;
      pdb[j] += d;
      store_from_f32(dx, rn + j, dxdt, rs * (d * w[j] - mg - xhat * mgx));
    }
  }
}

__global__ void layernorm_backward_final_kernel(float* dw, float* db, const float* partial, int64_t chunks, int64_t n) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= n) return;
  float sw = 0.0f, sb = 0.0f;
  for (int64_t c = 0; c < chunks; ++c) {
    sw += partial[c * 2 * n + j];
    sb += partial[c * 2 * n + n + j];
  }
  dw[j] += sw;
  db[j] += sb;
}

}  // namespace

int layernorm_forward(void* y, int y_dtype, float* mean, float* rstd, const void* x, int x_dtype, const float* w,
                      const float* b, int64_t rows, int64_t n, float eps, void* stream) {
  if (rows == 0 || n == 0) return 0;
  const unsigned blocks = static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock);
  layernorm_forward_kernel<<<blocks, kRowsPerBlock * kWarp, 0, static_cast<cudaStream_t>(stream)>>>(
      y, y_dtype, mean, rstd, x, x_dtype, w, b, rows, n, eps);
  return static_cast<int>(cudaGetLastError());
}

int64_t layernorm_backward_chunks(int64_t rows) {
  return rows == 0 ? 0 : (rows + rows_per_chunk(rows) - 1) / rows_per_chunk(rows);
}

int layernorm_backward(void* dx, int dx_dtype, float* dw, float* db, const void* dy, int dy_dtype, const void* x,
                       int x_dtype, const float* w, const float* mean, const float* rstd, int64_t rows, int64_t n,
                       float* partial, void* stream) {
  if (rows == 0 || n == 0) return 0;
  auto s = static_cast<cudaStream_t>(stream);
  const int64_t chunks = layernorm_backward_chunks(rows);
  layernorm_backward_partial_kernel<<<static_cast<unsigned>(chunks), 256, 0, s>>>(
      dx, dx_dtype, partial, dy, dy_dtype, x, x_dtype, w, mean, rstd, rows, n, rows_per_chunk(rows));
  const int e = static_cast<int>(cudaGetLastError());
  if (e != 0) return e;
  layernorm_backward_final_kernel<<<grid_for(n, 128), 128, 0, s>>>(dw, db, partial, chunks, n);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace pp3d::kernels
