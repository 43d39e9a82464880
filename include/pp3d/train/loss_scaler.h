// DynamicLossScaler: fp16 loss scaling with growth, back-off and hysteresis
// (DeepSpeed's DynamicLossScaler semantics).
//
// Per step: multiply the loss (i.e. loss_weight) by scale(); after backward and
// the gradient reduction, decide overflow = any non-finite gradient on ANY rank
// (any_overflow: all-reduce Max over the given group, normally the world, so
// every rank skips alike); call update(overflow); when it returns true skip
// the optimizer step (and zero the gradients), else step with
// grad_scale = 1 / scale-before-update (inv_scale() read BEFORE update()).
// Rules (cur_iter counts update() calls, last_overflow starts at -1):
//  overflow:  if hysteresis == 1 or the remaining hysteresis is 1, the scale
//             becomes max(scale / factor, min_scale) (an error instead when
//             already at min_scale and raise_at_min_scale); otherwise only the
//             remaining hysteresis is decremented. last_overflow = cur_iter.
//  clean:     (consecutive_hysteresis: remaining hysteresis reset), and when
//             (cur_iter - last_overflow) % scale_window == 0 the scale is
//             multiplied by factor (non-consecutive mode resets the remaining
//             hysteresis here).
// Plain value type; not thread-safe.
#pragma once

#include <cstdint>
#include <vector>

#include "pp3d/backend/backend.h"
#include "pp3d/comm/communicator.h"
#include "pp3d/core/parameter.h"

namespace pp3d {

struct LossScalerConfig {
  float init_scale = 65536.0f;  // 2^16 (DeepSpeed initial_scale_power 16)
  float scale_factor = 2.0f;    // > 1
  int64_t scale_window = 1000;  // clean steps between growths (>= 1)
  float min_scale = 1.0f;       // > 0
  int hysteresis = 2;           // overflows tolerated before a back-off (>= 1; DeepSpeed delayed_shift)
  bool consecutive_hysteresis = false;
  bool raise_at_min_scale = false;
};

class DynamicLossScaler {
 public:
  struct State {  // for checkpoints
    float scale = 0.0f;
    int64_t iter = 0;
    int64_t last_overflow = -1;
    int remaining_hysteresis = 0;
  };

  explicit DynamicLossScaler(const LossScalerConfig& config = {});

  float scale() const { return st_.scale; }
  float inv_scale() const { return 1.0f / st_.scale; }
  // Applies the rules above; returns true when the step must be skipped (overflow).
  bool update(bool overflow);

  const State& state() const { return st_; }
  void set_state(const State& s);
  const LossScalerConfig& config() const { return cfg_; }

  // True when any rank of `group` passes local_overflow = true (all-reduce Max;
  // nullptr: local only). Collective over group.
  static bool any_overflow(bool local_overflow, Communicator* group);
  // True when a defined gradient of `params` holds inf or NaN (local check).
  static bool grads_nonfinite(Backend& backend, const std::vector<Parameter*>& params);

 private:
  LossScalerConfig cfg_;
  State st_;
};

}  // namespace pp3d
