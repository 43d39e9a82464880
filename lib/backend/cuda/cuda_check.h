// PP3D_CHECK_CUDA / _CUBLAS / _NCCL: the generic check macro specialised per
// library status type. Internal header (lib/ only): it includes CUDA headers.
#pragma once

#include <cuda_runtime.h>

#include "pp3d/core/error.h"

#define PP3D_CHECK_CUDA(expr)                                                                      \
  do {                                                                                             \
    const cudaError_t _e = static_cast<cudaError_t>(expr);                                                                 \
    PP3D_CHECK(_e == cudaSuccess, "{} returned {} ({})", #expr, cudaGetErrorName(_e),              \
               cudaGetErrorString(_e));                                                            \
  } while (0)

// After every kernel launch: catches bad launch configurations immediately.
#define PP3D_CHECK_LAUNCH() PP3D_CHECK_CUDA(cudaGetLastError())

#define PP3D_CHECK_CUBLAS(expr)                                                                    \
  do {                                                                                             \
    const int _s = static_cast<int>(expr);                                                         \
    PP3D_CHECK(_s == 0, "{} returned cuBLAS status {}", #expr, _s);                                \
  } while (0)

#define PP3D_CHECK_NCCL(expr)                                                                      \
  do {                                                                                             \
    const int _s = static_cast<int>(expr);                                                         \
    PP3D_CHECK(_s == 0, "{} returned NCCL status {}", #expr, _s);                                  \
  } while (0)
