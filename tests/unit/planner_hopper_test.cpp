// Planner terms for Hopper-era training (docs/PLANNER.md, "Hopper terms"):
// FP8 linear layers, tensor-parallel communication overlapped with GEMMs,
// rings that span nodes through one NIC per rank, the flash-attention kernel
// rate and the FP8 memory costs. Each test pins one term against its formula.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>

#include "pp3d/core/error.h"
#include "pp3d/plan/planner.h"

using namespace pp3d;

namespace {
GptConfig gpt3_5b() {  // NeMo's GPT3-5B: L24 h4096 a32, seq 2048
  GptConfig c;
  c.num_layers = 24;
  c.hidden_size = 4096;
  c.num_heads = 32;
  c.max_seq_len = 2048;
  return c;
}
Layout layout(int tp, int pp, int dp, int64_t mb) {
  Layout l;
  l.tp = tp;
  l.pp = pp;
  l.dp = dp;
  l.micro_batch = mb;
  l.sequence_parallel = tp > 1;
  return l;
}
}  // namespace

TEST_CASE("fp8: linear GEMMs at the FP8 peak, casts as extra memory traffic, no FP8 on A100", "[planner][hopper]") {
  const GptConfig cfg = gpt3_5b();
  const Cluster h100 = cluster_preset("h100", 8);
  const Workload work{64, 0};
  const Layout l = layout(1, 1, 8, 4);
  const TimeBreakdown bf = predict_time(cfg, l, Precision::bf16(), work, h100);
  const TimeBreakdown f8 = predict_time(cfg, l, Precision::fp8(), work, h100);
  // Twice the peak at a lower efficiency, attention and the head in bf16:
  // faster, but well short of 2x.
  CHECK(f8.gemm < 0.75 * bf.gemm);
  CHECK(f8.gemm > 0.5 * bf.gemm);
  // The FP8 cast-transposes read 2 B and write 1 B + 1 B (the transpose) per
  // element: the four linear inputs in forward (LN1, attention output, LN2,
  // GELU output: 2 bsh + bsh + bsF) and the four output gradients in backward
  // (d qkv, d proj, d fc, d fc2: 3 bsh + bsh + bsF + bsh), 24 blocks.
  const double bs = 4.0 * 2048, h = 4096, F = 4 * h;
  const double casts = 24 * 4 * ((3 * bs * h + bs * F) + (5 * bs * h + bs * F)) / h100.gpu.hbm_stream_bw();
  CHECK(f8.elementwise - bf.elementwise == Approx(casts).epsilon(1e-9));
  // Same FLOPs counted whatever the precision.
  CHECK(f8.hardware_flops == Approx(bf.hardware_flops));
  const Cluster a100 = cluster_preset("a100", 8);
  CHECK_THROWS_WITH(predict_time(cfg, l, Precision::fp8(), work, a100), Catch::Contains("has no FP8 tensor cores"));
}

TEST_CASE("fp8 memory: 2 B of FP8 weight copies per linear parameter, 1-byte saved GEMM inputs", "[planner][hopper]") {
  const GptConfig cfg = gpt3_5b();
  const Workload work{64, 0};
  ModelOptions opt;
  opt.dropout = false;
  const Layout l = layout(2, 1, 4, 2);
  const MemoryBreakdown bf = predict_memory(cfg, l, Precision::bf16(), work, opt);
  const MemoryBreakdown f8 = predict_memory(cfg, l, Precision::fp8(), work, opt);
  const double h = 4096, F = 4 * h, linear_per_block = (4 * h * h + 2 * h * F) / 2;
  CHECK(f8.params - bf.params == Approx(24 * 2 * linear_per_block).epsilon(1e-12));
  CHECK(f8.grads == bf.grads);
  CHECK(f8.optimizer == bf.optimizer);
  // Per block: QKV and fc inputs (sbh / t each with SP), the attention output
  // (sbh / t) and the GELU output (sbF / t) drop from 2 B to 1 B.
  const double sb = 2.0 * 2048, saved = (2 * sb * h + sb * h + sb * F) / 2;
  CHECK(bf.activation_per_layer - f8.activation_per_layer == Approx(saved).epsilon(1e-12));
  // ZeRO-3 casts only the gathered layers: no persistent FP8 copies.
  Layout z3 = l;
  z3.zero_stage = 3;
  CHECK(predict_memory(cfg, z3, Precision::fp8(), work, opt).params ==
        Approx(predict_memory(cfg, z3, Precision::bf16(), work, opt).params));
}

