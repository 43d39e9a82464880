// Run under mpirun -n 2 (1- and 2-rank layouts) or -n 8 (3D layouts): the planner's memory model for a Llama (arch llama,
// pp3d accounting) against pp3d's allocator. For each layout a tiny pp3d::Llama
// (GQA: 4 heads / 2 kv heads, SwiGLU, untied head; one tied case) trains two
// steps the way pp3d-train --arch llama does (PipelineStage + ZeroOptimizer,
// lib/train/trainer_model.cpp) on the ranks it needs; the second
// step's allocator peaks per category (reset at the start of the step) are
// compared on every rank with predict_stage_memory() for that rank's pipeline
// stage. Params, grads, optimizer state and activations must agree within 5%,
// the tolerance of the GPT cases (planner_alloc_test.cpp); comm and workspace
// are printed only. Rank 0 prints the table. Precision: f32, or bf16
// parameters with 16-bit compute, 16-bit storage, or both, or 16-bit gradients (Mixed). (zb-h1
// with sequence parallelism is not a Llama layout for the planner, see
// layout_check.cpp.)
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "parallel/planner_alloc_util.h"
#include "pp3d/pp3d.h"
#include "pp3d/model/llama.h"
#include "pp3d/plan/model_file.h"
#include "pp3d/plan/planner.h"

using namespace pp3d;
using namespace pp3d::alloctest;

