// pp3d-train's run in planner terms and the automatic layout choice
// (include/pp3d/plan/auto_layout.h).
#include "pp3d/plan/auto_layout.h"

#include <algorithm>
#include <filesystem>

#include <fmt/format.h>

#include "pp3d/core/error.h"
#include "pp3d/core/user_error.h"
#include "pp3d/train/interop.h"
#include "plan/plan_detail.h"

namespace pp3d {
namespace {

bool has_bin(const std::filesystem::path& p) { return p.extension() == ".bin"; }

// The vocabulary of c.data as the trainer's loader reports it (load_dataset).
int64_t data_vocab(const std::string& data) {
  namespace fs = std::filesystem;
  if (data.empty() || data == "synthetic") return 256;
  const fs::path p(data);
  bool shards = has_bin(p);
  std::error_code ec;
  if (fs::is_directory(p, ec))
    for (const auto& f : fs::directory_iterator(p, ec)) shards = shards || has_bin(f.path());
  return shards ? GptConfig{}.vocab_size : 256;  // llm.c shards: GPT-2's vocabulary
}

Schedule schedule_of(const std::string& s) {
  if (s == "gpipe") return Schedule::GPipe;
  if (s == "interleaved") return Schedule::Interleaved;
  if (s == "zb-h1") return Schedule::ZeroBubbleH1;
  return Schedule::OneFOneB;
}

std::string describe(const Candidate& c) {
  const Layout& l = c.layout;
  const int64_t m = c.time.num_micro_batches;
  std::string sched = l.pp > 1 ? fmt::format(" {}", schedule_name(l.schedule)) : std::string();
  if (l.schedule == Schedule::Interleaved) sched += fmt::format(" v {}", l.virtual_stages);
  return fmt::format("tp {} pp {} dp {} zero {} micro-batches {} of {} rows{}{}{} (predicted {:.4g} tok/s, "
                     "{:.3g} GB/rank)", l.tp, l.pp, l.dp, l.zero_stage, m, l.micro_batch, sched,
                     l.sequence_parallel ? " sp" : "", l.recompute == Recompute::Full ? " recompute" : "",
                     c.time.tokens_per_s, c.memory.total() / 1e9);
}

ModelOptions trainer_options(const TrainConfig& c) {
  ModelOptions o;
  o.flash_attention = true;  // pp3d's attention keeps the log-sum-exp, never the s x s scores
  o.dropout = false;
  o.bucket_bytes = c.bucket_size_mb * 1e6;
  o.workspace_bytes = 0;
  o.pp3d_accounting = true;
  o.prefetch_layers = c.prefetch_layers;
  return o;
}

// The trainer's dtypes (--bf16/--fp16, --compute-dtype, --activation-dtype, --grad-dtype).
Precision trainer_precision(const TrainConfig& c) {
  return Precision::pp3d(c.bf16 || c.fp16, c.compute16(), c.activation_dtype == "param", c.grad_dtype == "param");
}

// The global batch an automatic layout keeps fixed.
int64_t auto_global_batch(const TrainConfig& c, int world_size) {
  return c.global_batch_size > 0 ? c.global_batch_size
                                 : c.micro_batch_size * std::max<int64_t>(1, c.micro_batches) * world_size;
}

}  // namespace

GptConfig trainer_model_config(const TrainConfig& c, int tp) {
  PP3D_CHECK(tp >= 1, "trainer_model_config: tp must be >= 1, got {}", tp);
  GptConfig mc = model_description(c);  // arch gpt2 or llama, as the Trainer builds it
  if (c.init_from.empty()) mc.vocab_size = c.vocab_size > 0 ? c.vocab_size : data_vocab(c.data);
  if (mc.padded_vocab_size == 0 && mc.padded_vocab() % tp != 0) mc.padded_vocab_size = round_up_vocab(mc.vocab_size, 64 * tp);
  return mc;
}

TrainerPlan trainer_plan(const TrainConfig& c, int world_size) {
  const ParallelLayout pl = c.resolve_layout(world_size);
  TrainerPlan p;
  p.model = trainer_model_config(c, c.tp);
  Layout& l = p.layout;
  l.tp = c.tp;
  l.pp = c.pp;
  l.dp = pl.dp;
  l.zero_stage = c.zero_stage;
  l.micro_batch = pl.micro_batch;
  l.schedule = schedule_of(c.schedule);
  l.virtual_stages = c.virtual_stages;
  l.recompute = c.recompute ? Recompute::Full : Recompute::None;
  l.sequence_parallel = c.sequence_parallel && c.tp > 1;
  l.uneven_pp = p.model.num_layers % c.pp != 0;
  p.work.global_batch = pl.global_batch;
  p.work.seq_len = c.seq_len;
  p.precision = trainer_precision(c);
  p.options = trainer_options(c);
  return p;
}

Cluster cpu_ranks_cluster(int ranks) {
  PP3D_CHECK(ranks >= 1, "cpu_ranks_cluster: ranks must be >= 1, got {}", ranks);
  Cluster c = cluster_preset("cpu", ranks);
  c.gpu.name = fmt::format("CPU rank (1/{} of the cpu preset)", ranks);
  c.gpu.peak_flops /= ranks;
  c.gpu.fp32_peak_flops /= ranks;
  c.gpu.hbm_bw /= ranks;
  c.gpu.memory_bytes /= ranks;
  c.validate();
  return c;
}

Cluster trainer_cluster(bool cuda, int world_size, const std::string& gpu) {
  if (!cuda) return cpu_ranks_cluster(world_size);
  return cluster_preset(gpu.empty() ? "h100" : gpu, std::min(world_size, 8));
}

std::vector<Candidate> rank_trainer_layouts(const TrainConfig& c, int world_size, const Cluster& cluster,
                                            const AutoLayoutRequest& what, int64_t* considered) {
  PP3D_CHECK(world_size >= 1, "auto layout: world size must be >= 1, got {}", world_size);
  PP3D_REQUIRE(what.tp || c.tp >= 1, "--tp must be >= 1 or auto, got {}", c.tp);
  PP3D_REQUIRE(what.pp || c.pp >= 1, "--pp must be >= 1 or auto, got {}", c.pp);
  PP3D_REQUIRE(what.zero || (c.zero_stage >= 0 && c.zero_stage <= 3), "--zero-stage must be 0..3 or auto, got {}",
               c.zero_stage);
  PP3D_REQUIRE(c.micro_batch_size >= 1, "--batch-size must be >= 1, got {}", c.micro_batch_size);
  PP3D_REQUIRE(!what.schedule || c.virtual_stages == 1,
               "--schedule auto chooses between 1f1b and zb-h1 (one model chunk per rank): drop --virtual-stages {}",
               c.virtual_stages);
  const int64_t G = auto_global_batch(c, world_size);
  int64_t count = 0;
  std::vector<Candidate> out;
  for (int tp = 1; tp <= world_size; ++tp) {
    if (world_size % tp != 0 || (!what.tp && tp != c.tp)) continue;
    for (int pp = 1; pp <= world_size / tp; ++pp) {
      if ((world_size / tp) % pp != 0 || (!what.pp && pp != c.pp)) continue;
      const int dp = world_size / (tp * pp);
      TrainConfig t = c;
      t.tp = tp, t.pp = pp, t.zero_stage = 0, t.global_batch_size = G, t.micro_batches = 0;
      if (pp == 1 || what.schedule) t.schedule = "1f1b", t.virtual_stages = 1;
      std::vector<Schedule> schedules = {schedule_of(t.schedule)};
      if (what.schedule && pp > 1) schedules.push_back(Schedule::ZeroBubbleH1);
      const GptConfig model = trainer_model_config(t, tp);
      if (model.num_layers % pp != 0 || G % dp != 0) continue;  // even pipeline splits only
      PlanRequest req;
      req.gpus = world_size;
      req.work = {G, c.seq_len};
      req.precision = trainer_precision(c);
      req.options = trainer_options(c);
      const Planner planner(model, cluster, req);
      for (int zero = 0; zero <= 3; ++zero) {
        if (what.zero ? (zero > 0 && dp == 1) : zero != c.zero_stage) continue;
        std::vector<int64_t> mbs;  // rows per micro-batch: --micro-batches fixes it, else powers of two
        if (c.micro_batches > 0) {
          if ((G / dp) % c.micro_batches == 0) mbs.push_back(G / dp / c.micro_batches);
        } else {
          for (int64_t mb = 1; mb <= std::min(c.micro_batch_size, G / dp); mb *= 2)
            if ((G / dp) % mb == 0) mbs.push_back(mb);
        }
        for (const int64_t mb : mbs)
          for (const Schedule sched : schedules) {
            Layout l;
            l.tp = tp, l.pp = pp, l.dp = dp, l.zero_stage = zero, l.micro_batch = mb;
            l.schedule = sched;
            l.virtual_stages = t.virtual_stages;
            l.recompute = c.recompute ? Recompute::Full : Recompute::None;
            l.sequence_parallel = c.sequence_parallel && tp > 1;
            ++count;
            if (!check_layout(model, l, cluster, req).empty()) continue;
            Candidate cand = planner.evaluate(l);
            if (!planner.memory_verdict(cand.memory).empty()) continue;
            out.push_back(std::move(cand));
          }
      }
    }
  }
  std::stable_sort(out.begin(), out.end(), [](const Candidate& a, const Candidate& b) {
    if (a.time.tokens_per_s != b.time.tokens_per_s) return a.time.tokens_per_s > b.time.tokens_per_s;
    return a.memory.total() < b.memory.total();
  });
  if (considered != nullptr) *considered = count;
  return out;
}

AutoLayoutChoice resolve_auto_layout(TrainConfig& c, int world_size, const Cluster& cluster,
                                     const AutoLayoutRequest& what) {
  AutoLayoutChoice r;
  std::vector<Candidate> ranked = rank_trainer_layouts(c, world_size, cluster, what, &r.considered);
  PP3D_REQUIRE(!ranked.empty(), "auto layout: none of the {} layouts the trainer supports for {} rank(s) fits in {:.3g} "
               "GB per rank (or divides the model and batch); give --tp/--pp/--zero-stage explicitly, lower "
               "--batch-size, or add --recompute", r.considered, world_size, cluster.gpu.memory_bytes / 1e9);
  r.feasible = static_cast<int64_t>(ranked.size());
  r.best = ranked[0];
  if (ranked.size() > 1) r.runner_up = ranked[1];
  const Layout& l = r.best.layout;
  const int64_t G = auto_global_batch(c, world_size);
  c.tp = l.tp;
  c.pp = l.pp;
  c.zero_stage = l.zero_stage;
  c.global_batch_size = G;
  c.micro_batch_size = l.micro_batch;
  c.micro_batches = 0;
  if (what.schedule) c.schedule = schedule_name(l.schedule);
  if (l.pp == 1) c.schedule = "1f1b", c.virtual_stages = 1;
  r.summary = fmt::format("auto layout: {}; runner-up: {} ({} layouts considered, {} fit)", describe(r.best),
                          r.runner_up ? describe(*r.runner_up) : std::string("none"), r.considered, r.feasible);
  c.validate(world_size);
  return r;
}

}  // namespace pp3d
