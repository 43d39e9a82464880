#include "pp3d/optim/optimizer.h"

#include <cmath>

#include "pp3d/core/error.h"

namespace pp3d {

AdamW::AdamW(Backend& backend, std::vector<Parameter*> params, const AdamWConfig& config)
    : backend_(&backend), params_(std::move(params)), cfg_(config) {
  PP3D_CHECK(cfg_.beta1 >= 0.0f && cfg_.beta1 < 1.0f && cfg_.beta2 >= 0.0f && cfg_.beta2 < 1.0f,
             "AdamW betas must be in [0, 1), got ({}, {})", cfg_.beta1, cfg_.beta2);
  PP3D_CHECK(cfg_.eps > 0.0f, "AdamW eps must be positive, got {}", cfg_.eps);
  PP3D_CHECK(cfg_.weight_decay >= 0.0f, "AdamW weight_decay must be >= 0, got {}", cfg_.weight_decay);
  state_.reserve(params_.size());
  for (Parameter* p : params_) {
    PP3D_CHECK(p != nullptr && p->value.defined() && p->grad.defined(), "AdamW: parameter '{}' has no value/grad",
               p ? p->name : std::string("null"));
    PP3D_CHECK(is_floating(p->grad.dtype()) && p->grad.numel() == p->value.numel(),
               "AdamW: parameter '{}' needs a float gradient of its shape, got {}", p->name, p->grad.str());
    const Device dev = p->value.device();
    State s;
    s.m = Tensor::zeros(p->value.shape(), DType::F32, dev, MemCategory::Optimizer);
    s.v = Tensor::zeros(p->value.shape(), DType::F32, dev, MemCategory::Optimizer);
    if (p->value.dtype() != DType::F32) {
      // The exact f32 init values (so the master equals the f32 model's init
      // and the 16-bit value is its rounding), or the value cast to f32.
      s.master = Tensor::empty(p->value.shape(), DType::F32, dev, MemCategory::Optimizer);
      s.master.copy_from(master_initial_values(*p));
    }
    state_.push_back(std::move(s));
  }
}

void AdamW::step(float lr, float grad_scale) {
  PP3D_CHECK(std::isfinite(lr) && lr >= 0.0f, "AdamW::step: learning rate must be finite and >= 0, got {}", lr);
  ++step_;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    Parameter& p = *params_[i];
    AdamWParams ap;
    ap.lr = lr;
    ap.beta1 = cfg_.beta1;
    ap.beta2 = cfg_.beta2;
    ap.eps = cfg_.eps;
    ap.weight_decay = p.weight_decay ? cfg_.weight_decay : 0.0f;
    ap.step = step_;
    ap.grad_scale = grad_scale;
    backend_->adamw_step(p.value, p.grad, state_[i].m, state_[i].v, state_[i].master, ap);
  }
}

double local_grad_sum_squares(Backend& backend, const std::vector<Parameter*>& params) {
  double s = 0.0;
  for (const Parameter* p : params)
    if (p->counted_in_norm) s += backend.sum_squares(p->grad);
  return s;
}

float grad_norm(Backend& backend, const std::vector<Parameter*>& params, const SumSquaresReducer& reduce) {
  double s = local_grad_sum_squares(backend, params);
  if (reduce) s = reduce(s);
  return static_cast<float>(std::sqrt(s));
}

float clip_coefficient(float norm, float max_norm) {
  const double c = static_cast<double>(max_norm) / (static_cast<double>(norm) + 1e-6);
  return c < 1.0 ? static_cast<float>(c) : 1.0f;
}

float clip_grad_norm(Backend& backend, const std::vector<Parameter*>& params, float max_norm,
                     const SumSquaresReducer& reduce) {
  const float norm = grad_norm(backend, params, reduce);
  PP3D_CHECK(std::isfinite(norm), "gradient norm is not finite ({}): check the loss / learning rate", norm);
  if (max_norm > 0.0f) {
    const float c = clip_coefficient(norm, max_norm);
    if (c < 1.0f)
      for (Parameter* p : params) backend.scale(p->grad, c);
  }
  return norm;
}

}  // namespace pp3d
