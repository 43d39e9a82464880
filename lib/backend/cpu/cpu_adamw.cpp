// CpuBackend::adamw_step: PyTorch AdamW (decoupled weight decay) on one tensor.
//
//   g = grad * grad_scale
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   mhat = m / (1 - b1^step);  vhat = v / (1 - b2^step)
//   p -= lr * (mhat / (sqrt(vhat) + eps) + wd * p)
// p is `param` (f32, in place) or, when `master` is defined, the f32 master
// copy, which is then cast (nearest even) into `param` (any float).
// Elementwise over fixed chunks, each an Eigen array expression (vectorised).
#include <cmath>
#include <vector>

#include <Eigen/Core>

#include "backend/cpu/cpu_backend.h"
#include "pp3d/core/error.h"

namespace pp3d {

void CpuBackend::adamw_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, Tensor& master,
                            const AdamWParams& p) {
  detail::cpu_check_float(param, "adamw_step: param");
  detail::cpu_check_float(grad, "adamw_step: grad");  // f32, or 16-bit gradients read through f32
  detail::cpu_check(m, DType::F32, "adamw_step: m");
  detail::cpu_check(v, DType::F32, "adamw_step: v");
  check_same_numel(param, grad, "adamw_step: grad");
  check_same_numel(param, m, "adamw_step: m");
  check_same_numel(param, v, "adamw_step: v");
  const bool has_master = master.defined();
  if (has_master) {
    detail::cpu_check(master, DType::F32, "adamw_step: master");
    check_same_numel(param, master, "adamw_step: master");
  } else {
    PP3D_CHECK(param.dtype() == DType::F32,
               "adamw_step: param is {}, a 16-bit param needs an f32 master copy (pass `master`)",
               dtype_name(param.dtype()));
  }
  PP3D_CHECK(p.step >= 1, "adamw_step: step must be >= 1 (1-based), got {}", p.step);
  PP3D_CHECK(p.beta1 >= 0.0f && p.beta1 < 1.0f && p.beta2 >= 0.0f && p.beta2 < 1.0f,
             "adamw_step: betas must lie in [0, 1), got beta1={} beta2={}", p.beta1, p.beta2);

  const double bc1 = 1.0 - std::pow(static_cast<double>(p.beta1), static_cast<double>(p.step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(p.beta2), static_cast<double>(p.step));
  const float inv_bc1 = static_cast<float>(1.0 / bc1), inv_bc2 = static_cast<float>(1.0 / bc2);
  const float b1 = p.beta1, b2 = p.beta2, gs = p.grad_scale, lr = p.lr, eps = p.eps, wd = p.weight_decay;
  float* pp = has_master ? master.data<float>() : param.data<float>();
  const float* pg = grad.dtype() == DType::F32 ? grad.data<float>() : nullptr;
  float* pm = m.data<float>();
  float* pv = v.data<float>();

  detail::parallel_for(param.numel(), detail::kCpuChunk, [&](int64_t i0, int64_t i1) {
    const int64_t len = i1 - i0;
    std::vector<float> g16;
    const float* gp = pg != nullptr ? pg + i0 : nullptr;
    if (gp == nullptr) {
      g16.resize(static_cast<std::size_t>(len));
      detail::load_f32(grad, i0, len, g16.data());
      gp = g16.data();
    }
    Eigen::Map<const Eigen::ArrayXf> g(gp, len);
    Eigen::Map<Eigen::ArrayXf> ma(pm + i0, len), va(pv + i0, len), pa(pp + i0, len);
    ma = b1 * ma + (1.0f - b1) * gs * g;
    va = b2 * va + (1.0f - b2) * (gs * g).square();
    pa -= lr * ((ma * inv_bc1) / ((va * inv_bc2).sqrt() + eps) + wd * pa);
    if (has_master && param.dtype() != DType::F32) detail::store_f32(pp + i0, param, i0, len);
  });
  if (has_master && param.dtype() == DType::F32 && param.raw() != master.raw()) {
    std::copy(pp, pp + param.numel(), param.data<float>());
  }
}

}  // namespace pp3d
