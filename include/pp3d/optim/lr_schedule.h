// Learning-rate schedule: linear warm-up, then cosine | linear | constant
// decay from max_lr to min_lr. A pure function of the step (0-based), so a
// resumed run continues exactly. Plain value type, thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace pp3d {

enum class LrDecay { Cosine, Linear, Constant };

// "cosine" | "linear" | "constant" (throws pp3d::Error otherwise).
LrDecay parse_lr_decay(std::string_view s);
std::string_view lr_decay_name(LrDecay d);

struct LrSchedule {
  float max_lr = 3e-4f;
  float min_lr = 0.0f;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;  // steps 0 .. total_steps-1; later steps get min_lr (Constant: max_lr)
  LrDecay decay = LrDecay::Cosine;

  // step < warmup_steps: max_lr * (step + 1) / warmup_steps (llm.c convention,
  // never 0). Then with r = (step - warmup) / (total - warmup) in [0, 1]:
  // cosine: min + (max - min) * 0.5 * (1 + cos(pi r)); linear: max + (min - max) r;
  // constant: max_lr.
  float lr(int64_t step) const;
  // Throws pp3d::Error on negative steps/rates, min_lr > max_lr, warmup > total.
  void validate() const;
};

}  // namespace pp3d
