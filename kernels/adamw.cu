// AdamW (PyTorch semantics, decoupled weight decay) on one tensor, elementwise:
//   g = grad * grad_scale
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   p -= lr * ((m * inv_bc1) / (sqrt(v * inv_bc2) + eps) + wd * p)
// with inv_bc1 = 1/(1 - b1^step), inv_bc2 = 1/(1 - b2^step) computed on the host in double.
// p is `master` (f32) when given, then written (rounded to nearest even) into `param`
// of dtype param_dtype; otherwise p is the f32 `param` itself. grad, m, v are f32.
// Same operation order as the CPU reference (nvcc may fuse multiply-adds: ~1 ulp).
#include "common.cuh"
#include "launchers.h"

namespace pp3d::kernels {

namespace {

__global__ void adamw_kernel(void* param, int param_dt, float* master, const float* grad, float* m, float* v,
                             int64_t n, AdamWArgs a) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    float* pp = master != nullptr ? master + i : static_cast<float*>(param) + i;
    const float g = grad[i];
    const float mi = a.b1 * m[i] + (1.0f - a.b1) * a.gs * g;
    const float gg = a.gs * g;
    const float vi = a.b2 * v[i] + (1.0f - a.b2) * (gg * gg);
    const float p = *pp;
    const float np = p - a.lr * ((mi * a.inv_bc1) / (sqrtf(vi * a.inv_bc2) + a.eps) + a.wd * p);
    m[i] = mi;
    v[i] = vi;
    *pp = np;
    if (master != nullptr) store_from_f32(param, i, param_dt, np);
  }
}

}  // namespace

int adamw(void* param, int param_dtype, float* master, const float* grad, float* m, float* v, int64_t n,
          AdamWArgs args, void* stream) {
  if (n == 0) return 0;
  adamw_kernel<<<grid_for(n, 256, 8192), 256, 0, static_cast<cudaStream_t>(stream)>>>(param, param_dtype, master,
                                                                                      grad, m, v, n, args);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace pp3d::kernels
