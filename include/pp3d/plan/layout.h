// The planner's description of one parallel layout, the workload and the
// numeric precision, plus parsing/printing of layouts ("tp=2,pp=4,zero=1,mb=2").
//
// Plain value types; thread-safe.
#pragma once

#include <cstdint>
#include <string>

namespace pp3d {

enum class Schedule { GPipe, OneFOneB, Interleaved, ZeroBubbleH1 };
enum class Recompute { None, Full };

const char* schedule_name(Schedule s);   // "gpipe", "1f1b", "interleaved", "zb-h1"
const char* recompute_name(Recompute r);  // "none", "full"

// One point of the search space. dp is derived from the GPU count when 0.
struct Layout {
  int tp = 1;
  int pp = 1;
  int dp = 1;
  int zero_stage = 0;             // 0..3
  int64_t micro_batch = 1;        // sequences per micro-batch per DP rank
  Schedule schedule = Schedule::OneFOneB;
  int virtual_stages = 1;         // v: model chunks per rank (interleaved only)
  Recompute recompute = Recompute::None;
  bool sequence_parallel = false;  // only meaningful with tp > 1
  bool uneven_pp = false;          // allow num_layers % pp != 0

  int gpus() const { return tp * pp * dp; }
  // "tp=2 pp=4 dp=8 zero=1 mb=2 1f1b recompute=none sp=1".
  std::string str() const;
  // Machine-readable form that parse_layout() reads back exactly:
  // "tp=2,pp=4,dp=8,zero=1,mb=2,sched=1f1b,v=1,recompute=none,sp=1,uneven=0".
  std::string spec() const;
};

// Parses "tp=2,pp=4,dp=8,zero=1,mb=2,sched=interleaved,v=2,recompute=full,sp=1"
// (any subset, any order; commas or spaces). Keys: tp pp dp zero mb
// sched|schedule v recompute sp uneven. Unset fields keep Layout defaults,
// except sp which defaults to on when tp > 1. Throws pp3d::Error naming a bad
// key or value.
Layout parse_layout(const std::string& text);

// What is trained: sequences per optimizer step and tokens per sequence.
struct Workload {
  int64_t global_batch = 512;
  int64_t seq_len = 0;  // 0: the model's max_seq_len
};

// Numeric precision. Mixed precision (bf16/fp16 compute, fp32 master weights and
// Adam moments, the ZeRO paper's K = 12): 2 B params, 2 B grads, 12 B optimizer
// state per parameter. fp32 training: 4 B params, 4 B grads, 8 B Adam (m, v).
//
// pp3d's own trainer (lib/model, lib/parallel) keeps f32 gradients by default
// whatever the parameter dtype, or 16-bit ones with --grad-dtype param (the
// parameter gradients, the bucket buffers, ZeRO-2/3 shards and the reductions
// all in the 16-bit dtype: the ZeRO paper's 16Ψ family). Precision::pp3d()
// sets the element-size overrides accordingly (grads 4 B, 2 B with `grad16`;
// params 2 B with --bf16/--fp16, else 4 B; optimizer 12 B or 8 B). Its activations are counted per tensor by the pp3d accounting
// (ModelOptions::pp3d_accounting, docs/PLANNER.md): act_elem is the stored
// residual stream (block inputs, x2, the hidden state between layers and
// stages: 4 B, 2 B with --activation-dtype param), `compute16` says the
// per-op activations (norm outputs, q/k/v, attention output, MLP
// activations) and their gradients flow in 16 bits (--compute-dtype param,
// or auto with --bf16/--fp16); the per-op activations are stored in 2 B
// also with --activation-dtype param; norm statistics, the attention
// log-sum-exp, the logits and the residual gradients stay f32.
//
// fp8 (Precision::fp8(), mixed only): the transformer blocks' linear-layer GEMMs
// run in FP8 on the GPU's FP8 tensor-core peak, as Transformer Engine does
// (attention, LM head and everything else stay bf16). Costs: each GEMM input
// and output gradient is cast to FP8 with its transpose (read 2 B, write
// 1 B + 1 B per element: Hopper FP8 GEMMs take only the TN layout), and
// every linear weight keeps an FP8 copy and its FP8 transpose between
// micro-batches (2 B per linear parameter, counted as params). Saves: the
// four linear-layer inputs are kept as their 1-byte FP8 casts for backward.
struct Precision {
  bool mixed = true;        // false: everything fp32
  double logits_bytes = 4;  // logits/loss buffer element size (fp32 for a stable softmax)
  double grad_elem = 0;     // > 0: gradient element size overriding the default above
  double act_elem = 0;      // > 0: activation element size overriding the default above
  bool fp8_gemm = false;    // linear-layer GEMMs in FP8 (see above)
  // pp3d's own GPU math (issue 22): with --compute-dtype param the linear GEMMs
  // (the LM head included) take 16-bit operands on tensor cores and attention
  // runs as cuDNN's fused SDPA in 16 bits; otherwise both are f32 math (GEMMs on
  // f32 copies, pp3d's f32 flash kernel), and pp3d's f32 math is true fp32 on
  // CUDA cores (GpuSpec::cuda_core_fp32), not TF32 as in published fp32 runs.
  bool linear16 = true;     // mixed: linear GEMMs at the 16-bit peak; false: at the fp32 rate
  bool attention16 = true;  // mixed: attention at the 16-bit peak; false: at the fp32 rate
  bool cuda_core_fp32 = false;  // the fp32 rate is GpuSpec::cuda_core_fp32(), not the TF32 fp32 peak
  bool compute16 = false;       // pp3d accounting: per-op activations and their gradients in 16 bits (above)

