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

double GemmEfficiency::operator()(double m, double n, double k) const { return at_size(std::cbrt(m * n * k)); }

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

// Hopper FP8 GEMM efficiency: cuBLASLt FP8 square GEMMs on an H100 SXM (Azure
// ND H100 v5, 8192^3 at 1290 TFLOP/s) over the 1979 TFLOP/s dense FP8 peak;
// flash attention: FlashAttention-2 on the same machine, 327.9 TFLOP/s
// (head dim 128) = 0.33 of the bf16 peak (docs/PLANNER.md, "Hopper").
GpuSpec with_hopper_kernels(GpuSpec g) {
  g.flash_attention_eff = 0.33;
  g.fp8_peak_flops = 1979e12;
  g.fp8_gemm.table = {{1024, 0.139}, {2048, 0.511}, {4096, 0.615}, {8192, 0.652}, {16384, 0.696}};
  return g;
}
}  // namespace

std::vector<std::string> gpu_preset_names() { return {"h100", "h200", "a100", "cpu"}; }

GpuSpec gpu_preset(const std::string& name) {
  // Dense bf16 peaks (fp32 training: dense TF32); NVLink per direction; IB per GPU (one NIC per GPU).
  // GEMM half size = the A100's 256 scaled by the machine balance peak / HBM
  // (989/3.35 and 989/4.8 vs 312/2.0 FLOP/B): the size at which operand
  // traffic costs as much as the math grows with that ratio.
  if (name == "h100") return with_hopper_kernels(make("H100 SXM 80GB", 989, 494.5, 80, 3.35, 450, 50, 0.6, 484, 4));
  if (name == "h200") return with_hopper_kernels(make("H200 SXM 141GB", 989, 494.5, 141, 4.8, 450, 50, 0.6, 338, 4));
  if (name == "a100") return make("A100 SXM 80GB", 312, 156, 80, 2.0, 300, 25, 0.75, 256, 5);  // see docs/PLANNER.md
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
