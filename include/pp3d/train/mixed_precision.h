// MixedPrecision: the per-step policy of bf16 / fp16 training that a trainer
// applies around its optimizer (docs/MIXED_PRECISION.md).
//
//  - param_dtype: what GptOptions::param_dtype the models are built with
//    (F32, BF16, F16). The optimizers keep the f32 master weights.
//  - F16 only: a DynamicLossScaler. The trainer multiplies its loss_weight by
//    loss_scale() (the model's backward then yields gradients x scale) and
//    divides the summed cache losses by the same loss_scale() (exact: the
//    scale is a power of two with the default factor 2).
//  - step(): after the gradient sync, decides overflow = any non-finite
//    gradient on ANY rank of `overflow_group` (normally the world: DP, TP and
//    PP ranks all skip alike), updates the scaler, and either skips the
//    optimizer step (every rank; logged, weights / master / Adam state and
//    the optimizer's step count untouched) or computes the global norm of the
//    UNSCALED gradients, clips on it (max_norm > 0) and steps with the
//    gradients multiplied by clip / scale. Without a scaler (F32, BF16) this
//    is exactly clip_grad_norm + step (bitwise the f32 path).
// Collective over overflow_group (F16) and the optimizer's groups. A plain
// value type owned by the trainer; not thread-safe.
#pragma once

#include <cstdint>
#include <optional>

#include "pp3d/comm/communicator.h"
#include "pp3d/core/dtype.h"
#include "pp3d/train/loss_scaler.h"
#include "pp3d/optim/optimizer.h"

namespace pp3d {

class ZeroOptimizer;

// What MixedPrecision::step did.
struct MixedPrecisionStep {
  bool skipped = false;     // overflow: no optimizer step on any rank
  float grad_norm = 0.0f;   // global L2 norm of the unscaled gradients before clipping (NaN when skipped)
  float loss_scale = 1.0f;  // the scale this step's gradients carried (before the scaler update)
};

class MixedPrecision {
 public:
  // param_dtype F32 / BF16 / F16; `scaler` is used for F16 only (dynamic loss
  // scaling, DeepSpeed semantics). Throws on I32.
  explicit MixedPrecision(DType param_dtype = DType::F32, const LossScalerConfig& scaler = {});

  // --bf16 / --fp16 command-line flags -> the parameter dtype (both set: error).
  static DType dtype_from_flags(bool bf16, bool fp16);

  DType param_dtype() const { return dtype_; }
  // 1 unless fp16 loss scaling is active.
  float loss_scale() const { return scaler_ ? scaler_->scale() : 1.0f; }
  std::optional<DynamicLossScaler>& scaler() { return scaler_; }
  const std::optional<DynamicLossScaler>& scaler() const { return scaler_; }
  // Steps skipped on overflow so far.
  int64_t skipped_steps() const { return skipped_; }

  // After ZeroOptimizer::finish_gradient_sync(): overflow check over
  // overflow_group (nullptr: this process only), clip at max_norm on the
  // unscaled norm (reduce_other: the TP / PP part of the norm, as
  // ZeroOptimizer::grad_norm), AdamW step with learning rate lr, or a skip.
  MixedPrecisionStep step(ZeroOptimizer& opt, float lr, float max_norm, Communicator* overflow_group,
                          const SumSquaresReducer& reduce_other = {});
  // The same for AdamW on parameters whose gradients are complete (serial,
  // or after a DDP reduction); reduce: as clip_grad_norm.
  MixedPrecisionStep step(AdamW& opt, float lr, float max_norm, Communicator* overflow_group,
                          const SumSquaresReducer& reduce = {});

 private:
  DType dtype_;
  std::optional<DynamicLossScaler> scaler_;
  int64_t skipped_ = 0;
};

}  // namespace pp3d
