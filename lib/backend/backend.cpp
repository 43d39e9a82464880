#include "pp3d/backend/backend.h"

#include "pp3d/core/error.h"

namespace pp3d {

Tensor value_as_f32(Backend& be, const Tensor& value) {
  if (!value.defined() || value.dtype() == DType::F32) return value;
  Tensor out = Tensor::empty(value.shape(), DType::F32, be.device(), MemCategory::Workspace);
  be.cast(value, out);
  return out;
}

#ifdef PP3D_HAVE_CUDA
std::unique_ptr<Backend> make_cuda_backend(int device);  // lib/backend/cuda/cuda_backend.cpp
#endif

std::unique_ptr<Backend> make_backend(Device device) {
  if (device.is_cpu()) return make_cpu_backend();
#ifdef PP3D_HAVE_CUDA
  PP3D_CHECK(cuda_device_count() > device.index, "cuda:{} requested but {} GPU(s) are visible", device.index,
             cuda_device_count());
  return make_cuda_backend(device.index);
#else
  PP3D_FAIL("{} requested but this pp3d was built without CUDA (reconfigure with -DPP3D_WITH_CUDA=ON)",
            device.str());
#endif
}

}  // namespace pp3d
