// Run under mpirun: the Trainer in a parallel layout (TP x PP x DP/ZeRO, given
// as pp3d-train flags in argv) against the serial Trainer (LocalCommunicator,
// dp = tp = pp = 1) in the same process, on the embedded corpus (DESIGN.md §1):
// per-step losses (from the parallel run's metrics.jsonl, written by rank 0
// only) and grad norms, the final validation loss, the final weights (gathered
// over TP/PP/ZeRO-3 onto rank 0; attention key biases, whose true gradient is
// zero, bounded separately), the loss agreeing on every rank, the metrics
// fields, (pp > 1) the merged Chrome trace, and the run's mid-run checkpoint
// (step max_steps / 2) resumed by the serial trainer continuing the serial losses; the rank's
// model-state memory at start (allocator) against the ZeRO formulas within 5 %
// plus the stated padding (every rank), the formula and the gradient-overlap
// fields of metrics.jsonl. `--zero-stage 0,1,2,3` runs the layout once per
// stage in this one process (one serial reference, one mpirun start-up).
// `--arch llama` (with --num-kv-heads, --tied-embeddings) runs the same checks
// on pp3d::Llama through the same Trainer (issue 16).
// Prints the measured worst differences on rank 0; exits non-zero if any rank failed.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "parallel/tp_test_util.h"
#include "pp3d/comm/bootstrap.h"
#include "pp3d/comm/collectives_util.h"
#include "pp3d/comm/local_communicator.h"
#include "pp3d/core/error.h"
#include "pp3d/parallel/zero_optimizer.h"
#include "pp3d/train/trainer.h"
#include "pp3d/train/trainer_memory.h"

using namespace pp3d;
using pp3d::tptest::failures;
namespace fs = std::filesystem;

namespace {

double rel(double a, double b) { return std::fabs(a - b) / std::max(std::fabs(b), 1e-30); }

// The tiny run of the proof: L4 C64 H4 T16, byte vocabulary, global batch 8, 20 steps.
TrainConfig tiny_run() {
  TrainConfig c;
  c.num_layers = 4;
  c.hidden_size = 64;
  c.num_heads = 4;
  c.seq_len = 16;
  c.micro_batch_size = 2;
  c.global_batch_size = 8;
  c.max_steps = 20;
  c.warmup_steps = 4;
  c.lr = 3e-3f;
  c.min_lr = 3e-4f;
  c.adam_eps = 1e-8f;
  c.grad_clip = 1.0f;  // active: the norms are above 1 early on
  c.eval_interval = 0;
  c.eval_batches = 4;
  c.quiet = true;
  return c;
}

// fp32 bound on each tensor's relative L2 distance to the serial weights after
// 20 steps (--weight-tol; the ZeRO matrix registrations ask for the 1e-5).
double g_weight_tol = 1e-4;
// Overrides of the 16-bit bounds (--loss-tol, --norm-tol, --weight-tol given with
// --bf16/--fp16), for 16-bit gradients (--grad-dtype param); < 0: the defaults below.
double g_loss_tol = -1, g_norm_tol = -1;
bool g_weight_tol_given = false;

// The layout flags of argv (pp3d-train spelling); --zero-stage takes a list "0,1,2,3".
void apply_args(TrainConfig& c, std::vector<int>& stages, int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      PP3D_CHECK(i + 1 < argc, "{} needs a value", a);
      return argv[++i];
    };
    if (a == "--tp") c.tp = std::stoi(next());
    else if (a == "--pp") c.pp = std::stoi(next());
    else if (a == "--zero-stage") {
      stages.clear();
      std::string v = next();
      for (std::size_t p = 0; p <= v.size();) {
        const std::size_t q = std::min(v.find(',', p), v.size());
        stages.push_back(std::stoi(v.substr(p, q - p)));
        p = q + 1;
      }
    }
    else if (a == "--global-batch-size") c.global_batch_size = std::stoll(next());
    else if (a == "--schedule") c.schedule = next();
    else if (a == "--virtual-stages") c.virtual_stages = std::stoi(next());
    else if (a == "--num-layers") c.num_layers = std::stoll(next());
    else if (a == "--hidden-size") c.hidden_size = std::stoll(next());
    else if (a == "--weight-tol") g_weight_tol = std::stod(next()), g_weight_tol_given = true;
    else if (a == "--loss-tol") g_loss_tol = std::stod(next());
    else if (a == "--norm-tol") g_norm_tol = std::stod(next());
    else if (a == "--grad-dtype") c.grad_dtype = next();  // the serial reference uses it too
    else if (a == "--activation-dtype") c.activation_dtype = next();  // likewise
    else if (a == "--compute-dtype") c.compute_dtype = next();        // likewise
    else if (a == "--batch-size") c.micro_batch_size = std::stoll(next());
    else if (a == "--sequence-parallel") c.sequence_parallel = true;
    else if (a == "--bucket-size-mb") c.bucket_size_mb = std::stod(next());
    else if (a == "--arch") c.arch = next();  // llama: the same checks for pp3d::Llama
    else if (a == "--num-kv-heads") c.num_kv_heads = std::stoll(next());
    else if (a == "--tied-embeddings") c.tied_embeddings = true;
    else if (a == "--max-steps") c.max_steps = std::stoll(next());
    else if (a == "--bf16") c.bf16 = true;  // the serial reference is bf16 too
    else if (a == "--fp16") c.fp16 = true;
    else PP3D_CHECK(false, "unknown argument '{}'", a);
  }
}

