// resolve_auto_layout (pp3d-train --tp auto --pp auto --zero-stage auto):
// the choice is a layout the trainer accepts, it is the planner's top-ranked
// layout among those the trainer supports, it shards when the model does not
// fit unsharded, and it is deterministic.
#include <catch2/catch.hpp>

#include "pp3d/core/error.h"
#include "pp3d/plan/auto_layout.h"

using namespace pp3d;

namespace {

TrainConfig tiny() {
  TrainConfig c;
  c.num_layers = 4;
  c.hidden_size = 64;
  c.num_heads = 4;
  c.seq_len = 32;
  c.micro_batch_size = 4;
  c.global_batch_size = 32;
  c.tp = 0, c.pp = 0, c.zero_stage = -1;  // "auto"
  return c;
}

}  // namespace

TEST_CASE("auto layout: 8 CPU ranks, tiny model -> a layout the trainer validates", "[planner][auto]") {
  TrainConfig c = tiny();
  const AutoLayoutRequest what = AutoLayoutRequest::from(c);
  REQUIRE((what.tp && what.pp && what.zero));
  const AutoLayoutChoice r = resolve_auto_layout(c, 8, cpu_ranks_cluster(8), what);
  CHECK(c.tp * c.pp * r.best.layout.dp == 8);
  CHECK(c.tp == r.best.layout.tp);
  CHECK(c.pp == r.best.layout.pp);
  CHECK(c.zero_stage == r.best.layout.zero_stage);
  CHECK(c.global_batch_size == 32);
  CHECK_NOTHROW(c.validate(8));
  CHECK(c.resolve_layout(8).micro_batch == r.best.layout.micro_batch);
  CHECK(r.summary.rfind("auto layout: tp ", 0) == 0);
  CHECK(r.summary.find("runner-up: tp ") != std::string::npos);
  REQUIRE(r.runner_up.has_value());
  CHECK(r.runner_up->time.tokens_per_s <= r.best.time.tokens_per_s);
  CHECK(r.feasible >= 2);
  CHECK(r.considered >= r.feasible);
}

TEST_CASE("auto layout equals the planner's top-ranked layout the trainer supports", "[planner][auto]") {
  for (int world : {2, 4, 8}) {
    TrainConfig c = tiny();
    c.sequence_parallel = true;  // the planner's search uses SP whenever tp > 1
    const Cluster cluster = cpu_ranks_cluster(world);
    PlanRequest req;
    req.gpus = world;
    req.work = {c.global_batch_size, c.seq_len};
    req.precision = Precision::pp3d(false);
    req.options = trainer_plan([] {
                    TrainConfig t = tiny();
                    t.tp = t.pp = 1, t.zero_stage = 0;
                    return t;
                  }(),
                                 1)
                      .options;
    req.max_micro_batch = c.micro_batch_size;
    const Planner planner(trainer_model_config(c, 1), cluster, req);
    const PlanResult all = planner.search();
    const Candidate* top = nullptr;  // first of the planner's ranking the trainer runs: 1f1b, no recompute
    for (const Candidate& k : all.feasible)
      if (k.layout.schedule == Schedule::OneFOneB && k.layout.recompute == Recompute::None) {
        top = &k;
        break;
      }
    REQUIRE(top != nullptr);
    TrainConfig chosen = c;
    const AutoLayoutChoice r = resolve_auto_layout(chosen, world, cluster, AutoLayoutRequest::from(c));
    INFO("world " << world << ": auto " << r.best.layout.spec() << " vs planner " << top->layout.spec());
    CHECK(r.best.layout.spec() == top->layout.spec());
    CHECK(r.best.time.tokens_per_s == Approx(top->time.tokens_per_s).epsilon(1e-12));
    // Deterministic: the same inputs give the same choice.
    TrainConfig again = c;
    CHECK(resolve_auto_layout(again, world, cluster, AutoLayoutRequest::from(c)).best.layout.spec() ==
          r.best.layout.spec());
  }
}

TEST_CASE("auto layout shards a model that does not fit unsharded", "[planner][auto]") {
  // 6.7B-class model (GPT-3 6.7B shape), f32 training on 8 H100: 16 B/parameter
  // of model states alone is > 100 GB unsharded.
  TrainConfig c;
  c.num_layers = 32, c.hidden_size = 4096, c.num_heads = 32, c.seq_len = 2048, c.vocab_size = 50257;
  c.micro_batch_size = 1, c.global_batch_size = 64;
  c.tp = 0, c.pp = 0, c.zero_stage = -1;
  const Cluster cluster = trainer_cluster(true, 8, "h100");
  TrainConfig plain = c;
  plain.tp = plain.pp = 1, plain.zero_stage = 0;
  const TrainerPlan p = trainer_plan(plain, 8);
  const MemoryBreakdown unsharded = predict_memory(p.model, p.layout, p.precision, p.work, p.options);
  REQUIRE(unsharded.total() > cluster.gpu.memory_bytes);
  const AutoLayoutChoice r = resolve_auto_layout(c, 8, cluster, AutoLayoutRequest::from(c));
  CHECK(r.best.memory.total() <= cluster.gpu.memory_bytes);
  CHECK((c.zero_stage > 0 || c.tp > 1 || c.pp > 1));
  CHECK_NOTHROW(c.validate(8));

  // Fixed fields stay fixed: with ZeRO off and tp = 1 only pipeline parallelism can help.
  TrainConfig fixed = c;
  fixed.tp = 1, fixed.pp = 0, fixed.zero_stage = 0, fixed.global_batch_size = 64, fixed.micro_batch_size = 1;
  const AutoLayoutChoice f = resolve_auto_layout(fixed, 8, cluster, AutoLayoutRequest::from(fixed));
  CHECK(fixed.tp == 1);
  CHECK(fixed.zero_stage == 0);
  CHECK(fixed.pp > 1);
  CHECK(f.best.memory.total() <= cluster.gpu.memory_bytes);
}

