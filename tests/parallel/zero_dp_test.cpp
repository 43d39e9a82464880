// Run under mpirun with NP = dp (tp = pp = 1): data parallelism with ZeRO
// stages 0..3 and gradient accumulation (2 micro-batches per rank) against
// the serial model trained on the whole global batch (same process): per-step
// losses, grad norms and final weights (per tensor ||w - w_serial|| / ||w_serial||)
// within 1e-5 relative, with gradient clipping
// active and several gradient buckets; two runs of one stage bitwise equal
// (the second counting micro-batches instead of being told the last one);
// a standalone GradBucketer + AdamW (plain DDP) against serial;
// stage 3 with prefetch_layers 0/1/2 bitwise equal; the per-rank memory
// accounting of each stage (ZeRO paper, fp32); and an overflow injected on
// one rank seen by all (DynamicLossScaler::any_overflow).
// Prints what it measured on rank 0 and exits non-zero if any rank failed.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "pp3d/comm/bootstrap.h"
#include "pp3d/parallel/process_grid.h"
#include "pp3d/model/gpt.h"
#include "pp3d/parallel/zero_optimizer.h"
#include "pp3d/train/loss_scaler.h"
#include "pp3d/train/trainer_memory.h"

using namespace pp3d;

namespace {

constexpr int kSteps = 6;
constexpr int64_t kRows = 8;  // global batch rows per step
constexpr int64_t kT = 16;
constexpr float kLr = 3e-3f;
constexpr float kClip = 0.3f;
constexpr double kBucketMb = 0.1;  // ~470 KB of gradients -> 3 buckets

// AdamW eps 1e-5 rather than 1e-8: any reassociating layout changes the
// ~1e-10 noise on gradients whose exact value is 0 (e.g. the key biases), and
// with eps 1e-8 Adam turns that noise into O(lr) updates (as in tp_gpt_test).
AdamWConfig adamw_config() {
  AdamWConfig c;
  c.eps = 1e-5f;
  return c;
}

GptConfig tiny_config() {
  GptConfig c;
  c.vocab_size = 251;
  c.max_seq_len = kT;
  c.num_layers = 2;
  c.num_heads = 4;
  c.hidden_size = 64;
  return c;
}

struct Batch {
  Tensor ids, targets;
};

Batch batch_of_step(int step) {
  std::mt19937 gen(1000u + static_cast<unsigned>(step));
  std::uniform_int_distribution<int32_t> tok(0, 250);
  std::vector<int32_t> ids(kRows * kT), tgt(kRows * kT);
  for (auto& x : ids) x = tok(gen);
  for (auto& x : tgt) x = tok(gen);
  return {Tensor::from_vector_i32({kRows, kT}, ids), Tensor::from_vector_i32({kRows, kT}, tgt)};
}

struct RunResult {
  std::vector<double> losses;
  std::vector<float> norms;
  std::map<std::string, std::vector<float>> weights;
  int buckets = 0, launched_in_backward = 0, deferred = 0;
  bool comm_ok = true;  // GradCommStats consistent every step
};

RunResult run_serial(Backend& be) {
  Gpt model(tiny_config(), be);
  AdamW opt(be, model.parameters(), adamw_config());
  RunResult r;
  for (int s = 0; s < kSteps; ++s) {
    Batch b = batch_of_step(s);
    model.zero_grad();
    r.losses.push_back(model.train_step_forward_backward(b.ids, b.targets));
    r.norms.push_back(clip_grad_norm(be, model.parameters(), kClip));
    opt.step(kLr);
  }
  for (Parameter* p : model.parameters()) r.weights[p->name] = p->value.to_vector();
  return r;
}

double sum_over(Communicator& c, double x) {
  const auto hi = static_cast<float>(x);
  const auto lo = static_cast<float>(x - static_cast<double>(hi));
  Tensor mine = Tensor::from_vector({2}, {hi, lo});
  Tensor all = Tensor::zeros({2 * c.size()});
  c.all_gather(mine, all);
  const std::vector<float> v = all.to_vector();
  double s = 0.0;
  for (int r = 0; r < c.size(); ++r) s += static_cast<double>(v[2 * r]) + static_cast<double>(v[2 * r + 1]);
  return s;
}

// auto_last: the optimizer counts the micro-batches (set_micro_batches_per_step)
// instead of being told which one is last.
RunResult run_dp(Backend& be, const std::shared_ptr<Communicator>& dp, int stage, int prefetch = 1,
                 bool auto_last = false, bool overlap = true) {
  Gpt model(tiny_config(), be);
  ZeroConfig zc;
  zc.stage = stage;
  zc.bucket_mb = kBucketMb;
  zc.adamw = adamw_config();
  zc.prefetch_layers = prefetch;
  zc.overlap_comm = overlap;
  ZeroOptimizer zero(be, {&model}, dp, zc);
  if (auto_last) zero.set_micro_batches_per_step(2);
  const int64_t rows = kRows / dp->size(), mb = rows / 2, r0 = dp->rank() * rows;
  const float w = 1.0f / static_cast<float>(kRows * kT);
  RunResult r;
  for (int s = 0; s < kSteps; ++s) {
    Batch b = batch_of_step(s);
    zero.zero_grad();
    double loss = 0.0;
    for (int m = 0; m < 2; ++m) {
      const Tensor ids = b.ids.slice(r0 + m * mb, r0 + (m + 1) * mb);
      const Tensor tgt = b.targets.slice(r0 + m * mb, r0 + (m + 1) * mb);
      if (!auto_last) zero.set_last_micro_batch(m == 1);
      ActivationCache cache;
      model.forward(ids, tgt, w, cache);
      loss += cache.loss();
      model.backward(Tensor(), cache);
    }
    zero.finish_gradient_sync();
    r.launched_in_backward = zero.buckets().launched_in_backward();
    const GradCommStats& cs = zero.buckets().last_comm_stats();
    r.comm_ok = r.comm_ok && cs.reductions == zero.buckets().num_buckets() && cs.comm_ms >= 0.0 &&
                cs.exposed_ms >= 0.0 && cs.hidden_fraction() >= 0.0 && cs.hidden_fraction() <= 1.0;
    r.norms.push_back(zero.clip_grad_norm(kClip));
    zero.step(kLr);
    r.losses.push_back(sum_over(*dp, loss));
  }
  zero.gather_parameters();
  for (Parameter* p : model.parameters()) r.weights[p->name] = p->value.to_vector();
  zero.release_parameters();
  r.buckets = zero.buckets().num_buckets();
  for (const GradBucket& bk : zero.buckets().plan().buckets) r.deferred += bk.deferred ? 1 : 0;
  return r;
}

// Plain DDP: a standalone GradBucketer (its own hooks, all-reduce) + AdamW.
RunResult run_ddp(Backend& be, const std::shared_ptr<Communicator>& dp) {
  Gpt model(tiny_config(), be);
  GradBucketConfig gc;
  gc.bucket_mb = kBucketMb;
  GradBucketer buckets({&model}, dp, gc);
  AdamW opt(be, model.parameters(), adamw_config());
  const int64_t rows = kRows / dp->size(), mb = rows / 2, r0 = dp->rank() * rows;
  RunResult r;
  for (int s = 0; s < kSteps; ++s) {
    Batch b = batch_of_step(s);
    model.zero_grad();
    double loss = 0.0;
    for (int m = 0; m < 2; ++m) {
      buckets.set_last_micro_batch(m == 1);
      ActivationCache cache;
      model.forward(b.ids.slice(r0 + m * mb, r0 + (m + 1) * mb), b.targets.slice(r0 + m * mb, r0 + (m + 1) * mb),
                    1.0f / (kRows * kT), cache);
      loss += cache.loss();
      model.backward(Tensor(), cache);
    }
    buckets.finish();
    r.norms.push_back(clip_grad_norm(be, model.parameters(), kClip));
    opt.step(kLr);
    r.losses.push_back(sum_over(*dp, loss));
  }
  for (Parameter* p : model.parameters()) r.weights[p->name] = p->value.to_vector();
  r.buckets = buckets.num_buckets();
  return r;
}

// Per tensor ||a - b|| / ||b|| (L2); the max over all tensors.
double weight_rel_diff(const RunResult& a, const RunResult& b) {
  double worst = 0.0;
  for (const auto& [name, ref] : b.weights) {
    const auto it = a.weights.find(name);
    if (it == a.weights.end() || it->second.size() != ref.size()) return 1e30;
    double num = 0.0, den = 0.0;
    for (std::size_t i = 0; i < ref.size(); ++i) {
      const double d = static_cast<double>(it->second[i]) - static_cast<double>(ref[i]);
      num += d * d;
      den += static_cast<double>(ref[i]) * static_cast<double>(ref[i]);
    }
    const double r = std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
    if (std::getenv("ZERO_TEST_VERBOSE") && r > 1e-7) std::printf("  %s: rel L2 diff %.3g\n", name.c_str(), r);
    worst = std::max(worst, r);
  }
  return worst;
}

double loss_rel_diff(const RunResult& a, const RunResult& b) {
  double worst = 0.0;
  for (std::size_t i = 0; i < b.losses.size(); ++i)
    worst = std::max(worst, std::fabs(a.losses[i] - b.losses[i]) / std::fabs(b.losses[i]));
  return worst;
}

bool bitwise_equal(const RunResult& a, const RunResult& b) {
  if (a.losses != b.losses || a.weights.size() != b.weights.size()) return false;
  for (const auto& [name, w] : a.weights) {
    const auto& o = b.weights.at(name);
    if (w.size() != o.size() || std::memcmp(w.data(), o.data(), w.size() * sizeof(float)) != 0) return false;
  }
  return true;
}

struct MemSnapshot {
  double params = 0, grads = 0, optimizer = 0, comm = 0;
};

MemSnapshot mem_now() {
  auto& a = Allocator::instance();
  return {static_cast<double>(a.stats(MemCategory::Params).current),
          static_cast<double>(a.stats(MemCategory::Grads).current),
          static_cast<double>(a.stats(MemCategory::Optimizer).current),
          static_cast<double>(a.stats(MemCategory::Comm).current)};
}

// One step of `stage` with `dtype` parameters, then the per-rank bytes relative
// to the ZeRO accounting: by hand (f32: 4Ψ params, 4Ψ grads, 8Ψ optimizer) and
// through zero_memory_report (pp3d-train's report: within 5 % of formula +
// padding in every category; bf16: 2Ψ params, 12Ψ master + m + v).
void check_memory(Backend& be, const std::shared_ptr<Communicator>& dp, int stage, DType dtype,
                  std::vector<std::string>& fail, bool print) {
  const MemSnapshot base = mem_now();
  GptOptions go;
  go.param_dtype = dtype;
  Gpt model(tiny_config(), be, {}, go);
  const double psi = static_cast<double>(model.num_local_parameters()), n = dp->size();
  ZeroConfig zc;
  zc.stage = stage;
  zc.bucket_mb = kBucketMb;
  ZeroOptimizer zero(be, {&model}, dp, zc);
  Batch b = batch_of_step(0);
  const int64_t rows = kRows / dp->size();
  zero.zero_grad();
  zero.set_last_micro_batch(true);
  {
    ActivationCache cache;
    model.forward(b.ids.slice(dp->rank() * rows, (dp->rank() + 1) * rows),
                  b.targets.slice(dp->rank() * rows, (dp->rank() + 1) * rows), 1.0f / (kRows * kT), cache);
    model.backward(Tensor(), cache);
  }
  zero.finish_gradient_sync();
  zero.clip_grad_norm(kClip);
  zero.step(kLr);
  const MemSnapshot now = mem_now();
  const ModelStateBytes used{now.params - base.params, now.grads - base.grads, now.optimizer - base.optimizer};
  const ZeroMemoryReport rep = zero_memory_report(zero, used);
  const ModelStateBytes ratio = rep.ratio();
  if (print)
    std::printf("memory report stage %d dp %d %s (Psi=%.0f, formula %s): measured/formula params %.4f, grads %.4f, "
                "optimizer %.4f, total %.0f B vs %.0f B + padding %.0f B\n",
                stage, dp->size(), std::string(dtype_name(dtype)).c_str(), psi, rep.formula_text().c_str(),
                ratio.params, ratio.grads, ratio.optimizer, rep.measured.total(), rep.formula.total(),
                rep.overhead.total());
  if (rep.psi != static_cast<int64_t>(psi)) fail.push_back(fmt::format("stage {}: report psi {} != {}", stage, rep.psi, psi));
  if (!rep.within(0.05)) fail.push_back(fmt::format("stage {} {}: memory report not within 5%:\n{}", stage,
                                                    dtype_name(dtype), rep.str()));
  const double comm = now.comm - base.comm;
  if (comm != 0.0) fail.push_back(fmt::format("stage {}: {} Comm bytes live after the step", stage, comm));
  if (dtype != DType::F32) return;
  const double opt = (now.optimizer - base.optimizer) / (8.0 * psi);
  const double grads = (now.grads - base.grads) / (4.0 * psi);
  const double params = (now.params - base.params) / (4.0 * psi);
  const double sharded = 1.0 / n;
  const double want_opt = stage == 0 ? 1.0 : sharded;
  const double want_grads = stage >= 2 ? sharded : 1.0;
  const double want_params = stage == 3 ? sharded : 1.0;
  if (print)
    std::printf("memory stage %d dp %d (Psi=%.0f): optimizer %.4f x 8Psi (want %.4f), grads %.4f x 4Psi (want %.4f), "
                "params %.4f x 4Psi (want %.4f), comm %.0f B\n",
                stage, dp->size(), psi, opt, want_opt, grads, want_grads, params, want_params, comm);
  // Padding adds < N elements per bucket: allow 0.5 % above the ideal ratio.
  auto close = [](double got, double want) { return got >= want * 0.999 && got <= want * 1.005; };
  if (!close(opt, want_opt)) fail.push_back(fmt::format("stage {}: optimizer ratio {} != {}", stage, opt, want_opt));
  if (!close(grads, want_grads)) fail.push_back(fmt::format("stage {}: grads ratio {} != {}", stage, grads, want_grads));
  if (!close(params, want_params))
    fail.push_back(fmt::format("stage {}: params ratio {} != {}", stage, params, want_params));
}

// An inf injected into the last rank's gradient during accumulation reaches
// only the owner of that element after the reduction (stages 1-3); the loss
// scaler's agreement makes every rank see the overflow.
void check_overflow_agreement(Backend& be, const std::shared_ptr<Communicator>& world,
                              const std::shared_ptr<Communicator>& dp, int stage, std::vector<std::string>& fail) {
  Gpt model(tiny_config(), be);
  ZeroConfig zc;
  zc.stage = stage;
  zc.bucket_mb = kBucketMb;
  ZeroOptimizer zero(be, {&model}, dp, zc);
  Batch b = batch_of_step(0);
  const int64_t rows = kRows / dp->size(), mb = rows / 2, r0 = dp->rank() * rows;
  zero.zero_grad();
  for (int m = 0; m < 2; ++m) {
    zero.set_last_micro_batch(m == 1);
    ActivationCache cache;
    model.forward(b.ids.slice(r0 + m * mb, r0 + (m + 1) * mb), b.targets.slice(r0 + m * mb, r0 + (m + 1) * mb),
                  1.0f / (kRows * kT), cache);
    model.backward(Tensor(), cache);
    if (m == 0 && dp->rank() == dp->size() - 1)
      model.find_parameter("wpe")->grad.data<float>()[3] = std::numeric_limits<float>::infinity();
  }
  zero.finish_gradient_sync();
  const bool local = zero.local_grads_nonfinite();
  const bool any = DynamicLossScaler::any_overflow(local, world.get());
  if (!any) fail.push_back(fmt::format("stage {}: the injected inf was not seen by every rank", stage));
  // Exactly one rank owns wpe[3] in stages 1-3; every rank holds it in stage 0.
  Tensor count = Tensor::from_vector_i32({1}, {local ? 1 : 0});
  dp->all_reduce(count, ReduceOp::Sum);
  const int want = stage == 0 ? dp->size() : 1;
  if (count.data<int32_t>()[0] != want)
    fail.push_back(fmt::format("stage {}: {} ranks see the inf locally, expected {}", stage, count.data<int32_t>()[0],
                               want));
  if (DynamicLossScaler::any_overflow(false, world.get())) fail.push_back("any_overflow(false) returned true");
}

}  // namespace

