// Device-memory hooks and device discovery for CUDA builds.
#include <cuda_runtime.h>

#include "backend/cuda/cuda_check.h"
#include "pp3d/core/allocator.h"
#include "pp3d/core/error.h"

namespace pp3d {

bool cuda_compiled() { return true; }

int cuda_device_count() {
  int n = 0;
  // Without a driver this returns cudaErrorInsufficientDriver (35): no GPU.
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

namespace detail {

void* cuda_malloc(std::size_t bytes, int device) {
  PP3D_CHECK_CUDA(cudaSetDevice(device));
  void* p = nullptr;
  PP3D_CHECK_CUDA(cudaMalloc(&p, bytes));
  return p;
}

void cuda_free(void* ptr, int device) noexcept {
  cudaSetDevice(device);
  cudaFree(ptr);
}

void cuda_memcpy(void* dst, Device dst_dev, const void* src, Device src_dev, std::size_t bytes) {
  cudaMemcpyKind kind = cudaMemcpyDefault;  // unified addressing picks the direction
  (void)dst_dev;
  (void)src_dev;
  // Tensor copies are synchronous with respect to ALL streams: the backends queue work on
  // non-blocking streams, which the legacy default stream used by cudaMemcpy does not wait
  // for, and a pageable host->device cudaMemcpy may return before its DMA has landed.
  PP3D_CHECK_CUDA(cudaDeviceSynchronize());
  PP3D_CHECK_CUDA(cudaMemcpy(dst, src, bytes, kind));
  PP3D_CHECK_CUDA(cudaDeviceSynchronize());
}

void cuda_memset_zero(void* dst, int device, std::size_t bytes) {
  PP3D_CHECK_CUDA(cudaSetDevice(device));
  PP3D_CHECK_CUDA(cudaDeviceSynchronize());  // see cuda_memcpy: ordered against every stream
  PP3D_CHECK_CUDA(cudaMemset(dst, 0, bytes));
  PP3D_CHECK_CUDA(cudaDeviceSynchronize());
}

}  // namespace detail
}  // namespace pp3d