TEST_CASE("auto layout: nothing fits -> a clear error", "[planner][auto]") {
  TrainConfig c;
  c.num_layers = 4, c.hidden_size = 8192, c.num_heads = 64, c.seq_len = 2048, c.vocab_size = 50257;
  c.micro_batch_size = 1, c.global_batch_size = 2;
  c.tp = 0, c.pp = 0, c.zero_stage = -1;
  try {
    (void)resolve_auto_layout(c, 2, cpu_ranks_cluster(2), AutoLayoutRequest::from(c));
    FAIL("expected pp3d::Error");
  } catch (const Error& e) {
    CHECK_THAT(e.what(), Catch::Contains("none of the") && Catch::Contains("fits"));
  }
}

TEST_CASE("trainer_model_config follows the trainer's vocabulary and padding", "[planner][auto]") {
  TrainConfig c;
  c.vocab_size = 0;  // the embedded byte corpus
  CHECK(trainer_model_config(c, 1).vocab_size == 256);
  CHECK(trainer_model_config(c, 1).padded_vocab() == 256);
  c.vocab_size = 50257;
  CHECK(trainer_model_config(c, 1).padded_vocab() == 50304);
  CHECK(trainer_model_config(c, 3).padded_vocab() % 3 == 0);  // 64 does not divide: padded to 64 * tp
}

TEST_CASE("schedule auto picks zb-h1 for its bubble, 1f1b when zb-h1's activations do not fit", "[planner][auto]") {
  TrainConfig c = tiny();
  c.tp = 1, c.pp = 2, c.zero_stage = 0, c.schedule = "auto";
  const AutoLayoutRequest what = AutoLayoutRequest::from(c);
  REQUIRE(what.schedule);
  REQUIRE(what.any());
  TrainConfig chosen = c;
  const AutoLayoutChoice r = resolve_auto_layout(chosen, 2, cpu_ranks_cluster(2), what);
  CHECK(chosen.schedule == "zb-h1");
  CHECK_NOTHROW(chosen.validate(2));
  const double m = double(r.best.time.num_micro_batches);
  CHECK(r.best.time.bubble_fraction == Approx(1.0 / (3.0 * m)));  // (p - 1) / (3m)
  REQUIRE(r.runner_up.has_value());

  // The planner's view of both schedules on the chosen layout: a third of the
  // bubble, about the same first stage (its weight parts follow their input
  // parts; the allocator measured +5.8%), more activations on the last stage.
  const TrainerPlan p = trainer_plan(chosen, 2);
  Layout one = p.layout;
  one.schedule = Schedule::OneFOneB;
  const Planner planner(p.model, cpu_ranks_cluster(2), [&] {
    PlanRequest q;
    q.gpus = 2;
    q.work = p.work;
    q.precision = p.precision;
    q.options = p.options;
    return q;
  }());
  const Candidate zb = planner.evaluate(p.layout), f = planner.evaluate(one);
  CHECK(f.time.bubble_fraction == Approx(3.0 * zb.time.bubble_fraction));
  CHECK(zb.time.tokens_per_s > f.time.tokens_per_s);
  const auto stage_act = [&](const Layout& l, int s) {
    return predict_stage_memory(p.model, l, p.precision, p.work, p.options, s).activations;
  };
  CHECK(stage_act(p.layout, 0) >= stage_act(one, 0));
  CHECK(stage_act(p.layout, 0) <= 1.1 * stage_act(one, 0));
  CHECK(stage_act(p.layout, 1) > stage_act(one, 1));

  // A memory limit between the two: auto falls back to 1f1b.
  Cluster tight = cpu_ranks_cluster(2);
  const double need_zb = zb.memory.total(), need_f = f.memory.total();
  REQUIRE(need_zb > need_f);
  tight.gpu.memory_bytes = (need_zb + need_f) / 2 / PlanRequest{}.memory_fraction;
  TrainConfig fallback = c;
  fallback.micro_batch_size = chosen.micro_batch_size;
  fallback.micro_batches = static_cast<int64_t>(m);
  (void)resolve_auto_layout(fallback, 2, tight, AutoLayoutRequest::from(fallback));
  CHECK(fallback.schedule == "1f1b");
}

