// Model-state memory of one rank against the ZeRO formulas, and the per-step
// ZeRO figures pp3d-train writes to metrics.jsonl (docs/ZERO.md, "Memory report").
//
// Ψ = parameter elements of this rank's model shard (its TP shard of its
// pipeline stage's layers, a tied wte copy included), N = DP size, K = bytes of
// optimizer state per element (8 = Adam m, v for f32 parameters; 12 = m, v and
// the f32 master for bf16 / f16 parameters). Per category, before padding:
//   params     b_p Ψ  (stage 3: b_p Ψ / N), b_p = 4 (f32) or 2 (bf16 / f16)
//   grads      b_g Ψ  (stage 2, 3: b_g Ψ / N), b_g = 4 (f32 gradients) or 2
//              (16-bit gradients, --grad-dtype param: the ZeRO paper's 16Ψ family)
//   optimizer  K Ψ    (stage 1, 2, 3: K Ψ / N)
// The stated overhead is the padding of every bucket's flat buffer to a multiple
// of N (< N elements per bucket), in the same per-element bytes and sharding;
// the report's "measured" must then equal formula + overhead to within a few %.
// Transient buffers that exist only inside a step (stage 2/3 full gradient
// buckets during backward, stage 3 gathered layers, Comm temporaries) are
// stated separately (transient_*), not part of the comparison.
// Pure functions of a ZeroOptimizer's layout plus allocator reads; thread-compatible.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "pp3d/core/device.h"
#include "pp3d/core/dtype.h"

namespace pp3d {

class ZeroOptimizer;
struct StepMetrics;

struct ModelStateBytes {
  double params = 0.0, grads = 0.0, optimizer = 0.0;
  double total() const { return params + grads + optimizer; }
};

struct ZeroMemoryReport {
  int stage = 0, dp = 1;
  DType param_dtype = DType::F32;
  DType grad_dtype = DType::F32;  // f32, or the 16-bit parameter dtype (--grad-dtype param)
  int64_t psi = 0;      // parameter elements of this rank's model shard
  int64_t padding = 0;  // padding elements over all buckets (sum of padded - numel)
  int64_t largest_bucket = 0;  // elements (padded) of the largest bucket
  double bytes_param = 4, bytes_grad = 4, bytes_optimizer = 8;  // per element, unsharded (b_p, b_g, K)
  ModelStateBytes measured;  // the allocator's (or the caller's) figures
  ModelStateBytes formula;   // the ZeRO formula for psi
  ModelStateBytes overhead;  // stated: the padding of the flat buffers
  // Transient, inside a step: full f32 gradient buckets during backward (stage 2/3:
  // up to all of them) and gathered parameters (stage 3: the layers in use + prefetch).
  double transient_grads = 0.0, transient_params = 0.0;

  // measured / formula per category (1 where the formula is 0).
  ModelStateBytes ratio() const;
  // |measured - (formula + overhead)| <= tol * formula in every category and in total.
  bool within(double tol) const;
  // "4Ψ + 12Ψ/N" style total formula of this stage and precision.
  std::string formula_text() const;
  // Multi-line human report (the pp3d-train header).
  std::string str() const;
  // metrics.jsonl "mem_formula_bytes": params, grads, optimizer, total, psi, padding_bytes.
  std::vector<std::pair<std::string, double>> formula_fields() const;
};

// The current Params / Grads / Optimizer bytes of the allocator on one device type.
ModelStateBytes allocator_model_state_bytes(DeviceType dev = DeviceType::CPU);
// The report of `zero`'s layout with `measured` (e.g. allocator bytes minus a baseline).
ZeroMemoryReport zero_memory_report(const ZeroOptimizer& zero, const ModelStateBytes& measured);
// pp3d-train's start-up log: the report with the allocator's current bytes (info level).
void log_zero_memory_report(const ZeroOptimizer& zero, DeviceType dev);
// Trainer::train_step's hook: the formula bytes and (dp > 1) the step's gradient
// communication timing (GradBucketer::last_comm_stats) into `r`.
void fill_zero_step_metrics(StepMetrics& r, const ZeroOptimizer& zero);

}  // namespace pp3d
