// CudaBackend: construction, argument checks, scratch, elementwise ops,
// fill/copy/cast, sum_squares and the bias ops. Kernels: kernels/elementwise.cu,
// kernels/bias.cu (see their block comments for math and determinism).
#include "backend/cuda/cuda_backend.h"

#include <cmath>
#include <cstring>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_sdpa.h"
#include "backend/op_checks.h"
#include "launchers.h"
#include "pp3d/core/error.h"

namespace pp3d {

std::unique_ptr<Backend> make_cuda_backend(int device) { return std::make_unique<CudaBackend>(device); }

CudaBackend::CudaBackend(int device, const CudaBackendOptions& opts) : device_(device), opts_(opts) {
  const int count = cuda_device_count();
  PP3D_CHECK(device >= 0 && device < count, "cuda:{} requested but {} GPU(s) are visible", device, count);
  PP3D_CHECK_CUDA(cudaSetDevice(device_));
  PP3D_CHECK_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  PP3D_CHECK_CUBLAS(cublasLtCreate(&lt_));
  const int64_t ws_floats = static_cast<int64_t>((opts_.gemm_workspace_bytes + 3) / 4);
  if (ws_floats > 0) gemm_ws_ = Tensor::empty({ws_floats}, DType::F32, Device::cuda(device), MemCategory::Workspace);
}

CudaBackend::~CudaBackend() {
  // No throw from destructors: errors are ignored (the process is usually exiting).
  if (stream_ != nullptr) cudaStreamSynchronize(stream_);
  if (lt_ != nullptr) cublasLtDestroy(lt_);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

void CudaBackend::synchronize() { PP3D_CHECK_CUDA(cudaStreamSynchronize(stream_)); }

void CudaBackend::check_tensor(const Tensor& t, const char* what) const {
  PP3D_CHECK(t.defined(), "{} is undefined", what);
  PP3D_CHECK(t.device() == device(), "{} lives on {}, but this backend runs on {}", what, t.device().str(),
             device().str());
}

void CudaBackend::check(const Tensor& t, DType dt, const char* what) const {
  check_tensor(t, what);
  check_dtype(t, dt, what);
}

void CudaBackend::check_float(const Tensor& t, const char* what) const {
  check_tensor(t, what);
  PP3D_CHECK(is_floating(t.dtype()), "{} must be a float tensor (f32/bf16/f16), got {}", what,
             dtype_name(t.dtype()));
}

void* CudaBackend::scratch(int slot, std::size_t bytes) {
  PP3D_CHECK(slot >= 0 && slot < kScratchSlots, "scratch slot {} out of range", slot);
  Tensor& t = scratch_[static_cast<std::size_t>(slot)];
  if (!t.defined() || t.nbytes() < bytes) {
    if (t.defined()) synchronize();  // queued kernels may still use the old buffer
    t = Tensor();
    const int64_t floats = static_cast<int64_t>((bytes + 255) / 256 * 64);
    t = Tensor::empty({std::max<int64_t>(floats, 64)}, DType::F32, device(), MemCategory::Workspace);
  }
  return t.raw();
}

// ---- elementwise ------------------------------------------------------------

void CudaBackend::add(const Tensor& a, const Tensor& b, Tensor& out) {
  check(a, DType::F32, "add: a");
  check(b, DType::F32, "add: b");
  check(out, DType::F32, "add: out");
  check_same_numel(a, b, "add: b");
  check_same_numel(a, out, "add: out");
  PP3D_CHECK_CUDA(kernels::add_f32(out.data<float>(), a.data<float>(), b.data<float>(), a.numel(), stream_));
}

// scale / axpy on a 16-bit x or y (16-bit gradients, --grad-dtype param): one typed kernel
// reads and writes each array in its dtype, f32 math, one rounding (the CPU backend's result).
void CudaBackend::scale(Tensor& x, float alpha) {
  check_float(x, "scale: x");
  if (x.dtype() == DType::F32) {
    PP3D_CHECK_CUDA(kernels::scale_f32(x.data<float>(), alpha, x.numel(), stream_));
    return;
  }
  PP3D_CHECK_CUDA(kernels::scale_typed(x.raw(), static_cast<int>(x.dtype()), alpha, x.numel(), stream_));
}

void CudaBackend::axpy(float alpha, const Tensor& x, Tensor& y) {
  check_float(x, "axpy: x");
  check_float(y, "axpy: y");
  check_same_numel(x, y, "axpy: y");
  if (x.dtype() == DType::F32 && y.dtype() == DType::F32) {
    PP3D_CHECK_CUDA(kernels::axpy_f32(y.data<float>(), alpha, x.data<float>(), x.numel(), stream_));
    return;
  }
  PP3D_CHECK_CUDA(kernels::axpy_typed(y.raw(), static_cast<int>(y.dtype()), alpha, x.raw(),
                                      static_cast<int>(x.dtype()), x.numel(), stream_));
}

void CudaBackend::fill(Tensor& x, float value) {
  check_tensor(x, "fill: x");
  switch (x.dtype()) {
    case DType::F32: PP3D_CHECK_CUDA(kernels::fill_u32(x.raw(), f32_bits(value), x.numel(), stream_)); return;
    case DType::BF16: PP3D_CHECK_CUDA(kernels::fill_u16(x.raw(), f32_to_bf16(value), x.numel(), stream_)); return;
    case DType::F16: PP3D_CHECK_CUDA(kernels::fill_u16(x.raw(), f32_to_f16(value), x.numel(), stream_)); return;
    case DType::I32: {
      PP3D_CHECK(std::trunc(value) == value && std::fabs(value) < 2147483648.0f,
                 "fill: value {} is not representable in the i32 tensor x", value);
      const int32_t iv = static_cast<int32_t>(value);
      uint32_t bits;
      std::memcpy(&bits, &iv, 4);
      PP3D_CHECK_CUDA(kernels::fill_u32(x.raw(), bits, x.numel(), stream_));
      return;
    }
  }
}

void CudaBackend::copy(const Tensor& src, Tensor& dst) {
  check_tensor(src, "copy: src");
  check_tensor(dst, "copy: dst");
  PP3D_CHECK(src.dtype() == dst.dtype(), "copy: dst has dtype {} but src has {} (use cast)",
             dtype_name(dst.dtype()), dtype_name(src.dtype()));
  check_same_numel(src, dst, "copy: dst");
  const char* ps = static_cast<const char*>(src.raw());
  char* pd = static_cast<char*>(dst.raw());
  const std::size_t bytes = src.nbytes();
  if (ps == pd || bytes == 0) return;
  if (ps < pd + bytes && pd < ps + bytes) {  // overlapping ranges: go through scratch (memmove semantics)
    void* tmp = scratch(0, bytes);
    PP3D_CHECK_CUDA(cudaMemcpyAsync(tmp, ps, bytes, cudaMemcpyDeviceToDevice, stream_));
    ps = static_cast<const char*>(tmp);
  }
  PP3D_CHECK_CUDA(cudaMemcpyAsync(pd, ps, bytes, cudaMemcpyDeviceToDevice, stream_));
}

void CudaBackend::cast(const Tensor& src, Tensor& dst) {
  check_float(src, "cast: src");
  check_float(dst, "cast: dst");
  check_same_numel(src, dst, "cast: dst");
  if (src.dtype() == dst.dtype()) {
    copy(src, dst);
    return;
  }
  PP3D_CHECK(src.raw() != dst.raw(), "cast: src and dst must not share storage when the dtypes differ");
  PP3D_CHECK_CUDA(kernels::cast(dst.raw(), static_cast<int>(dst.dtype()), src.raw(), static_cast<int>(src.dtype()),
                                src.numel(), stream_));
}

double CudaBackend::sum_squares(const Tensor& x) {
  check_float(x, "sum_squares: x");
  if (x.numel() == 0) return 0.0;
  const int64_t blocks = kernels::sum_squares_blocks(x.numel());
  auto* buf = static_cast<double*>(scratch(0, static_cast<std::size_t>(blocks + 1) * sizeof(double)));
  PP3D_CHECK_CUDA(kernels::sum_squares(buf, buf + 1, x.raw(), static_cast<int>(x.dtype()), x.numel(), stream_));
  double result = 0.0;
  PP3D_CHECK_CUDA(cudaMemcpyAsync(&result, buf, sizeof(double), cudaMemcpyDeviceToHost, stream_));
  synchronize();
  return result;
}

// ---- bias -------------------------------------------------------------------

namespace {
int64_t bias_rows(const Tensor& x, const Tensor& bias, const char* xname, const char* bname) {
  PP3D_CHECK(bias.dim() == 1, "{} must be 1-d, got shape {}", bname, shape_str(bias.shape()));
  PP3D_CHECK(x.dim() >= 1 && x.size(-1) == bias.numel(), "{} {} does not end in the bias size {} of {}", xname,
             shape_str(x.shape()), bias.numel(), bname);
  return bias.numel() == 0 ? 0 : x.numel() / bias.numel();
}
}  // namespace

void CudaBackend::bias_add(Tensor& x, const Tensor& bias) {
  check(x, DType::F32, "bias_add: x");
  check(bias, DType::F32, "bias_add: bias");
  const int64_t rows = bias_rows(x, bias, "bias_add: x", "bias_add: bias");
  PP3D_CHECK_CUDA(kernels::bias_add_f32(x.data<float>(), bias.data<float>(), rows, bias.numel(), stream_));
}

void CudaBackend::bias_grad(const Tensor& dy, Tensor& dbias) {
  const auto dev_check = [this](const Tensor& t, DType dt, const char* what) { check(t, dt, what); };
  detail::check_act(dev_check, dy, "bias_grad: dy");
  check_float(dbias, "bias_grad: dbias");
  const int64_t rows = bias_rows(dy, dbias, "bias_grad: dy", "bias_grad: dbias");
  const int64_t n = dbias.numel();
  if (rows == 0 || n == 0) return;
  // dy (a 16-bit activation gradient with 16-bit compute) and dbias (16-bit with
  // --grad-dtype param) are read in their dtypes: f32 sums, dbias rounded once.
  auto* partial = static_cast<float*>(
      scratch(0, static_cast<std::size_t>(kernels::bias_grad_chunks(rows) * n) * sizeof(float)));
  PP3D_CHECK_CUDA(kernels::bias_grad(dbias.raw(), static_cast<int>(dbias.dtype()), dy.raw(),
                                     static_cast<int>(dy.dtype()), rows, n, partial, stream_));
}

}  // namespace pp3d
