// CudaBackend's fused 16-bit Linear ops: one cuBLASLt matmul whose epilogue does the
// elementwise work (lt_matmul in cuda_gemm.cpp). Each falls back to the Backend default
// (separate GEMM and kernels: the CPU emulation's composition) when its arguments are not
// the plain case or cuBLASLt offers no algorithm, and that default also reports bad input.
//  - linear16_forward: CUBLASLT_EPILOGUE_BIAS;
//  - linear16_gelu_forward: CUBLASLT_EPILOGUE_GELU_AUX_BIAS (GELU_AUX without a bias);
//  - linear16_dgelu_backward: CUBLASLT_EPILOGUE_DGELU.
// The GELU epilogues apply GELU (and its derivative) to the f32 accumulator, before D is
// rounded: the semantics Backend documents and the CPU backend emulates. cublasLt.h does
// not say which GELU form it computes; tests/cuda/cuda_gemm_epilogue_test.cpp compares it
// with the tanh-form kernels (kernels/gelu.cu) on the GPU.
#include <string>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_check.h"
#include "pp3d/core/error.h"

namespace pp3d {

namespace {

bool is16(DType dt) { return dt == DType::BF16 || dt == DType::F16; }

// A GEMM operand in the 16-bit dt: an f32 one rounded into a Workspace tensor (as gemm16
// does), anything else as is (another dtype makes the caller fall back, and the default reports it).
Tensor operand16(Backend& be, const Tensor& t, DType dt) {
  if (t.dtype() != DType::F32) return t;
  Tensor o = Tensor::empty(t.shape(), dt, be.device(), MemCategory::Workspace);
  be.cast(t, o);
  return o;
}

bool holds(const Tensor& t, int64_t numel) { return t.defined() && t.numel() == numel; }
bool holds16(const Tensor& t, DType dt, int64_t numel) { return holds(t, numel) && t.dtype() == dt; }
bool bias_fits(const Tensor& bias, DType dt, int64_t out) {
  return !bias.defined() || (bias.numel() == out && (bias.dtype() == DType::F32 || bias.dtype() == dt));
}

detail::LtEpilogue bias_epilogue(const Tensor& bias) {
  detail::LtEpilogue e;
  if (bias.defined()) {
    e.bias = bias.raw();
    e.bias_dtype = bias.dtype();
  }
  return e;
}

}  // namespace

bool CudaBackend::fused_linear16(DType dt, bool trans_b, int64_t rows, int64_t n, int64_t k, const Tensor& a,
                                 const Tensor& b, Tensor& y, const detail::LtEpilogue& epi, const char* what) {
  const std::string op(what);
  check_float(a, (op + ": input (x or dy)").c_str());
  check_float(b, (op + ": weight").c_str());
  check_float(y, (op + ": output").c_str());
  const Tensor a16 = operand16(*this, a, dt), b16 = operand16(*this, b, dt);
  if (a16.dtype() != dt || b16.dtype() != dt ||
      !lt_matmul(false, trans_b, rows, n, k, 1.0f, a16.raw(), dt, b16.raw(), dt, 0.0f, y.raw(), dt, 1, 0, 0, 0, epi))
    return false;
  ++epilogue_counts_.fused;
  return true;
}

// CUBLASLT_EPILOGUE_BIAS: cuBLASLt adds the bias "before applying final postprocessing"
// (cublasLt.h), i.e. to the f32 accumulator (compute/scale type f32), and converts the
// sum to y's 16-bit type once: the base class's gemm16 -> f32 -> bias_add -> cast
// computes the same value in three passes (up to the GEMM's own summation order).
void CudaBackend::linear16_forward(DType input_dtype, int64_t rows, int64_t out, int64_t in, const Tensor& x,
                                   const Tensor& w, const Tensor& bias, Tensor& y) {
  if (is16(input_dtype) && rows > 0 && out > 0 && in > 0 && holds(x, rows * in) && holds(w, out * in) &&
      holds16(y, input_dtype, rows * out) && bias_fits(bias, input_dtype, out)) {
    if (bias.defined()) check_float(bias, "linear16_forward: bias");
    if (fused_linear16(input_dtype, true, rows, out, in, x, w, y, bias_epilogue(bias), "linear16_forward")) return;
  }
  ++epilogue_counts_.fallback;
  Backend::linear16_forward(input_dtype, rows, out, in, x, w, bias, y);  // unfused (also the error messages)
}

// CUBLASLT_EPILOGUE_GELU_AUX_BIAS: the bias is added to the f32 accumulator, the sum is
// written to aux (rounded to D's type: the "GELU input matrix") and GELU of the unrounded
// sum to y, rounded once: Backend::linear16_gelu_forward's definition.
void CudaBackend::linear16_gelu_forward(DType input_dtype, int64_t rows, int64_t out, int64_t in, const Tensor& x,
                                        const Tensor& w, const Tensor& bias, Tensor& aux, Tensor& y) {
  if (is16(input_dtype) && rows > 0 && out > 0 && in > 0 && holds(x, rows * in) && holds(w, out * in) &&
      holds16(aux, input_dtype, rows * out) && holds16(y, input_dtype, rows * out) &&
      bias_fits(bias, input_dtype, out)) {
    check_float(aux, "linear16_gelu_forward: aux");
    if (bias.defined()) check_float(bias, "linear16_gelu_forward: bias");
    detail::LtEpilogue e = bias_epilogue(bias);
    e.gelu = true;
    e.aux = aux.raw();
    e.aux_dtype = aux.dtype();
    if (fused_linear16(input_dtype, true, rows, out, in, x, w, y, e, "linear16_gelu_forward")) return;
  }
  ++epilogue_counts_.fallback;
  Backend::linear16_gelu_forward(input_dtype, rows, out, in, x, w, bias, aux, y);
}

// CUBLASLT_EPILOGUE_DGELU: D = (the f32 product dy . w) * gelu'(aux), rounded once. No
// DGELU_BGRAD: its bias gradient overwrites, where pp3d's parameter gradients accumulate
// (and the bias belongs to the layer below: ColumnParallelLinear's backward sums dx).
void CudaBackend::linear16_dgelu_backward(DType input_dtype, int64_t rows, int64_t out, int64_t in,
                                          const Tensor& dy, const Tensor& w, const Tensor& aux, Tensor& dx) {
  if (is16(input_dtype) && rows > 0 && out > 0 && in > 0 && holds(dy, rows * out) && holds(w, out * in) &&
      holds16(aux, input_dtype, rows * in) && holds16(dx, input_dtype, rows * in)) {
    check_float(aux, "linear16_dgelu_backward: aux");
    detail::LtEpilogue e;
    e.dgelu = true;
    e.aux = aux.raw();
    e.aux_dtype = aux.dtype();
    if (fused_linear16(input_dtype, false, rows, in, out, dy, w, dx, e, "linear16_dgelu_backward")) return;
  }
  ++epilogue_counts_.fallback;
  Backend::linear16_dgelu_backward(input_dtype, rows, out, in, dy, w, aux, dx);
}

}  // namespace pp3d
