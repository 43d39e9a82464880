// Device-efficiency and memory-traffic terms of the planner's time model
// (docs/PLANNER.md, "Hardware" and "Hopper terms"): GEMMs at the efficiency of
// the square GEMM with the same arithmetic intensity, memory-bound work at the
// measured streaming HBM bandwidth, Hopper GEMM efficiencies from measured
// benchmarks times the A100's benchmark-to-training ratio, the loss's traffic
// per logit. Each test pins one term.
#include <catch2/catch.hpp>

#include <cstdio>
#include <fstream>
#include <string>

#include "pp3d/plan/planner.h"

using namespace pp3d;

namespace {
GptConfig model(int64_t layers, int64_t hidden, int64_t heads) {
  GptConfig c;
  c.num_layers = layers;
  c.hidden_size = hidden;
  c.num_heads = heads;
  c.max_seq_len = 2048;
  return c;
}
}  // namespace

TEST_CASE("a GEMM runs at the efficiency of the square GEMM with its arithmetic intensity", "[planner][efficiency]") {
  // Intensity m n k / (m k + k n + m n) = 1 / (1/m + 1/n + 1/k); a d^3 GEMM has d / 3.
  CHECK(GemmEfficiency::equivalent_size(4096, 4096, 4096) == Approx(4096));
  CHECK(GemmEfficiency::equivalent_size(28672, 6144, 2048) == Approx(3 / (1 / 28672.0 + 1 / 6144.0 + 1 / 2048.0)));
  GemmEfficiency g;
  g.table = {{1024, 0.2}, {4096, 0.6}};
  // A skinny GEMM (k = 768) is as slow as a small square one, although its
  // geometric-mean size (4910) is past the table's end.
  const double skinny = GemmEfficiency::equivalent_size(802816, 192, 768);
  CHECK(skinny < 500);
  CHECK(g(802816, 192, 768) == Approx(0.2));
  CHECK(g(4096, 4096, 1024) == Approx(g.at_size(2048)));  // 3 / (2/4096 + 1/1024)
  CHECK(g(4096, 4096, 1024) < g(4096, 4096, 4096));
}

TEST_CASE("memory-bound work runs at the measured streaming HBM bandwidth", "[planner][efficiency]") {
  // STREAM triad over the datasheet bandwidth (Azure ND A100 v4, ND H100 v5, ND H200 v5).
  CHECK(gpu_preset("a100").hbm_efficiency == Approx(1.70 / 2.0));
  CHECK(gpu_preset("h100").hbm_efficiency == Approx(2.97 / 3.35));
  CHECK(gpu_preset("h200").hbm_efficiency == Approx(4.15 / 4.8));
  CHECK(gpu_preset("cpu").hbm_efficiency == 1);
  CHECK(gpu_preset("h100").hbm_stream_bw() == Approx(2.97e12));

  const GptConfig cfg = model(24, 2048, 16);
  Layout l;
  l.micro_batch = 4;
  const Workload work{16, 0};
  Cluster full = cluster_preset("h100", 8);
  full.gpu.hbm_efficiency = 1;
  Cluster half = full;
  half.gpu.hbm_efficiency = 0.5;
  const TimeBreakdown a = predict_time(cfg, l, Precision::bf16(), work, full);
  const TimeBreakdown b = predict_time(cfg, l, Precision::bf16(), work, half);
  // Kernel launches (14 per block and pass, 8 for the loss) are the only
  // elementwise cost that does not scale.
  const double launches = (3 * 24 * 14 + 8) * full.gpu.launch_overhead;
  CHECK(b.elementwise - launches == Approx(2 * (a.elementwise - launches)).epsilon(1e-9));
  CHECK(b.optimizer == Approx(2 * a.optimizer));
  CHECK(b.gemm == Approx(a.gemm));  // these GEMMs are compute-bound

  const std::string path = "planner_efficiency_test_cluster.yaml";
  {
    std::ofstream f(path);
    f << "gpu: a100\nhbm_efficiency: 0.8\n";
  }
  CHECK(load_cluster_yaml(path).gpu.hbm_efficiency == Approx(0.8));
  {
    std::ofstream f(path);
    f << "gpu: h100\nhbm_efficiency: 1.2\n";
  }
  CHECK_THROWS_WITH(load_cluster_yaml(path), Catch::Contains("HBM efficiency must be in (0, 1]"));
  std::remove(path.c_str());
}

