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

}  // namespace pp3d::kernels
