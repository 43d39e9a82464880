#include "pp3d/backend/backend.h"

#include "pp3d/core/error.h"

namespace pp3d {

Tensor value_as_f32(Backend& be, const Tensor& value) {
  if (!value.defined() || value.dtype() == DType::F32) return value;
  Tensor out = Tensor::empty(value.shape(), DType::F32, be.device(), MemCategory::Workspace);
  be.cast(value, out);
  return out;
}

// Llama-family ops a backend has not implemented (yet) fail with a clear error.
#define PP3D_UNIMPLEMENTED(op) PP3D_FAIL("the {} backend does not implement {} yet", name(), op)
void Backend::rmsnorm_forward(const Tensor&, const Tensor&, Tensor&, Tensor&, float) {
  PP3D_UNIMPLEMENTED("rmsnorm_forward");
}
void Backend::rmsnorm_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, Tensor&, Tensor&) {
  PP3D_UNIMPLEMENTED("rmsnorm_backward");
}
void Backend::swiglu_forward(const Tensor&, const Tensor&, Tensor&) { PP3D_UNIMPLEMENTED("swiglu_forward"); }
void Backend::swiglu_backward(const Tensor&, const Tensor&, const Tensor&, Tensor&, Tensor&) {
  PP3D_UNIMPLEMENTED("swiglu_backward");
}
void Backend::rope_forward(const Tensor&, Tensor&, int64_t, float) { PP3D_UNIMPLEMENTED("rope_forward"); }
void Backend::rope_backward(const Tensor&, Tensor&, int64_t, float) { PP3D_UNIMPLEMENTED("rope_backward"); }
void Backend::gqa_attention_forward(const Tensor&, const Tensor&, const Tensor&, Tensor&, Tensor&, float) {
  PP3D_UNIMPLEMENTED("gqa_attention_forward");
}
void Backend::gqa_attention_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                     const Tensor&, Tensor&, Tensor&, Tensor&, float) {
  PP3D_UNIMPLEMENTED("gqa_attention_backward");
}
#undef PP3D_UNIMPLEMENTED

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
