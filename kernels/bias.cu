// Bias add and bias gradient over x[rows, n].
//   bias_add:  x[r, j] += bias[j]                       (f32)
//   bias_grad: dbias[j] = round(dbias[j] + sum_r dy[r, j])   (parameter gradient: ACCUMULATES)
// bias_grad reads dy in its dtype (f32, or the 16-bit activation gradient) and
// accumulates into a dbias of any float dtype (a 16-bit dbias: --grad-dtype param):
// f32 sums in registers, one rounding of dbias + total, no f32 copies.
// Deterministic and atomic-free: pass 1 splits the rows into a fixed number of chunks
// (bias_grad_chunks(rows), a function of rows only, at most 512); thread (chunk, t)
// sums its columns over the chunk's rows in order into partial[chunk, j] (adjacent
// threads read adjacent columns: coalesced; 8 columns per thread through one 128-bit
// load of 16-bit dy when n % 8 == 0 and dy is 16-byte aligned). Pass 2
// (add_chunk_sums, also LayerNorm's): per column a fixed tree over the chunk partials.
#include "common.cuh"
#include "launchers.h"

namespace pp3d::kernels {

namespace {

__global__ void bias_add_kernel(float* x, const float* bias, int64_t rows, int64_t n) {
  const int64_t total = rows * n;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride)
    x[i] += bias[i % n];
}

__global__ void bias_add_vec_kernel(float4* x, const float4* bias, int64_t rows, int64_t n4) {
  const int64_t total = rows * n4;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const float4 b = bias[i % n4];
    float4 v = x[i];
    v.x += b.x;
    v.y += b.y;
    v.z += b.z;
    v.w += b.w;
    x[i] = v;
  }
}

// vec: thread (chunk, t) owns columns [8t, 8t + 8) (one 128-bit load of 16-bit dy per row),
// else column t; either way each column is summed over the chunk's rows in order.
__global__ void bias_grad_partial_kernel(float* partial, const void* dy, int dt, int64_t rows, int64_t n,
                                         int64_t rows_per_chunk, bool vec) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t chunk = blockIdx.y;
  const int64_t r0 = chunk * rows_per_chunk;
  const int64_t r1 = r0 + rows_per_chunk < rows ? r0 + rows_per_chunk : rows;
  if (vec) {
    const int64_t j = t * kVec;
    if (j >= n) return;
    float s[kVec] = {};
#pragma unroll 4
    for (int64_t r = r0; r < r1; ++r) {
      float v[kVec];
      load_vec_as_f32(dy, r * n + j, dt, v);
#pragma unroll
      for (int k = 0; k < kVec; ++k) s[k] += v[k];
    }
    store_vec_from_f32(partial, chunk * n + j, kF32, s);
    return;
  }
  if (t >= n) return;
  float s = 0.0f;
  for (int64_t r = r0; r < r1; ++r) s += load_as_f32(dy, r * n + t, dt);
  partial[chunk * n + t] = s;
}

// Block (32, 32) per 32 columns: thread (x, y) adds chunks y, y + 32, ... in order, then
// thread (x, 0) adds the 32 sums in y order and rounds dst[j] + total once.
__global__ void __launch_bounds__(kWarp * kWarp)
    add_chunk_sums_kernel(void* dst, int dt, const float* partial, int64_t chunks, int64_t stride, int64_t n) {
  __shared__ float sh[kWarp][kWarp + 1];
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kWarp + threadIdx.x;
  float s = 0.0f;
  if (j < n)
    for (int64_t c = threadIdx.y; c < chunks; c += kWarp) s += partial[c * stride + j];
  sh[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y != 0 || j >= n) return;
  float total = 0.0f;
  for (int k = 0; k < kWarp; ++k) total += sh[k][threadIdx.x];
  store_from_f32(dst, j, dt, load_as_f32(dst, j, dt) + total);
}

int64_t rows_per_chunk(int64_t rows) {
  const int64_t r = (rows + 511) / 512;  // at most 512 chunks
  return r < 32 ? 32 : r;
}

}  // namespace

int bias_add_f32(float* x, const float* bias, int64_t rows, int64_t n, void* stream) {
  if (rows == 0 || n == 0) return 0;
  auto s = static_cast<cudaStream_t>(stream);
  if (n % 4 == 0 && aligned16(x) && aligned16(bias)) {
    bias_add_vec_kernel<<<grid_for(rows * n / 4, 256, 65536), 256, 0, s>>>(
        reinterpret_cast<float4*>(x), reinterpret_cast<const float4*>(bias), rows, n / 4);
  } else {
    bias_add_kernel<<<grid_for(rows * n, 256, 65536), 256, 0, s>>>(x, bias, rows, n);
  }
  return static_cast<int>(cudaGetLastError());
}

int64_t bias_grad_chunks(int64_t rows) {
  return rows == 0 ? 0 : (rows + rows_per_chunk(rows) - 1) / rows_per_chunk(rows);
}

int add_chunk_sums(void* dst, int dst_dtype, const float* partial, int64_t chunks, int64_t stride, int64_t n,
                   void* stream) {
  if (n == 0) return 0;
  add_chunk_sums_kernel<<<grid_for(n, kWarp), dim3(kWarp, kWarp), 0, static_cast<cudaStream_t>(stream)>>>(
      dst, dst_dtype, partial, chunks, stride, n);
  return static_cast<int>(cudaGetLastError());
}

int bias_grad(void* dbias, int dbias_dtype, const void* dy, int dy_dtype, int64_t rows, int64_t n, float* partial,
              void* stream) {
  if (rows == 0 || n == 0) return 0;
  auto s = static_cast<cudaStream_t>(stream);
  const int64_t chunks = bias_grad_chunks(rows);
  const bool vec = n % kVec == 0 && aligned16(dy) && aligned16(partial);
  // vec: one warp per 256 columns (n = 768: 3 warps per chunk, 1536 for 512 chunks).
  const int threads = vec ? kWarp : 128;
  const dim3 grid(grid_for(vec ? n / kVec : n, threads), static_cast<unsigned>(chunks));
  bias_grad_partial_kernel<<<grid, threads, 0, s>>>(partial, dy, dy_dtype, rows, n, rows_per_chunk(rows), vec);
  const int e = static_cast<int>(cudaGetLastError());
  if (e != 0) return e;
  return add_chunk_sums(dbias, dbias_dtype, partial, chunks, n, n, stream);
}

int bias_grad_f32(float* dbias, const float* dy, int64_t rows, int64_t n, float* partial, void* stream) {
  return bias_grad(dbias, kF32, dy, kF32, rows, n, partial, stream);
}

}  // namespace pp3d::kernels
