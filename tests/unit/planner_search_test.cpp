// Planner step-time model and layout search: FLOP counts, rejections with
// reasons, ranking sanity.
#include <catch2/catch.hpp>

#include "pp3d/core/error.h"
#include "pp3d/plan/planner.h"

using namespace pp3d;

namespace {
GptConfig make(int64_t L, int64_t h, int64_t a, int64_t T) {
  GptConfig c;
  c.num_layers = L, c.hidden_size = h, c.num_heads = a, c.max_seq_len = T;
  return c;
}
PlanRequest request(int gpus, int64_t batch) {
  PlanRequest r;
  r.gpus = gpus;
  r.work.global_batch = batch;
  return r;
}
bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }
}  // namespace

TEST_CASE("step-time FLOP accounting", "[planner]") {
  const GptConfig c = make(24, 2048, 16, 2048);
  Cluster cl = cluster_preset("h100", 8);
  cl.gpu.gemm.table = {{1.0, 0.5}};  // constant efficiency 0.5
  cl.gpu.hbm_bw = 1e18;             // nothing memory-bound
  cl.gpu.flash_attention_eff = 0;   // attention as two GEMMs at that efficiency too
  Layout l;
  l.micro_batch = 4;
  Workload w;
  w.global_batch = 16;
  const double b = 4, s = 2048, h = 2048, V = 50304, L = 24, m = 4;
  const double layer_fwd = 24 * b * s * h * h + 4 * b * s * s * h;  // Narayanan et al. 2021
  const double head_fwd = 2 * b * s * h * V;
  for (Recompute rc : {Recompute::None, Recompute::Full}) {
    l.recompute = rc;
    const TimeBreakdown t = predict_time(c, l, Precision::bf16(), w, cl);
    const double passes = rc == Recompute::Full ? 4 : 3;
    const double hw = m * (L * passes * layer_fwd + 3 * head_fwd);
    CHECK(t.hardware_flops == Approx(hw));
    CHECK(t.gemm * m == Approx(hw / (0.5 * 989e12)));
    CHECK(t.model_flops == Approx(16 * s * (6.0 * c.num_parameters() + 12 * L * s * h)));
    CHECK(t.tokens_per_s == Approx(16 * s / t.step));
    CHECK(t.mfu == Approx(t.model_flops / (t.step * 989e12)));
    CHECK(t.mfu < 0.51);  // cannot beat the GEMM efficiency (6N slightly over-counts wpe)
    CHECK(t.dp_comm == 0);
    CHECK(t.bubble == 0);
  }
}

TEST_CASE("pipeline bubble and communication terms", "[planner]") {
  const GptConfig c = make(24, 2048, 16, 2048);
  const Cluster cl = cluster_preset("h100", 8);
  Workload w;
  w.global_batch = 64;
  Layout l;
  l.pp = 4, l.dp = 2, l.micro_batch = 2;  // m = 16
  const TimeBreakdown t = predict_time(c, l, Precision::bf16(), w, cl);
  CHECK(t.num_micro_batches == 16);
  CHECK(t.bubble_fraction == Approx(3.0 / 16));
  CHECK(t.bubble == Approx(3 * t.per_micro_batch));
  CHECK(t.pp_p2p > 0);
  CHECK(t.embedding_sync > 0);  // tied embeddings over first and last stage
  l.schedule = Schedule::Interleaved, l.virtual_stages = 2;
  const TimeBreakdown ti = predict_time(c, l, Precision::bf16(), w, cl);
  CHECK(ti.bubble_fraction == Approx(3.0 / 32));
  CHECK(ti.pp_p2p == Approx(2 * t.pp_p2p).epsilon(0.01));
  // ZeRO-3 moves 1.5x the bytes of ZeRO-0 (one micro-batch, no latency).
  Cluster nolat = cl;
  nolat.intra.alpha = nolat.inter.alpha = 0;
  Layout z;
  z.dp = 8, z.micro_batch = 8;
  w.global_batch = 64;
  const double t0 = predict_time(c, z, Precision::bf16(), w, nolat).dp_comm;
  z.zero_stage = 3;
  const double t3 = predict_time(c, z, Precision::bf16(), w, nolat).dp_comm;
  CHECK(t3 == Approx(1.5 * t0));
  // TP all-reduces go over NVLink inside a node: 4 per layer of b*s*h*2 bytes.
  Layout tp;
  tp.tp = 8, tp.micro_batch = 1, tp.sequence_parallel = true;
  w.global_batch = 8;
  const TimeBreakdown tt = predict_time(c, tp, Precision::bf16(), w, nolat);
  const double ar = 2.0 * 7 / 8 * 2048 * 2048 * 2 / 450e9;
  CHECK(tt.tp_comm == Approx(24 * 4 * ar + ar + 3 * (2.0 * 7 / 8 * 2048 * 4 / 450e9)));
}