std::map<std::string, std::vector<float>> by_name(const std::vector<Parameter>& ps) {
  std::map<std::string, std::vector<float>> m;
  for (const Parameter& p : ps) m[p.name] = p.value.to_vector();
  return m;
}

double rel_l2(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}


struct SerialRun {
  TrainConfig cfg;
  std::vector<double> loss;
  std::vector<float> norm;
  double val = 0;
  std::map<std::string, std::vector<float>> w;
};

// The parallel run of `par` (one ZeRO stage) against the serial run; failures go to TP_EXPECT.
void check_layout(const std::shared_ptr<Communicator>& world, TrainConfig par, const SerialRun& ser) {
  const int rank = world->rank();
  // One output directory for all ranks (checkpoints are written by every rank).
  const double pid0 = broadcast_double(*world, static_cast<double>(getpid()), 0);
  const std::string dir = (fs::temp_directory_path() / fmt::format("pp3d_trainer3d_{}_z{}", pid0, par.zero_stage)).string();
  par.output_dir = dir;
  par.save_interval = par.max_steps / 2;  // checkpoint-10 and checkpoint-20 (of the default 20 steps)
  if (par.pp > 1) par.trace = dir + "/trace.json";
  const ModelStateBytes base = allocator_model_state_bytes();
  Trainer t(par, world);
  const ParallelLayout& L = t.layout();
  const std::string what = (par.is_llama() ? fmt::format("llama (kv heads {}, {}) ", t.model_config().kv_heads(),
                                                         par.tied() ? "tied" : "untied") : std::string()) +
                           fmt::format("tp{} pp{} dp{} zero{} {} v{}{}", L.tp, L.pp, L.dp, par.zero_stage,
                                       par.schedule, par.virtual_stages, par.sequence_parallel ? " sp" : "") +
                           (par.bf16 ? " bf16" : par.fp16 ? " fp16" : "") +
                           (par.grad_dtype == "param" ? " 16-bit grads" : "") +
                           (par.activation_dtype == "param" ? " 16-bit activations" : "") +
                           (par.compute16() ? " 16-bit GEMMs" : "");
  // Model-state memory of this rank at start vs the ZeRO formulas (+ padding), on every rank.
  ModelStateBytes used = allocator_model_state_bytes();
  used.params -= base.params, used.grads -= base.grads, used.optimizer -= base.optimizer;
  const ZeroMemoryReport mem = zero_memory_report(t.optimizer(), used);
  TP_EXPECT(mem.within(0.05), "{} rank {}: memory not within 5% of formula + padding:\n{}", what, rank, mem.str());
  TP_EXPECT(mem.stage == par.zero_stage && mem.dp == L.dp && mem.psi > 0, "{}: report stage {} dp {} psi {}", what,
            mem.stage, mem.dp, mem.psi);
  // 16-bit gradients: the ZeRO paper's 16Ψ family (2 B per gradient element).
  const double want_bg = par.grad_dtype == "param" ? 2.0 : 4.0;
  TP_EXPECT(mem.bytes_grad == want_bg, "{}: the memory report counts {} B per gradient, want {}", what,
            mem.bytes_grad, want_bg);
  const ModelStateBytes ratio = mem.ratio();
  const double worst_mem = std::max({std::fabs(ratio.params - 1), std::fabs(ratio.grads - 1),
                                     std::fabs(ratio.optimizer - 1)});
  double mem_max = 0;
  for (double x : all_gather_double(*world, worst_mem)) mem_max = std::max(mem_max, x);
  // 16-bit parameters: the f32 masters agree to summation order, but a master on a
  // rounding boundary can round to the neighbouring 16-bit value (one ulp, 2^-8
  // relative for bf16), so the bounds are those of a few flipped elements.
  const bool half = par.bf16 || par.fp16;
  double loss_tol = half ? 2e-3 : 1e-5, norm_tol = half ? 1e-2 : 1e-4, w_tol = half ? 1e-2 : g_weight_tol;
  if (g_loss_tol >= 0) loss_tol = g_loss_tol;
  if (g_norm_tol >= 0) norm_tol = g_norm_tol;
  if (half && g_weight_tol_given) w_tol = g_weight_tol;
  TP_EXPECT(L.world == world->size() && L.micro_batch == par.micro_batch_size, "{}: layout {}", what, L.str());
  const StepMetrics last = t.run();
  // Every rank got the global loss of the last step (bitwise, since it is broadcast / exactly summed).
  for (double x : all_gather_double(*world, last.loss))
    TP_EXPECT(x == last.loss, "{}: ranks disagree on the last loss ({} vs {})", what, x, last.loss);
  TP_EXPECT(last.val_loss.has_value(), "{}: no validation after the last step", what);
  const double val = last.val_loss.value_or(NAN);
  TP_EXPECT(rel(val, ser.val) <= loss_tol, "{}: val loss {} vs serial {}", what, val, ser.val);
  const std::vector<Parameter> full = t.gather_full_parameters();
  // The parallel run's checkpoint of step 10 resumed by the serial trainer
  // (another layout) continues the serial run.
  world->barrier();
  double worst_resume = 0;
  {
    TrainConfig r = ser.cfg;
    const int64_t saved = par.save_interval;
    r.resume_from = fmt::format("{}/checkpoint-{}", dir, saved);
    Trainer rt(r, std::make_shared<LocalCommunicator>("serial", rank));
    TP_EXPECT(rt.step() == saved, "{}: resumed at step {}", what, rt.step());
    for (int64_t s = saved; s < ser.cfg.max_steps; ++s) {
      const double loss = rt.train_step().loss, want = ser.loss[static_cast<std::size_t>(s)];
      worst_resume = std::max(worst_resume, rel(loss, want));
      TP_EXPECT(rel(loss, want) <= loss_tol, "{}: resumed step {} loss {} vs serial {}", what, s + 1, loss, want);
    }
  }
  world->barrier();

  double worst_loss = 0, worst_norm = 0, worst_w = 0, worst_key_bias = 0, hidden_sum = 0;
  int hidden_n = 0;
  std::string worst_w_name;
  if (rank == 0) {
    std::ifstream in(dir + "/metrics.jsonl");
    std::string line;
    int s = 0;
    for (; std::getline(in, line); ++s) {
      const auto j = nlohmann::json::parse(line);
      if (s >= par.max_steps) break;
      const double loss = j.at("loss").get<double>(), norm = j.at("grad_norm").get<double>();
      const double sl = ser.loss[static_cast<std::size_t>(s)], sn = ser.norm[static_cast<std::size_t>(s)];
      worst_loss = std::max(worst_loss, rel(loss, sl));
      worst_norm = std::max(worst_norm, rel(norm, sn));
      TP_EXPECT(rel(loss, sl) <= loss_tol, "{} step {}: loss {} vs serial {}", what, s + 1, loss, sl);
      TP_EXPECT(rel(norm, sn) <= norm_tol, "{} step {}: grad norm {} vs serial {}", what, s + 1, norm, sn);
      TP_EXPECT(j.contains("loss_scale") == (par.bf16 || par.fp16), "{}: loss_scale field {}", what, line);
      TP_EXPECT(j.at("dp") == L.dp && j.at("tp") == L.tp && j.at("pp") == L.pp, "{}: layout fields {}", what, line);
      TP_EXPECT(j.contains("mem_bytes") && j["mem_bytes"].at("params").get<double>() > 0, "{}: no memory", what);
      TP_EXPECT(j.contains("theoretical_bubble") == (L.pp > 1), "{}: bubble fields {}", what, line);
      // The formula fields are rank 0's report's.
      TP_EXPECT(j.contains("mem_formula_bytes") && j["mem_formula_bytes"].at("total").get<double>() ==
                    mem.formula.total() && j["mem_formula_bytes"].at("psi").get<double>() == double(mem.psi),
                "{}: mem_formula_bytes {} vs report total {}", what, line, mem.formula.total());
      TP_EXPECT(j.contains("grad_comm_hidden_fraction") == (L.dp > 1), "{}: overlap field {}", what, line);
      if (j.contains("grad_comm_hidden_fraction")) {
        const double h = j["grad_comm_hidden_fraction"].get<double>();
        TP_EXPECT(h >= 0.0 && h <= 1.0 && j.at("grad_comm_exposed_ms").get<double>() >= 0.0, "{}: overlap {}", what,
                  line);
        hidden_sum += h, ++hidden_n;
      }
    }
    TP_EXPECT(s == par.max_steps, "{}: metrics.jsonl has {} lines, want {}", what, s, par.max_steps);
    const auto w = by_name(full);
    TP_EXPECT(w.size() == ser.w.size(), "{}: gathered {} tensors, the serial model has {}", what, w.size(),
              ser.w.size());
    for (const auto& [name, b] : ser.w) {
      auto it = w.find(name);
      TP_EXPECT(it != w.end(), "{}: {} not gathered", what, name);
      if (it == w.end()) continue;
      std::vector<float> a = it->second, bb = b;
      TP_EXPECT(a.size() == bb.size(), "{}: {} has {} elements, want {}", what, name, a.size(), bb.size());
      if (a.size() != bb.size()) continue;
      if (name.find("attn.c_attn.bias") != std::string::npos) {
        // The key bias has an exactly zero gradient (softmax is shift-invariant):
        // its computed gradient is rounding noise that AdamW (eps 1e-8) turns into
        // O(lr) steps whose direction depends on summation order. It cannot change
        // the loss; compare q and v here. The key part (0 at init) only has to stay
        // inside AdamW's step envelope (each step moves an element by about lr at most).
        const auto C = static_cast<std::ptrdiff_t>(par.hidden_size);
        double dk = 0;
        for (std::ptrdiff_t i = C; i < 2 * C; ++i) dk = std::max(dk, double(std::fabs(a[i] - bb[i])));
        worst_key_bias = std::max(worst_key_bias, dk);
        TP_EXPECT(dk <= 2.0 * par.lr * par.max_steps, "{}: key bias of {} is {} away from serial", what, name, dk);
        a.erase(a.begin() + C, a.begin() + 2 * C);
        bb.erase(bb.begin() + C, bb.begin() + 2 * C);
      }
      const double d = rel_l2(a, bb);
      if (d > worst_w) worst_w = d, worst_w_name = name;
      TP_EXPECT(d <= w_tol, "{}: {} differs from serial after {} steps (relative L2 {})", what, name, par.max_steps, d);
    }
    if (par.pp > 1) {
      std::ifstream tf(par.trace);
      TP_EXPECT(tf.good(), "{}: no trace at {}", what, par.trace);
      if (tf.good()) {
        const auto tr = nlohmann::json::parse(tf);
        std::set<int> pids;
        for (const auto& e : tr.at("traceEvents")) pids.insert(e.at("pid").get<int>());
        TP_EXPECT(static_cast<int>(pids.size()) == L.pp, "{}: trace holds {} pipeline ranks, want {}", what,
                  pids.size(), L.pp);
      }
    }
    std::printf("%s: worst relative differences vs serial over %lld steps: loss %.3g, grad norm %.3g, val loss "
                "%.3g, weights %.3g (%s; max abs diff of the attention key biases %.3g); serial resumed from the "
                "mid-run checkpoint: loss %.3g; memory at start (worst rank, worst category) |measured/formula - 1| "
                "= %.4f, rank 0 total %.0f B vs formula %s = %.0f B + padding %.0f B; grad comm hidden %s\n",
                what.c_str(), static_cast<long long>(par.max_steps), worst_loss, worst_norm, rel(val, ser.val),
                worst_w, worst_w_name.c_str(), worst_key_bias, worst_resume, mem_max, mem.measured.total(),
                mem.formula_text().c_str(), mem.formula.total(), mem.overhead.total(),
                hidden_n ? fmt::format("{:.2f} (mean of {} steps)", hidden_sum / hidden_n, hidden_n).c_str() : "-");
    std::fflush(stdout);
    fs::remove_all(dir);
  } else {
    TP_EXPECT(full.empty(), "{}: rank {} got gathered parameters", what, rank);
  }
}

}  // namespace