namespace {

constexpr int64_t kSeq = 32, kGlobalBatch = 8;

// Precision, as pp3d-train --arch llama runs it: f32; --bf16 (16-bit compute,
// compute_dtype auto); --bf16 --activation-dtype param (16-bit storage too);
// --bf16 --compute-dtype f32 --activation-dtype param; --bf16 --grad-dtype param
// (16-bit parameter gradients, 16-bit compute).
enum class Mixed { F32, Bf16, Bf16Act16, Bf16F32Act16, Bf16Grad16 };

struct Case {
  std::string name;
  std::string layout;  // parse_layout() spec; dp = ranks / (tp * pp)
  int ranks;
  bool tied = false;
  Mixed mixed = Mixed::F32;
};

const std::vector<Case>& cases() {
  static const std::vector<Case> all = {
      {"serial", "tp=1,pp=1,dp=1,mb=2", 1},
      {"serial recompute", "tp=1,pp=1,dp=1,mb=2,recompute=full", 1},
      {"serial tied", "tp=1,pp=1,dp=1,mb=2", 1, true},
      {"serial bf16", "tp=1,pp=1,dp=1,mb=2", 1, false, Mixed::Bf16},
      {"serial bf16 recompute", "tp=1,pp=1,dp=1,mb=2,recompute=full", 1, false, Mixed::Bf16},
      {"serial bf16 act16", "tp=1,pp=1,dp=1,mb=2", 1, false, Mixed::Bf16Act16},
      {"serial bf16 f32 act16", "tp=1,pp=1,dp=1,mb=2", 1, false, Mixed::Bf16F32Act16},
      {"tp2", "tp=2,pp=1,dp=1,mb=2,sp=0", 2},
      {"tp2 sp", "tp=2,pp=1,dp=1,mb=2,sp=1", 2},
      {"tp2 sp recompute", "tp=2,pp=1,dp=1,mb=2,sp=1,recompute=full", 2},
      {"tp2 sp bf16", "tp=2,pp=1,dp=1,mb=2,sp=1", 2, false, Mixed::Bf16},
      {"tp2 sp recompute bf16 act16", "tp=2,pp=1,dp=1,mb=2,sp=1,recompute=full", 2, false, Mixed::Bf16Act16},
      {"pp2 1f1b", "tp=1,pp=2,dp=1,mb=2,sched=1f1b", 2},
      {"pp2 1f1b tied", "tp=1,pp=2,dp=1,mb=2,sched=1f1b", 2, true},
      {"pp2 gpipe", "tp=1,pp=2,dp=1,mb=2,sched=gpipe", 2},
      {"pp2 interleaved v2", "tp=1,pp=2,dp=1,mb=2,sched=interleaved,v=2", 2},
      {"pp2 interleaved v2 m=pp", "tp=1,pp=2,dp=1,mb=4,sched=interleaved,v=2", 2},
      {"pp2 zb-h1", "tp=1,pp=2,dp=1,mb=2,sched=zb-h1", 2},
      {"pp2 zb-h1 recompute", "tp=1,pp=2,dp=1,mb=2,sched=zb-h1,recompute=full", 2},
      {"pp2 zb-h1 tied", "tp=1,pp=2,dp=1,mb=2,sched=zb-h1", 2, true},
      {"pp2 1f1b bf16", "tp=1,pp=2,dp=1,mb=2,sched=1f1b", 2, false, Mixed::Bf16},
      {"pp2 1f1b bf16 f32 act16", "tp=1,pp=2,dp=1,mb=2,sched=1f1b", 2, false, Mixed::Bf16F32Act16},
      {"pp2 interleaved v2 bf16 act16", "tp=1,pp=2,dp=1,mb=2,sched=interleaved,v=2", 2, false, Mixed::Bf16Act16},
      {"pp2 zb-h1 bf16", "tp=1,pp=2,dp=1,mb=2,sched=zb-h1", 2, false, Mixed::Bf16},
      {"pp2 zb-h1 recompute bf16", "tp=1,pp=2,dp=1,mb=2,sched=zb-h1,recompute=full", 2, false, Mixed::Bf16},
      {"pp2 zb-h1 bf16 f32 act16", "tp=1,pp=2,dp=1,mb=2,sched=zb-h1", 2, false, Mixed::Bf16F32Act16},
      {"dp2 zero1", "tp=1,pp=1,dp=2,mb=2,zero=1", 2},
      {"dp2 zero2", "tp=1,pp=1,dp=2,mb=2,zero=2", 2},
      {"dp2 zero3", "tp=1,pp=1,dp=2,mb=2,zero=3", 2},
      {"dp2 zero3 bf16", "tp=1,pp=1,dp=2,mb=2,zero=3", 2, false, Mixed::Bf16},
      {"serial bf16 grad16", "tp=1,pp=1,dp=1,mb=2", 1, false, Mixed::Bf16Grad16},
      {"dp2 zero2 bf16 grad16", "tp=1,pp=1,dp=2,mb=2,zero=2", 2, false, Mixed::Bf16Grad16},
      {"tp2 sp pp2 dp2 zero1 bf16 grad16", "tp=2,pp=2,dp=2,mb=2,sp=1,zero=1", 8, false, Mixed::Bf16Grad16},
      {"tp2 sp pp2 dp2 zero2", "tp=2,pp=2,dp=2,mb=2,sp=1,zero=2", 8},
      {"tp2 pp2 dp2 zero3 tied", "tp=2,pp=2,dp=2,mb=2,sp=0,zero=3", 8, true},
      {"tp2 sp pp2 v2 dp2 zero1", "tp=2,pp=2,dp=2,mb=1,sp=1,zero=1,sched=interleaved,v=2", 8},
      {"tp2 pp2 dp2 zero1 zb-h1", "tp=2,pp=2,dp=2,mb=2,sp=0,zero=1,sched=zb-h1", 8},
      {"tp2 sp pp2 dp2 zero2 bf16", "tp=2,pp=2,dp=2,mb=2,sp=1,zero=2", 8, false, Mixed::Bf16},
      {"tp2 sp pp2 dp2 zero3 bf16 act16", "tp=2,pp=2,dp=2,mb=2,sp=1,zero=3", 8, false, Mixed::Bf16Act16},
      {"tp2 pp2 dp2 zero1 zb-h1 bf16", "tp=2,pp=2,dp=2,mb=2,sp=0,zero=1,sched=zb-h1", 8, false, Mixed::Bf16},
  };
  return all;
}

LlamaConfig tiny_llama(bool tied) {
  LlamaConfig c;
  c.vocab_size = 256;
  c.hidden_size = 64;
  c.num_layers = 4;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.mlp_hidden_size = 192;
  c.max_seq_len = kSeq;
  c.tied_embeddings = tied;
  return c;
}

MicroBatch micro_batch(int64_t step, int64_t row0, int64_t rows, int64_t vocab) {
  std::vector<int32_t> ids, tgt;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t t = 0; t <= kSeq; ++t) {
      const auto tok = static_cast<int32_t>((step * 7919 + (row0 + r) * 104729 + t * 31 + t * t) % vocab);
      if (t < kSeq) ids.push_back(tok);
      if (t > 0) tgt.push_back(tok);
    }
  return {Tensor::from_vector_i32({rows, kSeq}, ids), Tensor::from_vector_i32({rows, kSeq}, tgt)};
}