TEST_CASE("auto layout for --arch llama: the Llama description, tp only over whole kv heads", "[planner][auto][llama]") {
  TrainConfig c = tiny();
  c.arch = "llama";
  c.num_kv_heads = 1;  // grouped-query: 4 query heads share one kv head, so tp must be 1
  const GptConfig m = trainer_model_config(c, 1);
  CHECK(m.is_llama());
  CHECK(m.kv_heads() == 1);
  CHECK(m.mlp_hidden() == 192);    // Llama's 8C/3 rounded up to 64, not 4C
  CHECK_FALSE(m.tied_embeddings);  // Llama's default
  std::vector<Candidate> all = rank_trainer_layouts(c, 8, cpu_ranks_cluster(8), AutoLayoutRequest::from(c));
  REQUIRE_FALSE(all.empty());
  for (const Candidate& k : all) CHECK(k.layout.tp == 1);
  c.num_kv_heads = 2;  // tp 2 becomes possible (the GPT description would allow tp 4 too)
  all = rank_trainer_layouts(c, 8, cpu_ranks_cluster(8), AutoLayoutRequest::from(c));
  bool tp2 = false;
  for (const Candidate& k : all) {
    CHECK(k.layout.tp <= 2);
    tp2 = tp2 || k.layout.tp == 2;
  }
  CHECK(tp2);
  TrainConfig r = c;
  (void)resolve_auto_layout(r, 8, cpu_ranks_cluster(8), AutoLayoutRequest::from(r));
  CHECK_NOTHROW(r.validate(8));
}

// The run's precision reaches the memory model: --bf16 computes in 16 bits by
// default (16-bit per-op activations), --activation-dtype param also stores
// the residual stream in 16 bits; --compute-dtype f32 counts f32 activations.
// (The byte counts themselves are checked against the allocator by
// planner_alloc_test and planner_llama_alloc_test.)
TEST_CASE("trainer_plan: --bf16's compute and activation dtypes set the activation accounting", "[planner][auto]") {
  TrainConfig c = tiny();
  c.tp = 1, c.pp = 1, c.zero_stage = 0;
  c.bf16 = true;
  auto activations = [](const TrainConfig& t) {
    const TrainerPlan p = trainer_plan(t, 1);
    return predict_stage_memory(p.model, p.layout, p.precision, p.work, p.options, 0).activations;
  };
  const TrainerPlan c16 = trainer_plan(c, 1);
  CHECK(c16.precision.compute16);
  CHECK(c16.precision.activation_bytes() == 4);
  TrainConfig f32 = c;
  f32.compute_dtype = "f32";
  CHECK_FALSE(trainer_plan(f32, 1).precision.compute16);
  TrainConfig act16 = c;
  act16.activation_dtype = "param";
  CHECK(trainer_plan(act16, 1).precision.activation_bytes() == 2);
  CHECK(activations(f32) > activations(c));
  CHECK(activations(c) > activations(act16));
  TrainConfig fp32 = c;  // no 16-bit parameters: nothing is 16-bit
  fp32.bf16 = false, fp32.compute_dtype = "auto";
  CHECK(activations(fp32) == activations(f32));
}

// --grad-dtype param (16-bit parameter gradients) reaches the precision at both
// places the trainer's dtypes enter the planner: trainer_plan (the memory report)
// and the --tp/--pp/--zero-stage auto candidates, whose gradient memory and
// DP gradient traffic halve (the ZeRO paper's 2 B gradients; byte counts against
// the allocator: planner_alloc_test's grad16 cases).
TEST_CASE("trainer_plan and auto layouts: --grad-dtype param counts 2-byte gradients", "[planner][auto]") {
  TrainConfig c = tiny();
  c.tp = 1, c.pp = 1, c.zero_stage = 0;
  c.bf16 = true;
  TrainConfig g16 = c;
  g16.grad_dtype = "param";
  CHECK(trainer_plan(c, 1).precision.grad_bytes() == 4);
  CHECK(trainer_plan(g16, 1).precision.grad_bytes() == 2);
  const TrainerPlan p = trainer_plan(g16, 2);
  CHECK(predict_stage_memory(p.model, p.layout, p.precision, p.work, p.options, 0).grads ==
        Approx(2.0 * double(stage_parameters(p.model, p.layout, 0))));
  // The auto path: same candidates, each with half the gradient bytes and less DP traffic.
  c.zero_stage = g16.zero_stage = -1;
  const auto f32 = rank_trainer_layouts(c, 2, cpu_ranks_cluster(2), AutoLayoutRequest::from(c));
  const auto half = rank_trainer_layouts(g16, 2, cpu_ranks_cluster(2), AutoLayoutRequest::from(g16));
  int compared = 0;
  for (const Candidate& a : f32)
    for (const Candidate& b : half) {
      if (a.layout.spec() != b.layout.spec()) continue;
      ++compared;
      CHECK(b.memory.grads == Approx(a.memory.grads / 2));
      CHECK(b.memory.params == Approx(a.memory.params));
      if (a.layout.dp > 1) CHECK(b.time.dp_comm < a.time.dp_comm);
    }
  CHECK(compared >= 4);  // dp 2 ZeRO 0-3 at least
}
