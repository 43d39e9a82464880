#include "pp3d/backend/backend.h"

#include "pp3d/core/error.h"

namespace pp3d {

Tensor value_as_f32(Backend& be, const Tensor& value) {
  if (!value.defined() || value.dtype() == DType::F32) return value;
  Tensor out = Tensor::empty(value.shape(), DType::F32, be.device(), MemCategory::Workspace);
  be.cast(value, out);
  return out;
}

std::string Backend::attention_impl(DType qkv_dtype) const {
  return qkv_dtype == DType::BF16 || qkv_dtype == DType::F16 ? "cpu_emulation_16bit" : "cpu";
}

namespace {

// `t` rounded to the 16-bit `dt` (a Workspace cast on be's device), or `t` itself when already dt.
Tensor as_gemm16_operand(Backend& be, const Tensor& t, DType dt, const char* what) {
  PP3D_CHECK(t.defined(), "gemm16: {} is undefined", what);
  if (t.dtype() == dt) return t;
  PP3D_CHECK(t.dtype() == DType::F32, "gemm16: {} is {}: it must be f32 (rounded here) or the input dtype {}", what,
             dtype_name(t.dtype()), dtype_name(dt));
  Tensor out = Tensor::empty(t.shape(), dt, be.device(), MemCategory::Workspace);
  be.cast(t, out);
  return out;
}

}  // namespace

void Backend::gemm16(DType input_dtype, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                     const Tensor& a, const Tensor& b, float beta, Tensor& c, int64_t batch, int64_t stride_a,
                     int64_t stride_b, int64_t stride_c) {
  PP3D_CHECK(input_dtype == DType::BF16 || input_dtype == DType::F16,
             "gemm16: input dtype must be bf16 or f16, got {}", dtype_name(input_dtype));
  PP3D_CHECK(c.defined() && (c.dtype() == DType::F32 || c.dtype() == input_dtype),
             "gemm16: c must be f32 or the input dtype {}, got {}", dtype_name(input_dtype),
             c.defined() ? c.str() : std::string("undefined"));
  const Tensor a16 = as_gemm16_operand(*this, a, input_dtype, "a");
  const Tensor b16 = as_gemm16_operand(*this, b, input_dtype, "b");
  gemm(trans_a, trans_b, m, n, k, alpha, a16, b16, beta, c, batch, stride_a, stride_b, stride_c);
}

void Backend::linear16_forward(DType input_dtype, int64_t rows, int64_t out, int64_t in, const Tensor& x,
                               const Tensor& w, const Tensor& bias, Tensor& y) {
  PP3D_CHECK(y.defined() && y.dtype() == input_dtype && y.numel() == rows * out,
             "linear16_forward: y must hold [{}, {}] in {}, got {}", rows, out, dtype_name(input_dtype),
             y.defined() ? y.str() : std::string("undefined"));
  PP3D_CHECK(!bias.defined() || bias.numel() == out, "linear16_forward: bias must hold {} elements, got {}", out,
             bias.str());
  Tensor y32 = Tensor::empty({rows, out}, DType::F32, device(), MemCategory::Workspace);
  gemm16(input_dtype, false, true, rows, out, in, 1.0f, x, w, 0.0f, y32);
  if (bias.defined()) bias_add(y32, value_as_f32(*this, bias));
  Tensor y2 = y.reshape({rows, out});
  cast(y32, y2);
}

namespace {

// A 16-bit output / saved tensor of the fused GELU ops: input_dtype, rows x cols elements.
void check_out16(const Tensor& t, DType dt, int64_t rows, int64_t cols, const char* what) {
  PP3D_CHECK(t.defined() && t.dtype() == dt && t.numel() == rows * cols, "{} must hold [{}, {}] in {}, got {}", what,
             rows, cols, dtype_name(dt), t.defined() ? t.str() : std::string("undefined"));
}

}  // namespace

void Backend::linear16_gelu_forward(DType input_dtype, int64_t rows, int64_t out, int64_t in, const Tensor& x,
                                    const Tensor& w, const Tensor& bias, Tensor& aux, Tensor& y) {
  check_out16(aux, input_dtype, rows, out, "linear16_gelu_forward: aux");
  check_out16(y, input_dtype, rows, out, "linear16_gelu_forward: y");
  PP3D_CHECK(!bias.defined() || bias.numel() == out, "linear16_gelu_forward: bias must hold {} elements, got {}",
             out, bias.str());
  Tensor pre = Tensor::empty({rows, out}, DType::F32, device(), MemCategory::Workspace);
  gemm16(input_dtype, false, true, rows, out, in, 1.0f, x, w, 0.0f, pre);
  if (bias.defined()) bias_add(pre, value_as_f32(*this, bias));
  Tensor aux2 = aux.reshape({rows, out}), y2 = y.reshape({rows, out});
  cast(pre, aux2);
  gelu_forward(pre, y2);  // GELU of the unrounded f32 sum, rounded once into 16-bit y
}

void Backend::linear16_dgelu_backward(DType input_dtype, int64_t rows, int64_t out, int64_t in, const Tensor& dy,
                                      const Tensor& w, const Tensor& aux, Tensor& dx) {
  check_out16(aux, input_dtype, rows, in, "linear16_dgelu_backward: aux");
  check_out16(dx, input_dtype, rows, in, "linear16_dgelu_backward: dx");
  Tensor g = Tensor::empty({rows, in}, DType::F32, device(), MemCategory::Workspace);
  gemm16(input_dtype, false, false, rows, in, out, 1.0f, dy, w, 0.0f, g);
  Tensor dx2 = dx.reshape({rows, in});
  gelu_backward(aux.reshape({rows, in}), g, dx2);  // f32 GEMM result times gelu'(aux), rounded once
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
