// Model FLOPs and peak throughput for metrics.jsonl's tflops / mfu fields.
//
// FLOPs per token (forward + backward = 3 x forward; Megatron-LM's formula,
// Narayanan et al. 2021, eq. 3, written per token):
//     6 * N_matmul + 12 * L * T * C
// N_matmul counts the weights that take part in matrix multiplications: per
// block qkv (3 C^2), attention projection (C^2) and the MLP (2 C F), plus the
// LM head (Vp C, counted once whether or not it is tied to wte, because the
// head GEMM runs either way). A Llama block (arch Llama) has q and o (2 C^2),
// k and v (2 C Ckv, Ckv = kv_heads * head_dim) and the SwiGLU MLP (3 C F), as
// the planner counts it. Embedding lookups (wte, wpe), LayerNorms and
// biases are left out (they are not matmuls; < 1% for GPT-2 sizes). The
// attention term is QK^T and AV (2 * 2 T C FLOPs per token and layer,
// forward) without halving for the causal mask, as Megatron and nanoGPT do.
// Activation recompute is not counted (model FLOPs, not hardware FLOPs).
// Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "pp3d/core/device.h"
#include "pp3d/model/gpt_config.h"

namespace pp3d::detail {

// N_matmul above.
int64_t matmul_parameters(const GptConfig& c);
// 6 * N_matmul + 12 * L * T * C for sequences of `seq_len` tokens.
double model_flops_per_token(const GptConfig& c, int64_t seq_len);

// Dense peak TFLOP/s of one GPU called `gpu_name` (e.g. "NVIDIA H100 80GB
// HBM3") for 16-bit tensor-core GEMMs (mixed = true) or plain fp32 GEMMs
// (mixed = false: the CUDA backend's f32 GEMMs are true fp32, not TF32).
// nullopt for an unknown name.
std::optional<double> known_peak_tflops(const std::string& gpu_name, bool mixed);
// The model name of the GPUs of this machine from the NVIDIA driver
// (<driver_dir>/*/information, "Model: NVIDIA H100 80GB HBM3") when all of
// them are the same model; "" otherwise (no driver, mixed models).
std::string local_gpu_model(const std::string& driver_dir = "/proc/driver/nvidia/gpus");
// The peak used for MFU: `flag` (> 0, --peak-tflops) wins; else a known GPU's
// peak on a CUDA device; else nullopt (CPU: no MFU).
std::optional<double> peak_tflops_for(const Device& device, bool mixed, double flag);

}  // namespace pp3d::detail
