// Hardware description for the planner: GPU presets, GEMM efficiency, links
// and clusters (presets or a YAML file).
//
// Plain value types and pure functions; no global state, thread-safe. Units are
// SI throughout: FLOP/s, bytes, bytes/s, seconds (the YAML file uses GB, TB/s,
// GB/s and microseconds for readability; see docs/PLANNER.md).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace pp3d {

// Fraction of peak FLOP/s reached by a GEMM of shape (m, n, k). Either the
// analytic default  eff(d) = max_eff * d / (d + half_size)  with d the
// equivalent square size (the harmonic mean of m, n, k: the square GEMM of
// the same arithmetic intensity), normalised so that eff -> max_eff for large d;
// or, when `table` is non-empty, a piecewise log-linear interpolation over
// (size d, efficiency) points (clamped at both ends), as produced by the GPU
// GEMM benchmark.
struct GemmEfficiency {
  double max_eff = 0.6;
  double half_size = 256.0;
  std::vector<std::pair<double, double>> table;  // sorted by size; empty: analytic

  double at_size(double d) const;
  double operator()(double m, double n, double k) const;
  static double equivalent_size(double m, double n, double k);  // 3 / (1/m + 1/n + 1/k)
};

// One accelerator. `peak_flops` is the dense peak of the mixed-precision
// compute type (bf16 tensor cores on GPUs); `fp32_peak_flops` the dense peak
// used for fp32 training (TF32 tensor cores on GPUs; the same on "cpu").
struct GpuSpec {
  std::string name;
  double peak_flops = 0;       // FLOP/s, bf16/fp16
  double fp32_peak_flops = 0;  // FLOP/s, fp32 training (0: peak_flops / 2)
  double fp8_peak_flops = 0;   // FLOP/s, dense FP8 tensor cores (0: the GPU has none)
  // True fp32 (CUDA cores, no TF32): what pp3d's f32 GEMMs (CUBLAS_COMPUTE_32F unless
  // allow_tf32) and its f32 kernels run at (0: fp32_peak_flops, e.g. CPUs).
  double cuda_core_fp32_flops = 0;
  double cuda_core_fp32() const { return cuda_core_fp32_flops > 0 ? cuda_core_fp32_flops : peak(false); }
  double peak(bool mixed) const { return mixed ? peak_flops : (fp32_peak_flops > 0 ? fp32_peak_flops : peak_flops / 2); }
  double memory_bytes = 0;   // device memory
  double hbm_bw = 0;          // bytes/s, datasheet
  double hbm_efficiency = 1;  // fraction of hbm_bw a streaming kernel reaches (STREAM triad)
  double hbm_stream_bw() const { return hbm_bw * hbm_efficiency; }  // what memory-bound ops run at
  double nvlink_bw = 0;      // bytes/s per direction per GPU (intra-node)
  double ib_bw = 0;          // bytes/s per GPU (inter-node)
  double launch_overhead = 0;  // seconds of fixed cost per kernel / op (launch, dispatch)
  double flash_attention_eff = 0;  // fraction of peak a fused flash-attention kernel reaches (0: as GEMMs)
  GemmEfficiency gemm;      // bf16/fp16 (fp32: TF32) GEMMs
  GemmEfficiency fp8_gemm;  // FP8 GEMMs (fraction of fp8_peak_flops)
};

// alpha-beta model of one link: time(bytes) = alpha + bytes / beta.
struct LinkSpec {
  double alpha = 0;  // seconds per message
  double beta = 0;   // bytes/s
  double time(double bytes) const { return alpha + bytes / beta; }
};

struct Cluster {
  GpuSpec gpu;
  int gpus_per_node = 8;
  LinkSpec intra;  // within a node (NVLink)
  LinkSpec inter;  // between nodes (InfiniBand), per GPU

  // Throws pp3d::Error naming the first non-positive field.
  void validate() const;
};

// Names accepted by gpu_preset(): "h100", "h200", "a100", "cpu".
std::vector<std::string> gpu_preset_names();
// Throws pp3d::Error listing the valid names for an unknown preset.
GpuSpec gpu_preset(const std::string& name);
// A cluster of `gpus_per_node` GPUs of preset `gpu` per node, with the
// preset's NVLink/IB bandwidths and default latencies (intra 5 us, inter 10 us;
// "cpu": shared memory MPI, 20 us).
Cluster cluster_preset(const std::string& gpu, int gpus_per_node);

// Loads a cluster description (format in docs/PLANNER.md). Unknown keys are
// rejected with their name. `gemm_efficiency` inside the file, or a separate
// calibration file, fills GemmEfficiency::table.
Cluster load_cluster_yaml(const std::string& path);
// Loads `gemm_efficiency:` (map size -> efficiency, or list of {size, efficiency})
// from a calibration file.
GemmEfficiency load_gemm_efficiency_yaml(const std::string& path);

}  // namespace pp3d