int main() {
  auto world = init_world();
  ProcessGrid grid(world, 1, 1);
  const auto& dp = grid.dp_group();
  const bool root = world->rank() == 0;
  std::vector<std::string> fail;
  try {
    auto be = make_cpu_backend();
    PP3D_CHECK(kRows % (2 * dp->size()) == 0, "dp {} must divide {} rows into 2 micro-batches", dp->size(), kRows);
    for (DType dt : {DType::F32, DType::BF16})
      for (int stage = 0; stage <= 3; ++stage) check_memory(*be, dp, stage, dt, fail, root);

    for (int stage = 0; stage <= 3; ++stage) check_overflow_agreement(*be, world, dp, stage, fail);

    const RunResult serial = run_serial(*be);
    int clipped = 0;
    for (float nrm : serial.norms) clipped += nrm > kClip ? 1 : 0;
    if (clipped < kSteps / 2) fail.push_back(fmt::format("clipping active in only {} of {} steps", clipped, kSteps));
    {
      const RunResult d = run_ddp(*be, dp);
      const double dl = loss_rel_diff(d, serial), dw = weight_rel_diff(d, serial);
      if (root) std::printf("dp %d GradBucketer+AdamW (DDP): loss rel diff %.3g, weight rel diff %.3g\n", dp->size(), dl, dw);
      if (!(dl <= 1e-5 && dw <= 1e-5)) fail.push_back(fmt::format("DDP differs from serial: loss {} weights {}", dl, dw));
    }
    RunResult stage0;
    for (int stage = 0; stage <= 3; ++stage) {
      const RunResult a = run_dp(*be, dp, stage);
      const RunResult b = run_dp(*be, dp, stage, 1, /*auto_last=*/true);
      const double dl = loss_rel_diff(a, serial), dw = weight_rel_diff(a, serial);
      double dn = 0.0;
      for (int s = 0; s < kSteps; ++s) dn = std::max(dn, std::fabs(double(a.norms[s]) - serial.norms[s]) / serial.norms[s]);
      if (root)
        std::printf("dp %d stage %d: %d buckets (%d reduced during backward), loss rel diff %.3g, weight rel diff "
                    "%.3g, grad-norm rel diff %.3g, bitwise rerun (counted micro-batches) %s\n",
                    dp->size(), stage, a.buckets, a.launched_in_backward, dl, dw, dn,
                    bitwise_equal(a, b) ? "yes" : "NO");
      if (a.buckets < 3) fail.push_back(fmt::format("stage {}: only {} buckets", stage, a.buckets));
      if (a.launched_in_backward != a.buckets - a.deferred)
        fail.push_back(fmt::format("stage {}: {} of {} buckets reduced during backward", stage,
                                   a.launched_in_backward, a.buckets));
      if (!(dl <= 1e-5)) fail.push_back(fmt::format("stage {}: loss differs from serial by {}", stage, dl));
      if (!(dw <= 1e-5)) fail.push_back(fmt::format("stage {}: weights differ from serial by {}", stage, dw));
      if (!(dn <= 1e-5)) fail.push_back(fmt::format("stage {}: grad norm differs from serial by {}", stage, dn));
      if (!bitwise_equal(a, b)) fail.push_back(fmt::format("stage {}: two runs are not bitwise equal", stage));
      if (!a.comm_ok) fail.push_back(fmt::format("stage {}: inconsistent GradCommStats", stage));
      {  // overlap off (every reduction started in finish): same sums, only later
        const RunResult off = run_dp(*be, dp, stage, 1, false, /*overlap=*/false);
        if (!bitwise_equal(off, a)) fail.push_back(fmt::format("stage {}: overlap off differs from overlap on", stage));
        if (off.launched_in_backward != 0)
          fail.push_back(fmt::format("stage {}: overlap off launched {} reductions in backward", stage,
                                     off.launched_in_backward));
      }
      if (stage == 3) {  // prefetching changes only the timing of the gathers
        for (int pf : {0, 2})
          if (!bitwise_equal(run_dp(*be, dp, stage, pf), a))
            fail.push_back(fmt::format("stage 3 with prefetch_layers {} differs from prefetch 1", pf));
      }
      if (stage == 0) stage0 = a;
      else if (!(weight_rel_diff(a, stage0) <= 1e-5 && loss_rel_diff(a, stage0) <= 1e-5))
        fail.push_back(fmt::format("stage {}: differs from stage 0", stage));
    }
  } catch (const std::exception& e) {
    fail.push_back(e.what());
  }
  for (const auto& f : fail) std::fprintf(stderr, "[rank %d] FAIL: %s\n", world->rank(), f.c_str());
  Tensor bad = Tensor::from_vector_i32({1}, {fail.empty() ? 0 : 1});
  world->all_reduce(bad, ReduceOp::Max);
  const bool ok = bad.data<int32_t>()[0] == 0;
  if (root) std::printf("%s\n", ok ? "zero_dp_test: OK" : "zero_dp_test: FAILED");
  return ok ? 0 : 1;
}
