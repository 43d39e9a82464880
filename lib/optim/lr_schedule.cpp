#include "pp3d/optim/lr_schedule.h"

#include <cmath>

#include "pp3d/core/error.h"

namespace pp3d {

LrDecay parse_lr_decay(std::string_view s) {
  if (s == "cosine") return LrDecay::Cosine;
  if (s == "linear") return LrDecay::Linear;
  if (s == "constant") return LrDecay::Constant;
  PP3D_FAIL("unknown learning-rate decay '{}' (expected cosine, linear or constant)", s);
}

std::string_view lr_decay_name(LrDecay d) {
  switch (d) {
    case LrDecay::Cosine: return "cosine";
    case LrDecay::Linear: return "linear";
    case LrDecay::Constant: return "constant";
  }
  return "?";
}

void LrSchedule::validate() const {
  PP3D_CHECK(std::isfinite(max_lr) && max_lr >= 0.0f, "lr schedule: max_lr must be finite and >= 0, got {}", max_lr);
  PP3D_CHECK(min_lr >= 0.0f && min_lr <= max_lr, "lr schedule: min_lr {} must be in [0, max_lr {}]", min_lr, max_lr);
  PP3D_CHECK(warmup_steps >= 0, "lr schedule: warmup_steps must be >= 0, got {}", warmup_steps);
  PP3D_CHECK(total_steps >= 1, "lr schedule: total_steps must be >= 1, got {}", total_steps);
  PP3D_CHECK(warmup_steps <= total_steps, "lr schedule: warmup_steps {} exceeds total_steps {}", warmup_steps,
             total_steps);
}

float LrSchedule::lr(int64_t step) const {
  PP3D_CHECK(step >= 0, "lr schedule: negative step {}", step);
  if (step < warmup_steps)
    return static_cast<float>(static_cast<double>(max_lr) * static_cast<double>(step + 1) /
                              static_cast<double>(warmup_steps));
  if (decay == LrDecay::Constant) return max_lr;
  const int64_t span = total_steps - warmup_steps;
  if (span <= 0 || step >= total_steps) return min_lr;
  const double r = static_cast<double>(step - warmup_steps) / static_cast<double>(span);
  const double hi = max_lr, lo = min_lr;
  if (decay == LrDecay::Linear) return static_cast<float>(hi + (lo - hi) * r);
  return static_cast<float>(lo + (hi - lo) * 0.5 * (1.0 + std::cos(3.14159265358979323846 * r)));
}

}  // namespace pp3d
