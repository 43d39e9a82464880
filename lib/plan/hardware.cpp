// GPU presets and the GEMM efficiency model.
#include "pp3d/plan/hardware.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "pp3d/core/error.h"

namespace pp3d {

double GemmEfficiency::at_size(double d) const {
  PP3D_CHECK(d > 0, "GEMM size must be positive, got {}", d);
  if (table.empty()) return max_eff * d / (d + half_size);
  if (d <= table.front().first) return table.front().second;
  if (d >= table.back().first) return table.back().second;
  for (std::size_t i = 1; i < table.size(); ++i) {
    if (d <= table[i].first) {
      const auto [x0, y0] = table[i - 1];
      const auto [x1, y1] = table[i];
      const double w = std::log(d / x0) / std::log(x1 / x0);
      return y0 + w * (y1 - y0);
    }
  }
  return table.back().second;
}

// A GEMM runs as efficiently as the square GEMM with its arithmetic intensity:
// mnk / (mk + kn + mn) = 1 / (1/m + 1/n + 1/k) = d / 3 for a d^3 GEMM, so the
// equivalent square size is the harmonic mean of (m, n, k). Calibration tables
// are measured on square GEMMs, where this is the size itself.
double GemmEfficiency::equivalent_size(double m, double n, double k) {
  PP3D_CHECK(m > 0 && n > 0 && k > 0, "GEMM dimensions must be positive, got ({}, {}, {})", m, n, k);
  return 3.0 / (1.0 / m + 1.0 / n + 1.0 / k);
}

double GemmEfficiency::operator()(double m, double n, double k) const { return at_size(equivalent_size(m, n, k)); }

namespace {
GpuSpec make(const char* name, double tflops, double fp32_tflops, double mem_gb, double hbm_tb_s, double nvlink_gb_s, double ib_gb_s,
             double max_eff, double half, double launch_us) {
  GpuSpec g;
  g.name = name;
  g.peak_flops = tflops * 1e12;
  g.fp32_peak_flops = fp32_tflops * 1e12;
  g.memory_bytes = mem_gb * 1e9;
  g.hbm_bw = hbm_tb_s * 1e12;
  g.nvlink_bw = nvlink_gb_s * 1e9;
  g.ib_bw = ib_gb_s * 1e9;
  g.gemm.max_eff = max_eff;
  g.gemm.half_size = half;
  g.launch_overhead = launch_us * 1e-6;
  return g;
}

// GEMM benchmarks time kernels alone (best shapes, boost clocks, warm caches);
// inside a training step the same kernels run slower. The A100 preset's
// max efficiency 0.75 (docs/PLANNER.md) over the A100's measured Maximum
// Achievable Matmul FLOPS, 0.869 of peak (stas00/ml-engineering MAMF table),
// is that ratio; the Hopper presets apply it to their own measurements.
constexpr double kA100MaxEff = 0.75, kA100Mamf = 0.869;
constexpr double kTrainingOverBenchmark = kA100MaxEff / kA100Mamf;  // 0.863
constexpr double kHopperBf16Mamf = 0.803;  // H100 SXM 794.5 / 989 TFLOP/s ("H200 is the same")

// Hopper kernels (docs/PLANNER.md, "Hopper terms"): FP8 GEMMs from cuBLASLt
// FP8 square GEMMs measured on Azure ND H100 v5 / ND H200 v5 (TFLOP/s at
// d = 1024 ... 16384, over the 1979 TFLOP/s dense FP8 peak) times the
// training ratio; flash attention: FlashAttention-2, head dim 128, 327.9
// TFLOP/s = 0.33 of the bf16 peak (same machines); HBM: STREAM triad 2.97 of
// 3.35 TB/s (H100) and 4.15 of 4.8 TB/s (H200).
GpuSpec with_hopper_kernels(GpuSpec g, const std::vector<double>& fp8_tflops, double hbm_efficiency) {
  g.flash_attention_eff = 0.33;
  g.hbm_efficiency = hbm_efficiency;
  g.fp8_peak_flops = 1979e12;
  const double sizes[] = {1024, 2048, 4096, 8192, 16384};
  for (std::size_t i = 0; i < fp8_tflops.size(); ++i)
    g.fp8_gemm.table.emplace_back(sizes[i], fp8_tflops[i] / 1979 * kTrainingOverBenchmark);
  return g;
}
}  // namespace

std::vector<std::string> gpu_preset_names() { return {"h100", "h200", "a100", "cpu"}; }

GpuSpec gpu_preset(const std::string& name) {
  // Dense bf16 peaks (fp32 training: dense TF32); NVLink per direction; IB per GPU (one NIC per GPU).
  // GEMM half size = the A100's 256 scaled by the machine balance peak / HBM
  // (989/3.35 and 989/4.8 vs 312/2.0 FLOP/B): the size at which operand
  // traffic costs as much as the math grows with that ratio. Hopper bf16 max
  // efficiency = its measured MAMF times the A100's training ratio (above).
  const double hopper_max_eff = kHopperBf16Mamf * kTrainingOverBenchmark;  // 0.693
  // True fp32 on CUDA cores (datasheets): H100 / H200 SXM 67, A100 19.5 TFLOP/s.
  if (name == "h100") {
    GpuSpec g = with_hopper_kernels(make("H100 SXM 80GB", 989, 494.5, 80, 3.35, 450, 50, hopper_max_eff, 484, 4),
                                    {274.1, 1011.3, 1216.9, 1290.1, 1377.3}, 2.97 / 3.35);
    g.cuda_core_fp32_flops = 67e12;
    return g;
  }
  if (name == "h200") {
    GpuSpec g = with_hopper_kernels(make("H200 SXM 141GB", 989, 494.5, 141, 4.8, 450, 50, hopper_max_eff, 338, 4),
                                    {290.8, 1013.4, 1249.1, 1300.6, 1366.3}, 4.15 / 4.8);
    g.cuda_core_fp32_flops = 67e12;
    return g;
  }
  if (name == "a100") {  // see docs/PLANNER.md; HBM: STREAM triad 1.70 of 2.0 TB/s (Azure ND A100 v4)
    GpuSpec g = make("A100 SXM 80GB", 312, 156, 80, 2.0, 300, 25, kA100MaxEff, 256, 5);
    g.cuda_core_fp32_flops = 19.5e12;
    g.hbm_efficiency = 1.70 / 2.0;
    return g;
  }
  // This 2-core build machine: Eigen fp32 GEMM reaches 130-150 GFLOP/s on 2
  // threads (BUILD_NOTES.md); DDR ~20 GB/s; MPI over shared memory.
  if (name == "cpu") return make("CPU (2 cores, fp32)", 0.15, 0.15, 24, 0.02, 2, 1.25, 0.85, 64, 20);
  PP3D_FAIL("unknown GPU preset '{}' (known: h100, h200, a100, cpu)", name);
}

Cluster cluster_preset(const std::string& gpu, int gpus_per_node) {
  Cluster c;
  c.gpu = gpu_preset(gpu);
  c.gpus_per_node = gpus_per_node;
  const bool cpu = gpu == "cpu";
  c.intra = {cpu ? 20e-6 : 5e-6, c.gpu.nvlink_bw};
  c.inter = {cpu ? 50e-6 : 10e-6, c.gpu.ib_bw};
  c.validate();
  return c;
}

void Cluster::validate() const {
  PP3D_CHECK(gpu.peak_flops > 0, "cluster: peak FLOP/s must be positive (gpu '{}')", gpu.name);
  PP3D_CHECK(gpu.memory_bytes > 0, "cluster: GPU memory must be positive (gpu '{}')", gpu.name);
  PP3D_CHECK(gpu.hbm_bw > 0, "cluster: HBM bandwidth must be positive (gpu '{}')", gpu.name);
  PP3D_CHECK(gpu.hbm_efficiency > 0 && gpu.hbm_efficiency <= 1,
             "cluster: HBM efficiency must be in (0, 1], got {}", gpu.hbm_efficiency);
  PP3D_CHECK(gpu.launch_overhead >= 0, "cluster: launch overhead must be >= 0, got {}", gpu.launch_overhead);
  PP3D_CHECK(gpus_per_node >= 1, "cluster: gpus_per_node must be >= 1, got {}", gpus_per_node);
  PP3D_CHECK(intra.beta > 0 && inter.beta > 0, "cluster: link bandwidths must be positive (intra {}, inter {})",
             intra.beta, inter.beta);
  PP3D_CHECK(intra.alpha >= 0 && inter.alpha >= 0, "cluster: link latencies must be >= 0");
  PP3D_CHECK(gpu.gemm.max_eff > 0 && gpu.gemm.max_eff <= 1, "cluster: GEMM max efficiency must be in (0, 1], got {}",
             gpu.gemm.max_eff);
  PP3D_CHECK(gpu.flash_attention_eff >= 0 && gpu.flash_attention_eff <= 1,
             "cluster: flash attention efficiency must be in [0, 1] (0: as GEMMs), got {}", gpu.flash_attention_eff);
  PP3D_CHECK(gpu.fp8_peak_flops >= 0, "cluster: fp8 peak FLOP/s must be >= 0 (0: no FP8), got {}",
             gpu.fp8_peak_flops);
  for (const auto* table : {&gpu.gemm.table, &gpu.fp8_gemm.table}) {
    for (std::size_t i = 0; i < table->size(); ++i) {
      const auto [size, eff] = (*table)[i];
      PP3D_CHECK(size > 0 && eff > 0 && eff <= 1, "gemm_efficiency entry {}: size {} efficiency {} (need size > 0, "
                 "0 < efficiency <= 1)", i, size, eff);
      PP3D_CHECK(i == 0 || size > (*table)[i - 1].first, "gemm_efficiency sizes must be distinct");
    }
  }
}

}  // namespace pp3d