TEST_CASE("Hopper GEMM efficiencies: measured benchmarks times the A100's training ratio", "[planner][efficiency]") {
  // A100: preset max efficiency 0.75 over its measured MAMF 0.869 of peak.
  const double ratio = 0.75 / 0.869;
  const GpuSpec h100 = gpu_preset("h100");
  // bf16: H100 MAMF 794.5 / 989 TFLOP/s.
  CHECK(h100.gemm.max_eff == Approx(0.803 * ratio));
  CHECK(h100.gemm.half_size == Approx(484));
  // FP8: cuBLASLt 8192^3 at 1290.1 TFLOP/s on H100, 1300.6 on H200, of 1979.
  CHECK(h100.fp8_gemm.at_size(8192) == Approx(1290.1 / 1979 * ratio));
  CHECK(gpu_preset("h200").fp8_gemm.at_size(8192) == Approx(1300.6 / 1979 * ratio));
  CHECK(gpu_preset("h200").gemm.max_eff == Approx(h100.gemm.max_eff));
  // The A100 preset is the anchor and keeps its curve.
  CHECK(gpu_preset("a100").gemm.max_eff == Approx(0.75));
  CHECK(gpu_preset("a100").gemm.half_size == Approx(256));
}

TEST_CASE("the cross-entropy moves 2 ab + 9 lb bytes per logit", "[planner][efficiency]") {
  // Forward: upcast (read 2 B, write 4 B), max and sum-exp reads, normalised
  // write; backward: dense gradient write, softmax backward (2 reads, 1 write),
  // downcast (read 4 B, write 2 B): 2 x 2 + 9 x 4 = 40 B per logit in bf16.
  GptConfig small = model(2, 1024, 8), large = small;
  small.vocab_size = 32768;
  large.vocab_size = 65536;
  Layout l;
  l.micro_batch = 2;
  const Workload work{2, 0};
  const Cluster h100 = cluster_preset("h100", 8);
  const TimeBreakdown a = predict_time(small, l, Precision::bf16(), work, h100);
  const TimeBreakdown b = predict_time(large, l, Precision::bf16(), work, h100);
  const double logits = 2.0 * 2048 * (large.padded_vocab() - small.padded_vocab());
  CHECK(b.elementwise - a.elementwise == Approx(logits * 40 / h100.gpu.hbm_stream_bw()).epsilon(1e-9));
}

TEST_CASE("pp3d's own precision: GEMMs at the rate its CUDA path runs them (issue 22)", "[planner][efficiency]") {
  // pp3d --bf16 --compute-dtype f32 multiplies through f32 copies with
  // CUBLAS_COMPUTE_32F (true fp32, 67 TFLOP/s on an H100) and attention is its f32
  // flash kernel; with 16-bit compute (the default of --bf16), the linear GEMMs take 16-bit operands on tensor cores
  // (989) and attention is cuDNN's SDPA in bf16. Published fp32 runs use TF32 (494.5).
  const GptConfig cfg = model(4, 4096, 32);
  Layout l;
  l.micro_batch = 4;
  const Workload work{4, 2048};
  const Cluster h100 = cluster_preset("h100", 8);
  const TimeBreakdown f32 = predict_time(cfg, l, Precision::pp3d(true, false), work, h100);
  const TimeBreakdown c16 = predict_time(cfg, l, Precision::pp3d(true, true), work, h100);
  const TimeBreakdown megatron = predict_time(cfg, l, Precision::bf16(), work, h100);
  const TimeBreakdown tf32 = predict_time(cfg, l, Precision::fp32(), work, h100);
  const TimeBreakdown pp3d_fp32 = predict_time(cfg, l, Precision::pp3d(false), work, h100);
  // At these large shapes the GEMMs are compute bound: time ~ 1 / rate.
  CHECK(f32.gemm / c16.gemm == Approx(989.0 / 67).epsilon(0.02));  // compute bound: time ~ 1 / rate
  CHECK(c16.gemm == Approx(megatron.gemm).epsilon(1e-9));          // the same math as a Megatron bf16 run
  CHECK(pp3d_fp32.gemm / tf32.gemm == Approx(494.5 / 67).epsilon(0.02));  // true fp32 vs TF32
  CHECK(f32.gemm == Approx(pp3d_fp32.gemm).epsilon(1e-9));  // 16-bit weights alone do not change the math rate
  // The CPU preset has one rate: nothing changes there.
  const Cluster cpu = cluster_preset("cpu", 1);
  CHECK(predict_time(cfg, l, Precision::pp3d(true, true), work, cpu).gemm ==
        Approx(predict_time(cfg, l, Precision::pp3d(true, false), work, cpu).gemm).epsilon(1e-12));
}
