// GELU, tanh approximation (GPT-2):
//   y  = 0.5 x (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3)
//   dy/dx = 0.5 (1 + tanh(u)) + 0.5 x (1 - tanh(u)^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)
// Layout: flat arrays. fp32: each thread handles 4 consecutive elements through
// one 128-bit load/store (float4) when the pointers are 16-byte aligned (scalar
// tail), and one element per thread otherwise. Typed (any array bf16/f16/f32, the
// 16-bit activations): 8 elements per thread (one 128-bit word of 16-bit values)
// when every pointer is 16-byte aligned, else one per thread; f32 math, the output
// rounded once. Backward overwrites dx (input gradient convention).
#include <cuda_runtime.h>

#include "common.cuh"
#include "launchers.h"

namespace pp3d::kernels {

namespace {
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCoeff = 0.044715f;

__device__ __forceinline__ float gelu_f(float x) {
  const float u = kSqrt2OverPi * (x + kCoeff * x * x * x);
  return 0.5f * x * (1.0f + tanhf(u));
}

__device__ __forceinline__ float gelu_grad_f(float x) {
  const float u = kSqrt2OverPi * (x + kCoeff * x * x * x);
  const float t = tanhf(u);
  return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * kSqrt2OverPi * (1.0f + 3.0f * kCoeff * x * x);
}

__global__ void gelu_forward_kernel(float* __restrict__ y, const float* __restrict__ x, int64_t n) {
  const int64_t i = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * 4;
  if (i + 3 < n) {
    const float4 v = *reinterpret_cast<const float4*>(x + i);
    *reinterpret_cast<float4*>(y + i) = make_float4(gelu_f(v.x), gelu_f(v.y), gelu_f(v.z), gelu_f(v.w));
  } else {
    for (int64_t j = i; j < n; ++j) y[j] = gelu_f(x[j]);
  }
}

__global__ void gelu_backward_kernel(float* __restrict__ dx, const float* __restrict__ x,
                                     const float* __restrict__ dy, int64_t n) {
  const int64_t i = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * 4;
  if (i + 3 < n) {
    const float4 v = *reinterpret_cast<const float4*>(x + i);
    const float4 g = *reinterpret_cast<const float4*>(dy + i);
    *reinterpret_cast<float4*>(dx + i) = make_float4(g.x * gelu_grad_f(v.x), g.y * gelu_grad_f(v.y),
                                                     g.z * gelu_grad_f(v.z), g.w * gelu_grad_f(v.w));
  } else {
    for (int64_t j = i; j < n; ++j) dx[j] = dy[j] * gelu_grad_f(x[j]);
  }
}

// Unaligned views (e.g. a slice at an odd offset): one element per thread.
__global__ void gelu_forward_scalar_kernel(float* y, const float* x, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) y[i] = gelu_f(x[i]);
}
__global__ void gelu_backward_scalar_kernel(float* dx, const float* x, const float* dy, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) dx[i] = dy[i] * gelu_grad_f(x[i]);
}

// Any of f32/bf16/f16 per array (16-bit activations): f32 math, output rounded once;
// 8 elements per thread through 128-bit accesses when aligned (map_typed, common.cuh).
struct GeluForwardOp {
  __device__ float operator()(float x, float) const { return gelu_f(x); }
};
struct GeluBackwardOp {  // (x, dy) -> dy * gelu'(x)
  __device__ float operator()(float x, float dy) const { return dy * gelu_grad_f(x); }
};
}  // namespace

int gelu_forward_typed(void* y, int y_dtype, const void* x, int x_dtype, int64_t n, void* stream) {
  return map_typed(GeluForwardOp{}, y, y_dtype, x, x_dtype, nullptr, 0, n, static_cast<cudaStream_t>(stream));
}

int gelu_backward_typed(void* dx, int dx_dtype, const void* x, int x_dtype, const void* dy, int dy_dtype, int64_t n,
                        void* stream) {
  return map_typed(GeluBackwardOp{}, dx, dx_dtype, x, x_dtype, dy, dy_dtype, n, static_cast<cudaStream_t>(stream));
}

int gelu_forward(float* y, const float* x, int64_t n, void* stream) {
  if (n == 0) return 0;
  const int threads = 256;
  if (!aligned16(x) || !aligned16(y)) {
    gelu_forward_scalar_kernel<<<static_cast<unsigned>((n + threads - 1) / threads), threads, 0,
                                 static_cast<cudaStream_t>(stream)>>>(y, x, n);
    return static_cast<int>(cudaGetLastError());
  }
  const int64_t blocks = ((n + 3) / 4 + threads - 1) / threads;
  gelu_forward_kernel<<<static_cast<unsigned>(blocks), threads, 0, static_cast<cudaStream_t>(stream)>>>(y, x, n);
  return static_cast<int>(cudaGetLastError());
}

int gelu_backward(float* dx, const float* x, const float* dy, int64_t n, void* stream) {
  if (n == 0) return 0;
  const int threads = 256;
  if (!aligned16(x) || !aligned16(dy) || !aligned16(dx)) {
    gelu_backward_scalar_kernel<<<static_cast<unsigned>((n + threads - 1) / threads), threads, 0,
                                  static_cast<cudaStream_t>(stream)>>>(dx, x, dy, n);
    return static_cast<int>(cudaGetLastError());
  }
  const int64_t blocks = ((n + 3) / 4 + threads - 1) / threads;
  gelu_backward_kernel<<<static_cast<unsigned>(blocks), threads, 0, static_cast<cudaStream_t>(stream)>>>(dx, x, dy,
                                                                                                          n);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace pp3d::kernels
