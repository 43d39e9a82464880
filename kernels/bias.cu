// Bias add and bias gradient over x[rows, n].
//   bias_add:  x[r, j] += bias[j]
//   bias_grad: dbias[j] += sum_r dy[r, j]   (parameter gradient: ACCUMULATES)
// bias_grad is deterministic and atomic-free: pass 1 splits the rows into a fixed
// number of chunks (bias_grad_chunks(rows), a function of rows only); thread
// (chunk, j) sums dy[r, j] over its chunk's rows in order into partial[chunk, j]
// (adjacent threads read adjacent columns: coalesced). Pass 2: thread j adds the
// chunk partials in chunk order and does dbias[j] += total.
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

__global__ void bias_grad_partial_kernel(float* partial, const float* dy, int64_t rows, int64_t n,
                                         int64_t rows_per_chunk) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t chunk = blockIdx.y;
  if (j >= n) return;
  const int64_t r0 = chunk * rows_per_chunk;
  const int64_t r1 = r0 + rows_per_chunk < rows ? r0 + rows_per_chunk : rows;
  float s = 0.0f;
  for (int64_t r = r0; r < r1; ++r) s += dy[r * n + j];
  partial[chunk * n + j] = s;
}

__global__ void bias_grad_final_kernel(float* dbias, const float* partial, int64_t chunks, int64_t n) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= n) return;
  float s = 0.0f;
  for (int64_t c = 0; c < chunks; ++c) s += partial[c * n + j];
  dbias[j] += s;
}

int64_t rows_per_chunk(int64_t rows) {
  const int64_t r = (rows + 255) / 256;  // at most 256 chunks
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

int bias_grad_f32(float* dbias, const float* dy, int64_t rows, int64_t n, float* partial, void* stream) {
  if (rows == 0 || n == 0) return 0;
  auto s = static_cast<cudaStream_t>(stream);
  const int64_t chunks = bias_grad_chunks(rows);
  const dim3 grid(grid_for(n, 128), static_cast<unsigned>(chunks));
  bias_grad_partial_kernel<<<grid, 128, 0, s>>>(partial, dy, rows, n, rows_per_chunk(rows));
  const int e = static_cast<int>(cudaGetLastError());
  if (e != 0) return e;
  bias_grad_final_kernel<<<grid_for(n, 128), 128, 0, s>>>(dbias, partial, chunks, n);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace pp3d::kernels