TEST_CASE("layouts that do not divide are rejected with the reason", "[planner]") {
  const GptConfig c = make(24, 2048, 16, 2048);
  const Planner planner(c, cluster_preset("h100", 8), request(64, 512));
  auto reason = [&](const std::string& spec) {
    try {
      planner.evaluate(parse_layout(spec));
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  CHECK(contains(reason("tp=3,pp=1,dp=1"), "tp*pp*dp"));
  CHECK(contains(reason("tp=16,pp=4"), "gpus_per_node"));
  CHECK(contains(reason("tp=4,pp=5,dp=3"), "64 GPUs"));
  CHECK(contains(reason("tp=2,pp=32"), "exceeds num_layers"));
  CHECK(contains(reason("tp=1,pp=16"), "does not divide num_layers"));
  CHECK(contains(reason("tp=2,pp=4,mb=3"), "micro-batch 3 does not divide the per-DP-rank batch 64"));
  CHECK(contains(reason("tp=2,pp=4,sched=interleaved,v=4"), "does not divide num_layers"));
  CHECK(contains(reason("tp=2,pp=4,zero=5"), "zero stage"));
  CHECK(reason("tp=2,pp=4,zero=1,mb=2").empty());
  CHECK_NOTHROW(planner.evaluate(parse_layout("tp=1,pp=16,uneven=1")));

  const GptConfig odd = make(24, 2040, 12, 2048);  // 12 heads
  const Planner p2(odd, cluster_preset("h100", 8), request(64, 512));
  CHECK_THROWS_WITH(p2.evaluate(parse_layout("tp=8,pp=1")), Catch::Contains("does not divide num_heads=12"));
  const PlanResult res = p2.search();
  CHECK(res.rejected.count("tp does not divide num_heads") == 1);
  int64_t n = int64_t(res.feasible.size());
  for (const auto& [why, count] : res.rejected) n += count;
  CHECK(n == res.considered);
}

TEST_CASE("search keeps only layouts that fit, and names why others do not", "[planner]") {
  const GptConfig c = make(24, 2048, 16, 2048);
  const Planner planner(c, cluster_preset("a100", 8), request(16, 256));
  const PlanResult res = planner.search();
  REQUIRE(!res.feasible.empty());
  for (std::size_t i = 0; i < res.feasible.size(); ++i) {
    const Candidate& cand = res.feasible[i];
    CHECK(cand.memory.total() <= planner.memory_limit());
    CHECK(check_layout(c, cand.layout, planner.cluster(), planner.request()).empty());
    if (i > 0) CHECK(cand.time.tokens_per_s <= res.feasible[i - 1].time.tokens_per_s);
  }
  // GPT-3 175B cannot fit on 8 GPUs with 80 GB in any layout.
  const GptConfig huge = make(96, 12288, 96, 2048);
  const Planner hp(huge, cluster_preset("h100", 8), request(8, 64));
  const PlanResult hr = hp.search();
  CHECK(hr.feasible.empty());
  REQUIRE(!hr.out_of_memory.empty());
  CHECK(contains(hr.out_of_memory[0].message, "GB > 80.0 GB"));
  CHECK(hr.rejected.at("out of memory") > 0);
  // An activation-dominated case names the in-flight micro-batches.
  const GptConfig big_act = make(24, 2048, 16, 2048);
  const Planner bp(big_act, cluster_preset("a100", 8), request(8, 512));
  const Candidate gp = bp.evaluate(parse_layout("tp=1,pp=8,mb=8,sched=gpipe"));
  const std::string v = bp.memory_verdict(gp.memory);
  CHECK(contains(v, "activations"));
  CHECK(contains(v, "64 micro-batches in flight x 3 layers"));
}

TEST_CASE("ranking sanity: a small model with a big batch prefers pure DP", "[planner]") {
  const GptConfig c = make(12, 768, 12, 1024);  // GPT-2 124M
  const Planner planner(c, cluster_preset("h100", 8), request(8, 512));
  const PlanResult res = planner.search();
  REQUIRE(!res.feasible.empty());
  CHECK(res.feasible[0].layout.pp == 1);
  CHECK(res.feasible[0].layout.tp == 1);
  double best_dp = 0, best_deep_pp = 0;
  for (const auto& cand : res.feasible) {
    if (cand.layout.tp == 1 && cand.layout.pp == 1 && cand.layout.zero_stage <= 1)
      best_dp = std::max(best_dp, cand.time.tokens_per_s);
    if (cand.layout.pp >= 4) best_deep_pp = std::max(best_deep_pp, cand.time.tokens_per_s);
  }
  CHECK(best_deep_pp > 0);
  CHECK(best_dp > best_deep_pp);
  // More data-parallel GPUs raise throughput for the same layout shape.
  const Planner p16(c, cluster_preset("h100", 8), request(16, 512));
  CHECK(p16.evaluate(parse_layout("dp=16,mb=8")).time.tokens_per_s >
        planner.evaluate(parse_layout("dp=8,mb=8")).time.tokens_per_s);
  CHECK(contains(planner.explain_winner(res), "wins"));
  CHECK(contains(planner.explain(res.feasible[0].layout), "total"));
}

TEST_CASE("layout strings round-trip and bad keys are named", "[planner]") {
  const Layout l = parse_layout("tp=2,pp=4,dp=8,zero=1,mb=2,sched=interleaved,v=3,recompute=full");
  CHECK(l.tp == 2);
  CHECK(l.sequence_parallel);  // default on with tp > 1
  CHECK(l.virtual_stages == 3);
  const Layout r = parse_layout(l.spec());
  CHECK(r.spec() == l.spec());
  CHECK(parse_layout("tp=2 pp=4").pp == 4);
  CHECK(parse_layout("sched=interleaved").virtual_stages == 2);
  CHECK_THROWS_WITH(parse_layout("tp=2,foo=1"), Catch::Contains("unknown key 'foo'"));
  CHECK_THROWS_WITH(parse_layout("tp=x"), Catch::Contains("'tp' needs an integer"));
  CHECK_THROWS_WITH(parse_layout("sched=zigzag"), Catch::Contains("zigzag"));
}

TEST_CASE("fp32 training uses the fp32 (TF32) peak", "[planner]") {
  const GptConfig c = make(24, 2048, 16, 2048);
  Cluster cl = cluster_preset("a100", 8);
  cl.gpu.gemm.table = {{1.0, 0.5}};
  cl.gpu.hbm_bw = 1e18;
  Layout l;
  l.micro_batch = 4;
  Workload w;
  w.global_batch = 4;
  const TimeBreakdown t = predict_time(c, l, Precision::fp32(), w, cl);
  CHECK(t.gemm == Approx(t.hardware_flops / (0.5 * 156e12)));
  CHECK(t.mfu == Approx(t.model_flops / (t.step * 156e12)));
}
