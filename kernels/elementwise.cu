// Elementwise ops and the sum-of-squares reduction.
//   add:   out[i] = a[i] + b[i]      (out may alias a or b: each element is read then written by one thread)
//   scale: x[i] *= alpha
//   axpy:  y[i] += alpha * x[i]
//   fill:  x[i] = bits (a 32-bit or 16-bit pattern computed on the host, so bf16/f16/i32 fills are exact)
//   cast:  dst[i] = convert(src[i]) between f32/bf16/f16, round to nearest even, bit-identical to
//          pp3d::f32_to_bf16 / f32_to_f16 (common.cuh ports them)
//   scale_typed / axpy_typed: scale / axpy with x, y in any of f32/bf16/f16 (16-bit gradients):
//          f32 math, y rounded once, no FMA contraction (the CPU backend's rounding, bitwise)
// f32 ops use one 128-bit load/store (float4) per thread when every pointer is 16-byte aligned,
// a scalar path otherwise; the typed ops (cast, scale_typed, axpy_typed) 8 elements per thread
// (a 128-bit word of 16-bit values) under the same condition (map_typed in common.cuh).
// sum_squares: sum over i of double(x[i])^2, deterministic: pass 1 gives each of a fixed number of
// blocks (a function of n only) a grid-stride range; each thread sums its elements in order in
// double, then a fixed-tree block reduction writes one partial per block; pass 2 (one block) adds the
// partials with the same fixed tree. The result is a device double (the backend copies it out).
#include "common.cuh"
#include "launchers.h"

namespace pp3d::kernels {

namespace {

constexpr int kThreads = 256;

__global__ void add_vec_kernel(float4* out, const float4* a, const float4* b, int64_t n4) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n4) {
    const float4 x = a[i], y = b[i];
    out[i] = make_float4(x.x + y.x, x.y + y.y, x.z + y.z, x.w + y.w);
  }
}
__global__ void add_kernel(float* out, const float* a, const float* b, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = a[i] + b[i];
}

__global__ void scale_vec_kernel(float4* x, float alpha, int64_t n4) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n4) {
    float4 v = x[i];
    v.x *= alpha; v.y *= alpha; v.z *= alpha; v.w *= alpha;
    x[i] = v;
  }
}
__global__ void scale_kernel(float* x, float alpha, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] *= alpha;
}

__global__ void axpy_vec_kernel(float4* y, float alpha, const float4* x, int64_t n4) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n4) {
    const float4 a = x[i];
    float4 v = y[i];
    v.x += alpha * a.x; v.y += alpha * a.y; v.z += alpha * a.z; v.w += alpha * a.w;
    y[i] = v;
  }
}
__global__ void axpy_kernel(float* y, float alpha, const float* x, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) y[i] += alpha * x[i];
}

template <typename T>
__global__ void fill_kernel(T* x, T bits, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] = bits;
}

// Typed maps (map_typed, common.cuh: 128-bit accesses when aligned). __fmul_rn /
// __fadd_rn keep nvcc from contracting into an FMA: the CPU backend rounds the
// product and the sum separately, so the 16-bit results match it bitwise.
struct CastOp {
  __device__ float operator()(float v, float) const { return v; }
};
struct ScaleOp {
  float alpha;
  __device__ float operator()(float x, float) const { return __fmul_rn(x, alpha); }
};
struct AxpyOp {  // (y, x) -> y + alpha x
  float alpha;
  __device__ float operator()(float y, float x) const { return __fadd_rn(y, __fmul_rn(alpha, x)); }
};

__global__ void sum_squares_partial_kernel(double* partials, const void* x, int dt, int64_t n) {
  __shared__ double sh[kWarp];
  double s = 0.0;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const double v = static_cast<double>(load_as_f32(x, i, dt));
    s += v * v;
  }
  s = block_sum(s, sh);
  if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

__global__ void sum_partials_kernel(double* out, const double* partials, int64_t count) {
  __shared__ double sh[kWarp];
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) s += partials[i];
  s = block_sum(s, sh);
  if (threadIdx.x == 0) *out = s;
}

cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }

}  // namespace

int add_f32(float* out, const float* a, const float* b, int64_t n, void* stream) {
  if (n == 0) return 0;
  if (n % 4 == 0 && aligned16(out) && aligned16(a) && aligned16(b)) {
    add_vec_kernel<<<grid_for(n / 4, kThreads), kThreads, 0, as_stream(stream)>>>(
        reinterpret_cast<float4*>(out), reinterpret_cast<const float4*>(a), reinterpret_cast<const float4*>(b), n / 4);
  } else {
    add_kernel<<<grid_for(n, kThreads), kThreads, 0, as_stream(stream)>>>(out, a, b, n);
  }
  return static_cast<int>(cudaGetLastError());
}

int scale_f32(float* x, float alpha, int64_t n, void* stream) {
  if (n == 0) return 0;
  if (n % 4 == 0 && aligned16(x)) {
    scale_vec_kernel<<<grid_for(n / 4, kThreads), kThreads, 0, as_stream(stream)>>>(reinterpret_cast<float4*>(x),
                                                                                     alpha, n / 4);
  } else {
    scale_kernel<<<grid_for(n, kThreads), kThreads, 0, as_stream(stream)>>>(x, alpha, n);
  }
  return static_cast<int>(cudaGetLastError());
}

int axpy_f32(float* y, float alpha, const float* x, int64_t n, void* stream) {
  if (n == 0) return 0;
  if (n % 4 == 0 && aligned16(x) && aligned16(y)) {
    axpy_vec_kernel<<<grid_for(n / 4, kThreads), kThreads, 0, as_stream(stream)>>>(
        reinterpret_cast<float4*>(y), alpha, reinterpret_cast<const float4*>(x), n / 4);
  } else {
    axpy_kernel<<<grid_for(n, kThreads), kThreads, 0, as_stream(stream)>>>(y, alpha, x, n);
  }
  return static_cast<int>(cudaGetLastError());
}

int fill_u32(void* x, uint32_t bits, int64_t n, void* stream) {
  if (n == 0) return 0;
  fill_kernel<uint32_t><<<grid_for(n, kThreads), kThreads, 0, as_stream(stream)>>>(static_cast<uint32_t*>(x), bits, n);
  return static_cast<int>(cudaGetLastError());
}

int fill_u16(void* x, uint16_t bits, int64_t n, void* stream) {
  if (n == 0) return 0;
  fill_kernel<uint16_t><<<grid_for(n, kThreads), kThreads, 0, as_stream(stream)>>>(static_cast<uint16_t*>(x), bits, n);
  return static_cast<int>(cudaGetLastError());
}

int cast(void* dst, int dst_dtype, const void* src, int src_dtype, int64_t n, void* stream) {
  return map_typed(CastOp{}, dst, dst_dtype, src, src_dtype, nullptr, 0, n, as_stream(stream));
}

int scale_typed(void* x, int dtype, float alpha, int64_t n, void* stream) {
  return map_typed(ScaleOp{alpha}, x, dtype, x, dtype, nullptr, 0, n, as_stream(stream));
}

int axpy_typed(void* y, int y_dtype, float alpha, const void* x, int x_dtype, int64_t n, void* stream) {
  return map_typed(AxpyOp{alpha}, y, y_dtype, y, y_dtype, x, x_dtype, n, as_stream(stream));
}

int64_t sum_squares_blocks(int64_t n) {
  const int64_t b = (n + kThreads * 8 - 1) / (kThreads * 8);  // >= 8 elements per thread
  return b < 1 ? 1 : (b > 1024 ? 1024 : b);
}

int sum_squares(double* out, double* partials, const void* x, int dtype, int64_t n, void* stream) {
  const int64_t blocks = sum_squares_blocks(n);
  sum_squares_partial_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, as_stream(stream)>>>(partials, x, dtype, n);
  const int e = static_cast<int>(cudaGetLastError());
  if (e != 0) return e;
  sum_partials_kernel<<<1, 1024, 0, as_stream(stream)>>>(out, partials, blocks);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace pp3d::kernels
