// Device-memory hooks for builds without CUDA: every call explains how to get
// a CUDA build instead of failing obscurely.
#include "pp3d/core/allocator.h"
#include "pp3d/core/error.h"

namespace pp3d {

bool cuda_compiled() { return false; }
int cuda_device_count() { return 0; }

namespace detail {
void* cuda_malloc(std::size_t bytes, int device) {
  PP3D_FAIL("cannot allocate {} bytes on cuda:{}: this pp3d was built without CUDA "
            "(reconfigure with -DPP3D_WITH_CUDA=ON on a machine with nvcc)", bytes, device);
}
void cuda_free(void*, int) noexcept {}
void cuda_memcpy(void*, Device dst, const void*, Device src, std::size_t) {
  PP3D_FAIL("copy {} -> {} needs CUDA, but this pp3d was built without it", src.str(), dst.str());
}
void cuda_memset_zero(void*, int device, std::size_t) {
  PP3D_FAIL("memset on cuda:{} needs CUDA, but this pp3d was built without it", device);
}
}  // namespace detail

}  // namespace pp3d
