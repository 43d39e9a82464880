// GPU: the GELU kernels and a cuBLAS GEMM against the CPU reference backend on
// the same random inputs (odd sizes included). Exits 77 without a GPU.
#include <cmath>
#include <cstdio>
#include <vector>

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "backend/cuda/cuda_check.h"
#include "launchers.h"
#include "pp3d/backend/backend.h"
#include "pp3d/core/rng.h"

using namespace pp3d;

static int failures = 0;
static void expect_close(const std::vector<float>& got, const std::vector<float>& want, float atol, float rtol,
                         const char* what) {
  for (std::size_t i = 0; i < want.size(); ++i) {
    if (std::fabs(got[i] - want[i]) > atol + rtol * std::fabs(want[i])) {
      std::printf("FAIL %s at %zu: got %.8g want %.8g\n", what, i, got[i], want[i]);
      ++failures;
      return;
    }
  }
  std::printf("ok   %s (%zu elements)\n", what, want.size());
}

int main() {
  if (cuda_device_count() == 0) {
    std::printf("no GPU visible: skipping\n");
    return 77;
  }
  auto cpu = make_cpu_backend();
  for (int64_t n : {1, 7, 4096, 1000003}) {
    Tensor x = Tensor::empty({n});
    Tensor dy = Tensor::empty({n});
    rng_normal_fill(x, rng_key(1, "x"), 0, 0, n, 0.0f, 3.0f);
    rng_normal_fill(dy, rng_key(1, "dy"), 0, 0, n, 0.0f, 1.0f);
    Tensor y_ref = Tensor::empty({n}), dx_ref = Tensor::empty({n});
    cpu->gelu_forward(x, y_ref);
    cpu->gelu_backward(x, dy, dx_ref);
    Tensor xd = x.to(Device::cuda(0)), dyd = dy.to(Device::cuda(0));
    Tensor yd = Tensor::empty({n}, DType::F32, Device::cuda(0)), dxd = Tensor::empty({n}, DType::F32, Device::cuda(0));
    PP3D_CHECK_CUDA(kernels::gelu_forward(yd.data<float>(), xd.data<float>(), n, nullptr));
    PP3D_CHECK_CUDA(kernels::gelu_backward(dxd.data<float>(), xd.data<float>(), dyd.data<float>(), n, nullptr));
    PP3D_CHECK_CUDA(cudaDeviceSynchronize());
    expect_close(yd.to(Device::cpu()).to_vector(), y_ref.to_vector(), 1e-6f, 5e-6f, "gelu_forward");
    expect_close(dxd.to(Device::cpu()).to_vector(), dx_ref.to_vector(), 1e-6f, 5e-6f, "gelu_backward");
  }
  // cuBLAS row-major C = A B through the column-major trick: C^T = B^T A^T.
  const int64_t m = 37, n = 53, k = 29;
  Tensor a = Tensor::empty({m, k}), b = Tensor::empty({k, n}), c_ref = Tensor::zeros({m, n});
  rng_normal_fill(a, rng_key(2, "a"), 0, 0, k, 0.0f, 1.0f);
  rng_normal_fill(b, rng_key(2, "b"), 0, 0, n, 0.0f, 1.0f);
  cpu->gemm(false, false, m, n, k, 1.0f, a, b, 0.0f, c_ref);
  Tensor ad = a.to(Device::cuda(0)), bd = b.to(Device::cuda(0)), cd = Tensor::zeros({m, n}, DType::F32, Device::cuda(0));
  cublasHandle_t h;
  PP3D_CHECK_CUBLAS(cublasCreate(&h));
  PP3D_CHECK_CUBLAS(cublasSetMathMode(h, CUBLAS_PEDANTIC_MATH));  // true fp32, no TF32
  const float one = 1.0f, zero = 0.0f;
  PP3D_CHECK_CUBLAS(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, n, m, k, &one, bd.data<float>(), n, ad.data<float>(), k,
                                &zero, cd.data<float>(), n));
  PP3D_CHECK_CUDA(cudaDeviceSynchronize());
  cublasDestroy(h);
  expect_close(cd.to(Device::cpu()).to_vector(), c_ref.to_vector(), 1e-5f, 1e-5f, "cublas sgemm vs cpu gemm");
  std::printf("%s\n", failures ? "FAILED" : "all GPU checks passed");
  return failures ? 1 : 0;
}