// {predicted, measured} bytes per category for this rank, then its stage.
std::vector<double> measure(const Case& k, const Layout& l, std::shared_ptr<Communicator> world) {
  ProcessGrid grid(world, l.tp, l.pp);
  auto be = make_cpu_backend();
  const LlamaConfig mc = tiny_llama(k.tied);
  PipelineConfig pc;
  pc.schedule = l.schedule == Schedule::GPipe         ? ScheduleKind::GPipe
                : l.schedule == Schedule::Interleaved ? ScheduleKind::Interleaved
                : l.schedule == Schedule::ZeroBubbleH1 ? ScheduleKind::ZeroBubbleH1
                                                      : ScheduleKind::OneFOneB;
  pc.virtual_stages = l.virtual_stages;
  pc.seq_len = kSeq;
  pc.micro_batch_size = l.micro_batch;
  const LlamaLayout base = LlamaLayout::tensor_parallel(grid, l.sequence_parallel);
  LlamaOptions opts;
  opts.recompute = l.recompute == Recompute::Full;
  const bool half = k.mixed != Mixed::F32, c16 = half && k.mixed != Mixed::Bf16F32Act16;
  const bool act16 = k.mixed == Mixed::Bf16Act16 || k.mixed == Mixed::Bf16F32Act16;
  if (half) opts.param_dtype = DType::BF16;
  if (c16) opts.compute_dtype = DType::BF16;
  if (act16) opts.activation_dtype = DType::BF16;
  const bool grad16 = k.mixed == Mixed::Bf16Grad16;
  if (grad16) opts.grad_dtype = DType::BF16;
  const PipelineSplit split = PipelineSplit::balanced(mc.num_layers, grid.pp(), l.virtual_stages);
  PipelineStage stage(make_llama_chunks(mc, *be, base, opts, split, grid.pp_rank()), grid.pp_group(),
                      grid.embedding_group(), pc, split);
  ZeroConfig zc;
  zc.stage = l.zero_stage;
  ZeroOptimizer zero(*be, stage.modules(), grid.dp_group(), zc);
  const int64_t rows = kGlobalBatch / grid.dp(), m = rows / l.micro_batch;
  zero.set_micro_batches_per_step(static_cast<int>(m));
  std::shared_ptr<Communicator> mp = grid.mp_group();
  const SumSquaresReducer reduce_mp = [mp](double local) { return all_reduce_sum_double(*mp, local); };
  std::vector<std::size_t> peak(kCats);
  for (int step = 0; step < 2; ++step) {  // the second step is the steady state
    Allocator::instance().reset_peak();
    std::vector<MicroBatch> mbs;
    for (int64_t i = 0; i < m; ++i)
      mbs.push_back(micro_batch(step, grid.dp_rank() * rows + i * l.micro_batch, l.micro_batch, mc.vocab_size));
    zero.zero_grad();
    stage.run_step(mbs, 1.0f / float(kGlobalBatch * kSeq));
    zero.finish_gradient_sync();
    zero.clip_grad_norm(1.0f, reduce_mp);
    zero.step(1e-3f);
    for (int c = 0; c < kCats; ++c) peak[c] = Allocator::instance().stats(static_cast<MemCategory>(c)).peak;
  }
  Workload work;
  work.global_batch = kGlobalBatch;
  work.seq_len = kSeq;
  ModelOptions o;
  o.flash_attention = true;  // the log-sum-exp, never the s x s scores
  o.dropout = false;
  o.bucket_bytes = zc.bucket_mb * 1e6;
  o.workspace_bytes = 0;
  o.pp3d_accounting = true;
  o.prefetch_layers = zc.prefetch_layers;
  const int st = grid.pp_rank();
  const MemoryBreakdown pred =
      predict_stage_memory(llama_plan_config(mc), l, Precision::pp3d(half, c16, act16, grad16), work, o, st);
  return row(pred, peak, st);
}

}  // namespace

int main() {
  int failed = 0;
  try {
    auto world = init_world();
    const int W = world->size(), rank = world->rank();
    PP3D_CHECK(W >= 2, "planner_llama_alloc_test needs 2 ranks (mpirun -n 2), got {}", W);
    print_header(*world, "llama layout");
    for (const Case& k : cases()) {
      if (k.ranks > W || (W == 8) != (k.ranks == 8)) continue;  // np8 runs the 8-rank layouts only
      Layout l = parse_layout(k.layout);
      l.dp = k.ranks / (l.tp * l.pp);
      auto sub = world->split(rank < k.ranks ? 0 : -1, rank, "layout");
      std::vector<double> mine(2 * kCats + 1, 0.0);
      if (sub) mine = measure(k, l, sub);
      failed += compare_rows(*world, k.name, k.ranks, mine);
    }
    if (rank == 0)
      fmt::print("{}\n", failed == 0 ? "llama: all checked categories within 5%"
                                      : fmt::format("llama: {} categories off by > 5%", failed));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "planner_llama_alloc_test: %s\n", e.what());
    failed = 1;
  }
  finalize_world();
  return failed == 0 ? 0 : 1;
}