int main(int argc, char** argv) {
  auto world = init_world();
  const int rank = world->rank();
  TrainConfig par = tiny_run();
  std::vector<int> stages{0};
  try {
    apply_args(par, stages, argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  }
  // Serial reference: same model, data, seed and micro-batch rows (so the
  // validation batches are the same); the whole global batch on one rank.
  SerialRun ser;
  ser.cfg = par;
  ser.cfg.tp = ser.cfg.pp = ser.cfg.virtual_stages = 1;
  ser.cfg.schedule = "1f1b";
  ser.cfg.sequence_parallel = false;
  ser.cfg.zero_stage = 0;
  {
    Trainer t(ser.cfg, std::make_shared<LocalCommunicator>("serial", rank));
    for (int s = 0; s < ser.cfg.max_steps; ++s) {
      const StepMetrics m = t.train_step();
      ser.loss.push_back(m.loss);
      ser.norm.push_back(m.grad_norm);
    }
    ser.val = t.evaluate();
    ser.w = by_name(t.gather_full_parameters());
  }
  for (int stage : stages) {
    par.zero_stage = stage;
    try {
      check_layout(world, par, ser);
    } catch (const std::exception& e) {
      TP_EXPECT(false, "zero stage {}: {}", stage, e.what());
      break;  // the collectives of the ranks are no longer in step
    }
  }
  const int rc = pp3d::tptest::finish(*world, "trainer_3d_test");
  finalize_world();
  return rc;
}
