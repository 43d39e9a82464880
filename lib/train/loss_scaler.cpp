// DynamicLossScaler (see include/pp3d/train/loss_scaler.h).
#include "pp3d/train/loss_scaler.h"

#include <algorithm>
#include <cmath>

#include "pp3d/core/error.h"

namespace pp3d {

DynamicLossScaler::DynamicLossScaler(const LossScalerConfig& config) : cfg_(config) {
  PP3D_CHECK(std::isfinite(cfg_.init_scale) && cfg_.init_scale > 0.0f, "loss scaler: init_scale must be finite and "
             "> 0, got {}", cfg_.init_scale);
  PP3D_CHECK(cfg_.scale_factor > 1.0f, "loss scaler: scale_factor must be > 1, got {}", cfg_.scale_factor);
  PP3D_CHECK(cfg_.scale_window >= 1, "loss scaler: scale_window must be >= 1, got {}", cfg_.scale_window);
  PP3D_CHECK(cfg_.min_scale > 0.0f && cfg_.min_scale <= cfg_.init_scale,
             "loss scaler: min_scale must be in (0, init_scale {}], got {}", cfg_.init_scale, cfg_.min_scale);
  PP3D_CHECK(cfg_.hysteresis >= 1, "loss scaler: hysteresis must be >= 1, got {}", cfg_.hysteresis);
  st_.scale = cfg_.init_scale;
  st_.remaining_hysteresis = cfg_.hysteresis;
}

bool DynamicLossScaler::update(bool overflow) {
  if (overflow) {
    if (cfg_.hysteresis == 1 || st_.remaining_hysteresis == 1) {
      PP3D_CHECK(!(cfg_.raise_at_min_scale && st_.scale == cfg_.min_scale),
                 "loss scaler: gradient overflow at the minimum loss scale {} (the model diverged or min_scale is "
                 "too high)", cfg_.min_scale);
      st_.scale = std::max(st_.scale / cfg_.scale_factor, cfg_.min_scale);
    } else {
      --st_.remaining_hysteresis;
    }
    st_.last_overflow = st_.iter;
  } else {
    if (cfg_.consecutive_hysteresis) st_.remaining_hysteresis = cfg_.hysteresis;
    if ((st_.iter - st_.last_overflow) % cfg_.scale_window == 0) {
      if (!cfg_.consecutive_hysteresis) st_.remaining_hysteresis = cfg_.hysteresis;
      st_.scale *= cfg_.scale_factor;
    }
  }
  ++st_.iter;
  return overflow;
}

void DynamicLossScaler::set_state(const State& s) {
  PP3D_CHECK(std::isfinite(s.scale) && s.scale > 0.0f, "loss scaler state: scale must be finite and > 0, got {}",
             s.scale);
  PP3D_CHECK(s.remaining_hysteresis >= 1 && s.remaining_hysteresis <= cfg_.hysteresis,
             "loss scaler state: remaining hysteresis {} outside [1, {}]", s.remaining_hysteresis, cfg_.hysteresis);
  st_ = s;
}

bool DynamicLossScaler::any_overflow(bool local_overflow, Communicator* group) {
  if (group == nullptr || group->size() == 1) return local_overflow;
  Tensor flag = Tensor::from_vector_i32({1}, {local_overflow ? 1 : 0}, MemCategory::Comm);
  group->all_reduce(flag, ReduceOp::Max);
  return flag.data<int32_t>()[0] != 0;
}

bool DynamicLossScaler::grads_nonfinite(Backend& backend, const std::vector<Parameter*>& params) {
  // inf^2 = inf and NaN propagates through the (double) sum; finite f32
  // values cannot overflow a double sum of squares.
  for (const Parameter* p : params)
    if (p->grad.defined() && !std::isfinite(backend.sum_squares(p->grad))) return true;
  return false;
}

}  // namespace pp3d
