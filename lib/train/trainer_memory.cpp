// Memory report of a ZeroOptimizer's rank against the ZeRO formulas and the
// per-step ZeRO metrics (include/pp3d/train/trainer_memory.h).
#include "pp3d/train/trainer_memory.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "pp3d/core/allocator.h"
#include "pp3d/core/log.h"
#include "pp3d/parallel/zero_optimizer.h"
#include "pp3d/train/trainer.h"

namespace pp3d {

namespace {

double ratio_of(double measured, double formula) { return formula > 0.0 ? measured / formula : 1.0; }

std::string coef(double c) { return c == std::floor(c) ? fmt::format("{:.0f}", c) : fmt::format("{:g}", c); }

std::string mib(double b) { return fmt::format("{:.3f} MiB", b / (1024.0 * 1024.0)); }

}  // namespace

ModelStateBytes ZeroMemoryReport::ratio() const {
  return {ratio_of(measured.params, formula.params), ratio_of(measured.grads, formula.grads),
          ratio_of(measured.optimizer, formula.optimizer)};
}

bool ZeroMemoryReport::within(double tol) const {
  auto ok = [tol](double m, double f, double o) { return std::fabs(m - (f + o)) <= tol * f; };
  return ok(measured.params, formula.params, overhead.params) && ok(measured.grads, formula.grads, overhead.grads) &&
         ok(measured.optimizer, formula.optimizer, overhead.optimizer) &&
         ok(measured.total(), formula.total(), overhead.total());
}

std::string ZeroMemoryReport::formula_text() const {
  double rep = 0.0, sh = 0.0;
  (stage == 3 ? sh : rep) += bytes_param;
  (stage >= 2 ? sh : rep) += bytes_grad;
  (stage >= 1 ? sh : rep) += bytes_optimizer;
  if (sh == 0.0) return coef(rep) + "Ψ";
  if (rep == 0.0) return coef(sh) + "Ψ/N";
  return fmt::format("{}Ψ + {}Ψ/N", coef(rep), coef(sh));
}

std::string ZeroMemoryReport::str() const {
  const ModelStateBytes r = ratio();
  auto line = [](const char* what, double m, double f, double o, double rr, const std::string& sym) {
    return fmt::format("\n  {:<9} {:>12.0f} B = {:.4f} x formula {} = {:.0f} B (+ padding {:.0f} B)", what, m, rr, sym,
                       f, o);
  };
  const std::string n = "/N";
  std::string s = fmt::format(
      "model-state memory on this rank: ZeRO stage {}, N = dp {}, {} params / {} grads / {} optimizer state "
      "(K = {:.0f} B), Psi = {} parameters of this rank's model shard, {} padding elements",
      stage, dp, dtype_name(param_dtype), dtype_name(grad_dtype),
      bytes_optimizer == 12 ? "f32 master + m + v" : "f32 m + v",
      bytes_optimizer, psi, padding);
  s += line("params", measured.params, formula.params, overhead.params, r.params,
            coef(bytes_param) + "Ψ" + (stage == 3 ? n : ""));
  s += line("grads", measured.grads, formula.grads, overhead.grads, r.grads,
            coef(bytes_grad) + "Ψ" + (stage >= 2 ? n : ""));
  s += line("optimizer", measured.optimizer, formula.optimizer, overhead.optimizer, r.optimizer,
            coef(bytes_optimizer) + "Ψ" + (stage >= 1 ? n : ""));
  s += line("total", measured.total(), formula.total(), overhead.total(), ratio_of(measured.total(), formula.total()),
            formula_text());
  s += fmt::format("\n  ({}; transient inside a step, not above: full gradient buckets {}, gathered parameters {}, "
                   "Comm temporaries of at most one bucket's shard per reduction in flight)",
                   within(0.05) ? "within 5% of formula + padding" : "NOT within 5% of formula + padding",
                   mib(transient_grads), mib(transient_params));
  return s;
}

std::vector<std::pair<std::string, double>> ZeroMemoryReport::formula_fields() const {
  return {{"params", formula.params},
          {"grads", formula.grads},
          {"optimizer", formula.optimizer},
          {"total", formula.total()},
          {"psi", static_cast<double>(psi)},
          {"padding_bytes", overhead.total()},
          {"zero_stage", static_cast<double>(stage)},
          {"dp", static_cast<double>(dp)}};
}

ModelStateBytes allocator_model_state_bytes(DeviceType dev) {
  const Allocator& a = Allocator::instance();
  return {static_cast<double>(a.stats(MemCategory::Params, dev).current),
          static_cast<double>(a.stats(MemCategory::Grads, dev).current),
          static_cast<double>(a.stats(MemCategory::Optimizer, dev).current)};
}

ZeroMemoryReport zero_memory_report(const ZeroOptimizer& zero, const ModelStateBytes& measured) {
  ZeroMemoryReport r;
  r.stage = zero.stage();
  r.dp = zero.buckets().dp().size();
  r.param_dtype = zero.param_dtype();
  r.measured = measured;
  r.bytes_param = static_cast<double>(dtype_size(r.param_dtype));
  // 16-bit gradients (GptOptions::grad_dtype): the ZeRO paper's 2 B/elem, so
  // 16Ψ; 4Ψ + 12Ψ/N; 2Ψ + 14Ψ/N; 16Ψ/N (f32 gradients: the 18Ψ family).
  if (!zero.buckets().plan().buckets.empty()) r.grad_dtype = zero.buckets().plan().buckets.front().dtype;
  r.bytes_grad = static_cast<double>(dtype_size(r.grad_dtype));
  r.bytes_optimizer = r.param_dtype == DType::F32 ? 8.0 : 12.0;
  int64_t largest_layer = 0;
  std::map<std::pair<int, int64_t>, int64_t> per_layer;  // stage 3: padded elements gathered per layer
  for (const GradBucket& bk : zero.buckets().plan().buckets) {
    r.psi += bk.numel;
    r.padding += bk.padded - bk.numel;
    r.largest_bucket = std::max(r.largest_bucket, bk.padded);
    per_layer[{bk.model, bk.lo_layer}] += bk.padded;
  }
  for (const auto& [k, v] : per_layer) largest_layer = std::max(largest_layer, v);
  const double psi = static_cast<double>(r.psi), pad = static_cast<double>(r.padding), N = r.dp;
  const double sp = r.stage == 3 ? N : 1.0, sg = r.stage >= 2 ? N : 1.0, so = r.stage >= 1 ? N : 1.0;
  r.formula = {r.bytes_param * psi / sp, r.bytes_grad * psi / sg, r.bytes_optimizer * psi / so};
  // Stage 0 owns [0, numel) of every bucket: its optimizer state has no padding.
  r.overhead = {r.bytes_param * pad / sp, r.bytes_grad * pad / sg, r.stage == 0 ? 0.0 : r.bytes_optimizer * pad / so};
  if (r.stage >= 2) r.transient_grads = r.bytes_grad * (psi + pad);
  if (r.stage == 3) {
    const int layers = 2 + zero.config().prefetch_layers;  // in use (a tied wte: two) + prefetched
    r.transient_params = r.bytes_param * static_cast<double>(largest_layer) * layers;
  }
  return r;
}

void log_zero_memory_report(const ZeroOptimizer& zero, DeviceType dev) {
  logger()->info("{}", zero_memory_report(zero, allocator_model_state_bytes(dev)).str());
}

void fill_zero_step_metrics(StepMetrics& r, const ZeroOptimizer& zero) {
  r.mem_formula = zero_memory_report(zero, {}).formula_fields();
  if (zero.buckets().dp().size() <= 1) return;
  const GradCommStats& st = zero.buckets().last_comm_stats();
  r.grad_comm_ms = st.comm_ms;
  r.grad_comm_exposed_ms = st.exposed_ms;
  r.grad_comm_hidden_fraction = st.hidden_fraction();
}

}  // namespace pp3d