TEST_CASE("tp_overlap hides TP collectives behind long GEMMs down to one chunk in tp", "[planner][hopper]") {
  const GptConfig cfg = gpt3_5b();
  const Cluster h100 = cluster_preset("h100", 8);
  const Workload work{64, 0};
  const Layout l = layout(4, 1, 2, 8);  // long GEMMs: comm < GEMM for every collective
  ModelOptions plain, overlap;
  overlap.tp_overlap = true;
  const TimeBreakdown a = predict_time(cfg, l, Precision::bf16(), work, h100, plain);
  const TimeBreakdown b = predict_time(cfg, l, Precision::bf16(), work, h100, overlap);
  // Outside the blocks (not overlapped): the vocab-parallel embedding
  // all-reduce of bsh bf16 elements and the loss's three of bs fp32 values,
  // rings of 4 on NVLink (5 us per step, 450 GB/s).
  const double bs = 8.0 * 2048, h = 4096;
  auto all_reduce = [](double bytes) { return 2 * 3 * 5e-6 + 2.0 * 3 / 4 * bytes / 450e9; };
  const double outside = all_reduce(bs * h * 2) + 3 * all_reduce(bs * 4);
  // Per block and pass: 2 all-reduces = 4 half-rings exposed without overlap,
  // 4 x (1/t) of a half-ring with it (every GEMM outlasts its collective).
  CHECK(b.tp_comm < a.tp_comm);
  CHECK(b.tp_comm - outside == Approx((a.tp_comm - outside) / 4).epsilon(1e-9));
  CHECK(b.gemm == a.gemm);
  // Without sequence parallelism there is nothing to chunk: no change.
  Layout no_sp = l;
  no_sp.sequence_parallel = false;
  CHECK(predict_time(cfg, no_sp, Precision::bf16(), work, h100, overlap).tp_comm ==
        Approx(predict_time(cfg, no_sp, Precision::bf16(), work, h100, plain).tp_comm));
}

TEST_CASE("pp_overlap hides interleaved p2p behind the next chunk's compute, only when it is shorter", "[planner][hopper]") {
  const GptConfig cfg = gpt3_5b();
  const Cluster h100 = cluster_preset("h100", 8);
  const Workload work{64, 0};
  Layout l = layout(1, 4, 4, 1);  // 16 GPUs on 2 nodes: the slowest stage's p2p crosses IB
  l.schedule = Schedule::Interleaved;
  l.virtual_stages = 2;
  ModelOptions plain, overlap;
  overlap.pp_overlap = true;
  const TimeBreakdown a = predict_time(cfg, l, Precision::bf16(), work, h100, plain);
  const TimeBreakdown b = predict_time(cfg, l, Precision::bf16(), work, h100, overlap);
  // Without overlap: v x (send forward + send backward) of bsh bf16 over IB.
  const double transfer = 10e-6 + 2048.0 * 4096 * 2 / 50e9;
  CHECK(a.pp_p2p == Approx(2 * 2 * transfer).epsilon(1e-9));
  // A chunk of 3 layers computes for milliseconds; a 16 MB transfer takes
  // 0.35 ms: fully hidden.
  CHECK(b.pp_p2p == 0);
  CHECK(b.gemm == a.gemm);
  CHECK(b.step < a.step);
  // 1F1B has no next chunk to overlap with: no change.
  Layout f1b = layout(1, 4, 4, 1);
  CHECK(predict_time(cfg, f1b, Precision::bf16(), work, h100, overlap).pp_p2p ==
        predict_time(cfg, f1b, Precision::bf16(), work, h100, plain).pp_p2p);
  // A slow link (0.1 GB/s) outlasts the compute: the excess stays exposed.
  Cluster slow = h100;
  slow.inter.beta = 0.1e9;
  const TimeBreakdown c = predict_time(cfg, l, Precision::bf16(), work, slow, overlap);
  const TimeBreakdown d = predict_time(cfg, l, Precision::bf16(), work, slow, plain);
  CHECK(c.pp_p2p > 0);
  CHECK(c.pp_p2p < d.pp_p2p);
}