  double param_bytes() const { return mixed ? 2 : 4; }
  double grad_bytes() const { return grad_elem > 0 ? grad_elem : (mixed ? 2 : 4); }
  double optimizer_bytes() const { return mixed ? 12 : 8; }
  double activation_bytes() const { return act_elem > 0 ? act_elem : (mixed ? 2 : 4); }
  static Precision bf16() { return {}; }
  static Precision fp32() { return {false, 4}; }
  static Precision fp8() { return {true, 4, 0, 0, true}; }
  // pp3d-train's precision: 16-bit parameters with --bf16/--fp16 (`half_params`),
  // 16-bit compute (`compute16`: TrainConfig::compute16(), the linear GEMMs and
  // attention on 16-bit operands, 16-bit per-op activations) and 16-bit
  // activation storage (`act16`: --activation-dtype param) and 16-bit parameter
  // gradients (`grad16`: --grad-dtype param); all three need half_params.
  static Precision pp3d(bool half_params, bool compute16 = false, bool act16 = false, bool grad16 = false) {
    const bool c16 = half_params && compute16;
    return {half_params, 4, half_params && grad16 ? 2.0 : 4.0, half_params && act16 ? 2.0 : 4.0, false, c16, c16,
            true, c16};
  }
};

// Knobs of the memory and time model (documented in docs/PLANNER.md).
struct ModelOptions {
  bool flash_attention = true;     // attention never stores the s x s scores (drop the 5as/h term)
  bool dropout = false;            // pp3d's GPT has no dropout; true reproduces Korthikanti et al.'s 34
  double bucket_bytes = 25e6;      // gradient bucket size; comm buffers = 2 buckets
  double workspace_bytes = 1.0e9;  // cuBLAS/cuDNN workspace, allocator slack, CUDA context
  double dp_exposed_fraction = 0.3;  // fraction of DP/ZeRO communication not hidden behind compute
  // Model pp3d's own trainer exactly as its allocator counts (docs/PLANNER.md,
  // "pp3d accounting"): the activation tensors lib/model keeps plus the
  // largest backward temporary, gradient buffers kept unsharded until the
  // step's last reduce-scatter (ZeRO-2/3), ZeRO-3 gathered layers counted as
  // params. false: the published (Megatron/DeepSpeed) accounting.
  bool pp3d_accounting = false;
  int prefetch_layers = 1;  // pp3d ZeRO-3: layers gathered ahead (--prefetch-layers)
  // Tensor-parallel communication overlap (Transformer Engine userbuffers):
  // each sequence-parallel all-gather / reduce-scatter is split into tp chunks
  // exchanged while the adjacent GEMM computes on the chunks already there, so
  // only max(one chunk, comm - GEMM) of it is on the critical path.
  bool tp_overlap = false;
  // Pipeline p2p overlap (Megatron's --overlap-p2p-communication, NeMo's
  // overlap_p2p_comm; interleaved schedule only): each chunk's activation or
  // gradient send/receive runs while the next chunk computes, so only
  // max(0, transfer - that chunk's compute) of it is on the critical path.
  bool pp_overlap = false;
};

}  // namespace pp3d
