// LayerNorm over the last dim n of x[rows, n], forward and backward (fp32).
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

__global__ void layernorm_forward_kernel(float* __restrict__ y, float* __restrict__ mean, float* __restrict__ rstd,
                                         const float* __restrict__ x, const float* __restrict__ w,
                                         const float* __restrict__ b, int64_t rows, int64_t n, float eps) {
  const int lane = threadIdx.x % kWarp;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  if (row >= rows) return;  // whole warp exits together
  const float* xr = x + row * n;
  float s = 0.0f;
  for (int64_t j = lane; j < n; j += kWarp) s += xr[j];
  const float mu = warp_sum(s) / static_cast<float>(n);
  float ss = 0.0f;
  for (int64_t j = lane; j < n; j += kWarp) {
    const float d = xr[j] - mu;
    ss += d * d;
  }
  const float rs = 1.0f / sqrtf(warp_sum(ss) / static_cast<float>(n) + eps);
  float* yr = y + row * n;
  for (int64_t j = lane; j < n; j += kWarp) yr[j] = (xr[j] - mu) * rs * w[j] + b[j];
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
__global__ void layernorm_backward_partial_kernel(float* dx, float* __restrict__ partial, const float* dy,
                                                  const float* __restrict__ x, const float* __restrict__ w,
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
    const float* dyr = dy + r * n;
    const float* xr = x + r * n;
    const float mu = mean[r], rs = rstd[r];
    float sg = 0.0f, sgx = 0.0f;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      const float g = dyr[j] * w[j];
      sg += g;
      sgx += g * (xr[j] - mu) * rs;
    }
    sg = block_sum(sg, sh);
    sgx = block_sum(sgx, sh);
    const float mg = sg / static_cast<float>(n), mgx = sgx / static_cast<float>(n);
    float* dxr = dx + r * n;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      const float xhat = (xr[j] - mu) * rs;
      const float d = dyr[j];
      pdw[j] += d * xhat;
      pdb[j] += d;
      dxr[j] = rs * (d * w[j] - mg - xhat * mgx);
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

int layernorm_forward(float* y, float* mean, float* rstd, const float* x, const float* w, const float* b, int64_t rows,
                      int64_t n, float eps, void* stream) {
  if (rows == 0 || n == 0) return 0;
  const unsigned blocks = static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock);
  layernorm_forward_kernel<<<blocks, kRowsPerBlock * kWarp, 0, static_cast<cudaStream_t>(stream)>>>(y, mean, rstd, x, w,
                                                                                                    b, rows, n, eps);
  return static_cast<int>(cudaGetLastError());
}

int64_t layernorm_backward_chunks(int64_t rows) {
  return rows == 0 ? 0 : (rows + rows_per_chunk(rows) - 1) / rows_per_chunk(rows);
}

int layernorm_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                       const float* mean, const float* rstd, int64_t rows, int64_t n, float* partial, void* stream) {
  if (rows == 0 || n == 0) return 0;
  auto s = static_cast<cudaStream_t>(stream);
  const int64_t chunks = layernorm_backward_chunks(rows);
  layernorm_backward_partial_kernel<<<static_cast<unsigned>(chunks), 256, 0, s>>>(dx, partial, dy, x, w, mean, rstd,
                                                                                  rows, n, rows_per_chunk(rows));
  const int e = static_cast<int>(cudaGetLastError());
  if (e != 0) return e;
  layernorm_backward_final_kernel<<<grid_for(n, 128), 128, 0, s>>>(dw, db, partial, chunks, n);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace pp3d::kernels