TEST_CASE("a ring spanning nodes drives one NIC per rank on the node", "[planner][hopper]") {
  // 16 GPUs on 2 nodes: tp 1 puts 8 DP ranks on each node (8 NICs, capped by
  // NVLink); tp 8 leaves one DP rank per node (one NIC).
  const GptConfig cfg = gpt3_5b();
  const Cluster h100 = cluster_preset("h100", 8);
  const Workload work{64, 0};
  Layout wide = layout(1, 1, 16, 4);
  const TimeBreakdown t = predict_time(cfg, wide, Precision::bf16(), work, h100);
  const double psi = stage_parameters(cfg, wide, 0), bytes = 2 * psi;
  const double buckets = std::ceil(bytes / 25e6);
  const double latency = buckets * 2 * (1 * 10e-6 + 7 * 5e-6);
  const double beta = std::min(450e9, 8 * 50e9);
  CHECK(t.dp_comm == Approx(latency + 2.0 * 15 / 16 * bytes / beta).epsilon(1e-9));
  const Layout narrow = layout(8, 1, 2, 4);
  const double psi8 = stage_parameters(cfg, narrow, 0), bytes8 = 2 * psi8;
  const TimeBreakdown t8 = predict_time(cfg, narrow, Precision::bf16(), work, h100);
  const double latency8 = std::ceil(bytes8 / 25e6) * 2 * 10e-6;
  CHECK(t8.dp_comm == Approx(latency8 + 2.0 * 1 / 2 * bytes8 / 50e9).epsilon(1e-9));
}

TEST_CASE("flash attention runs at the GPU's measured kernel rate, cluster files set it and the FP8 peak", "[planner][hopper]") {
  const GptConfig cfg = gpt3_5b();
  Cluster h100 = cluster_preset("h100", 8);
  REQUIRE(h100.gpu.flash_attention_eff == Approx(0.33));
  REQUIRE(h100.gpu.fp8_peak_flops == Approx(1979e12));
  const Workload work{64, 0};
  const Layout l = layout(1, 1, 8, 4);
  const TimeBreakdown fa = predict_time(cfg, l, Precision::bf16(), work, h100);
  Cluster faster = h100;
  faster.gpu.flash_attention_eff = 0.66;
  const TimeBreakdown fa2 = predict_time(cfg, l, Precision::bf16(), work, faster);
  // Attention forward FLOPs per block: 4 b s^2 h; the kernel's backward does
  // 2.5x that (recomputing the scores): 24 blocks x 3.5 x 4 b s^2 h at the rate.
  const double att = 24 * 3.5 * 4.0 * 4 * 2048 * 2048 * 4096 / 989e12;
  CHECK(fa.gemm - fa2.gemm == Approx(att / 0.33 - att / 0.66).epsilon(1e-9));
  Cluster as_gemms = h100;
  as_gemms.gpu.flash_attention_eff = 0;  // 0: attention as two batched GEMMs at the GEMM curve
  CHECK(predict_time(cfg, l, Precision::bf16(), work, as_gemms).gemm < fa.gemm);
  const std::string path = "planner_hopper_test_cluster.yaml";
  {
    std::ofstream f(path);
    f << "gpu: a100\nfp8_peak_tflops: 624\nflash_attention_efficiency: 0.5\n";
  }
  const Cluster c = load_cluster_yaml(path);
  CHECK(c.gpu.fp8_peak_flops == Approx(624e12));
  CHECK(c.gpu.flash_attention_eff == Approx(0.5));
  {
    std::ofstream f(path);
    f << "gpu: h100\nflash_attention_efficiency: 1.5\n";
  }
  CHECK_THROWS_WITH(load_cluster_yaml(path), Catch::Contains("flash attention efficiency must be in [0, 1]"));
  std::remove(path.c_str());
}
