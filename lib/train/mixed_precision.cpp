// MixedPrecision (see include/pp3d/train/mixed_precision.h): overflow
// agreement, loss-scale update, clipping on the unscaled norm, step or skip.
#include "pp3d/train/mixed_precision.h"

#include <cmath>
#include <limits>

#include "pp3d/core/error.h"
#include "pp3d/core/log.h"
#include "pp3d/parallel/zero_optimizer.h"

namespace pp3d {

namespace {

// The optimizer-independent part. Ops: local_nonfinite() -> bool,
// norm() -> float (collective, scaled gradients), scale(float), step(lr).
template <typename Ops>
MixedPrecisionStep step_or_skip(std::optional<DynamicLossScaler>& scaler, int64_t& skipped, float lr,
                                float max_norm, Communicator* group, Ops ops) {
  MixedPrecisionStep r;
  if (scaler) {
    r.loss_scale = scaler->scale();
    const bool overflow = DynamicLossScaler::any_overflow(ops.local_nonfinite(), group);
    if (scaler->update(overflow)) {
      ++skipped;
      r.skipped = true;
      r.grad_norm = std::numeric_limits<float>::quiet_NaN();
      logger()->info("fp16: gradient overflow, optimizer step skipped on every rank (loss scale {} -> {}, {} skipped "
                     "so far)", r.loss_scale, scaler->scale(), skipped);
      return r;
    }
  }
  const float inv = 1.0f / r.loss_scale;  // exact: the scale is a power of two (factor 2)
  const float scaled_norm = ops.norm();
  r.grad_norm = scaled_norm * inv;
  PP3D_CHECK(std::isfinite(r.grad_norm), "gradient norm is not finite ({}): check the loss / learning rate",
             r.grad_norm);
  float factor = inv;
  if (max_norm > 0.0f) {
    const float c = clip_coefficient(r.grad_norm, max_norm);
    if (c < 1.0f) factor *= c;
  }
  // Unscale (and clip) in place, then a plain step: with scale 1 this is
  // bitwise clip_grad_norm + step, and scaling by a power of two commutes
  // with the rounding, so fp16 with and without loss scaling agree.
  if (factor != 1.0f) ops.scale(factor);
  ops.step(lr);
  return r;
}

}  // namespace

MixedPrecision::MixedPrecision(DType param_dtype, const LossScalerConfig& scaler) : dtype_(param_dtype) {
  PP3D_CHECK(is_floating(param_dtype), "mixed precision: parameter dtype must be f32, bf16 or f16, got {}",
             dtype_name(param_dtype));
  if (param_dtype == DType::F16) scaler_.emplace(scaler);
}

DType MixedPrecision::dtype_from_flags(bool bf16, bool fp16) {
  PP3D_CHECK(!(bf16 && fp16), "--bf16 and --fp16 are mutually exclusive: choose one");
  return bf16 ? DType::BF16 : fp16 ? DType::F16 : DType::F32;
}

MixedPrecisionStep MixedPrecision::step(ZeroOptimizer& opt, float lr, float max_norm, Communicator* overflow_group,
                                        const SumSquaresReducer& reduce_other) {
  struct Ops {
    ZeroOptimizer& z;
    const SumSquaresReducer& reduce;
    bool local_nonfinite() { return z.local_grads_nonfinite(); }
    float norm() { return z.grad_norm(reduce); }
    void scale(float f) { z.scale_gradients(f); }
    void step(float lr) { z.step(lr); }
  };
  return step_or_skip(scaler_, skipped_, lr, max_norm, overflow_group, Ops{opt, reduce_other});
}

MixedPrecisionStep MixedPrecision::step(AdamW& opt, float lr, float max_norm, Communicator* overflow_group,
                                        const SumSquaresReducer& reduce) {
  struct Ops {
    AdamW& a;
    const SumSquaresReducer& reduce;
    bool local_nonfinite() { return DynamicLossScaler::grads_nonfinite(a.backend(), a.params()); }
    float norm() { return grad_norm(a.backend(), a.params(), reduce); }
    void scale(float f) {
      for (Parameter* p : a.params()) a.backend().scale(p->grad, f);
    }
    void step(float lr) { a.step(lr); }
  };
  return step_or_skip(scaler_, skipped_, lr, max_norm, overflow_group, Ops{opt, reduce});
}

}  // namespace pp3d
