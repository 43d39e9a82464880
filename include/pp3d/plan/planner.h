// Planner: an analytic memory and step-time model of a GPT training layout on
// a cluster, and a search over layouts (tp, pp, dp, ZeRO stage, micro-batch,
// schedule, recompute) ranked by predicted throughput.
//
// Formulas (ZeRO paper accounting, Korthikanti et al. 2022 activations,
// Narayanan et al. 2021 FLOPs and bubbles, alpha-beta links) are documented in
// docs/PLANNER.md. Everything here is a pure function of its arguments:
// thread-safe, no allocation accounting. Sizes are bytes (double), times seconds.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "pp3d/core/allocator.h"
#include "pp3d/model/gpt_config.h"
#include "pp3d/plan/hardware.h"
#include "pp3d/plan/layout.h"

namespace pp3d {

// ---- parameters ---------------------------------------------------------------
// Transformer blocks held by each pipeline stage (even split, or with
// layout.uneven_pp the remainder spread one each over the last stages).
std::vector<int64_t> stage_layer_counts(const GptConfig& cfg, const Layout& layout);
// Parameters held by one tensor-parallel rank of pipeline stage `stage`: its
// blocks (matrices and the QKV/fc biases split by tp; LayerNorms and the
// row-parallel output biases replicated), the vocab-parallel wte and the
// replicated wpe on stage 0, the final LayerNorm and the head on the last stage
// (with tied embeddings and pp > 1 the last stage holds its own copy of wte).
double stage_parameters(const GptConfig& cfg, const Layout& layout, int stage);

// ---- model states (ZeRO) -------------------------------------------------------
struct ModelStateBytes {
  double params = 0, grads = 0, optimizer = 0;
  double total() const { return params + grads + optimizer; }
};
// ZeRO accounting for psi parameters per model shard and nd data-parallel
// ranks: stage 0 replicates everything, 1 shards the optimizer state, 2 also the
// gradients, 3 also the parameters. Mixed precision: 16psi, 4psi + 12psi/nd,
// 2psi + 14psi/nd, 16psi/nd.
ModelStateBytes model_state_bytes(double psi, int nd, int zero_stage, const Precision& prec);

// ---- activations ----------------------------------------------------------------
// Bytes of activations one transformer block keeps for backward, per
// micro-batch of b sequences of length s (Korthikanti et al. 2022): in 16-bit
// with dropout, no recompute: sbh(34 + 5as/h) at t = 1; sbh(10 + 24/t + 5as/(ht))
// with tensor parallelism; sbh(34/t + 5as/(ht)) with sequence parallelism; 2sbh
// (/t with sp) with full recompute. options.flash_attention drops the a*s*s
// terms (keeping the fp32 log-sum-exp, 4asb/t); options.dropout=false drops the
// masks. Elements scale with Precision::activation_bytes (masks stay 1 byte).
double activation_bytes_per_layer(const GptConfig& cfg, int64_t seq_len, int64_t micro_batch, int tp,
                                  bool sequence_parallel, Recompute recompute, const Precision& prec,
                                  const ModelOptions& options);
// Micro-batches whose activations are live at the peak on pipeline stage
// `stage` (m = micro-batches per step): GPipe m; 1F1B min(pp - stage, m);
// interleaved (Megatron) min(2(pp - stage - 1) + (v - 1)pp + 1, m v) chunks,
// returned in units of whole-stage micro-batches (chunks / v); zb-h1 min(pp, m):
// 1F1B's min(pp - stage, m) full sets plus the pending weight parts of the
// rest, each counted as a full set (its GEMM inputs and output gradients are
// about as large: 16NC vs 16NC + O(N) per GPT block).
double in_flight_micro_batches(const Layout& layout, int64_t num_micro_batches, int stage);

// ---- memory per GPU -----------------------------------------------------------
// Per-category bytes on one GPU; fields match MemCategory.
struct MemoryBreakdown {
  double params = 0, grads = 0, optimizer = 0, activations = 0, comm = 0, workspace = 0;
  // How the numbers came about (for --explain and the rejection messages).
  int stage = 0;                // pipeline stage these numbers are for
  double psi = 0;               // parameters of this rank's model shard
  int64_t layers = 0;           // blocks on this stage
  double in_flight = 0;         // micro-batches with live activations
  double activation_per_layer = 0;  // bytes per block per micro-batch
  double logits = 0;            // part of `activations`: logits/loss buffer (last stage)
  double recompute_working = 0;  // part of `activations`: one block's full activations (recompute)

  double total() const { return params + grads + optimizer + activations + comm + workspace; }
  double get(MemCategory c) const;
};

// Memory of one pipeline stage, and of the most loaded stage (the maximum
// total over stages, which is what must fit). Throws pp3d::Error when the
// layout does not divide the model or batch (see check_layout()).
MemoryBreakdown predict_stage_memory(const GptConfig& cfg, const Layout& layout, const Precision& prec,
                                     const Workload& work, const ModelOptions& options, int stage);
MemoryBreakdown predict_memory(const GptConfig& cfg, const Layout& layout, const Precision& prec,
                               const Workload& work, const ModelOptions& options = {});

// ---- step time ------------------------------------------------------------------
struct TimeBreakdown {
  // Per micro-batch on the slowest stage (forward + backward + recompute):
  double gemm = 0;         // GEMMs: flops / (peak * eff(shape)), or memory-bound if skinny
  double elementwise = 0;  // LayerNorm, GELU, residual, softmax, loss: bytes / HBM bandwidth
  double tp_comm = 0;      // tensor-parallel all-reduces (or all-gather + reduce-scatter)
  double pp_p2p = 0;       // activation and gradient sends at stage boundaries
  double per_micro_batch = 0;
  int slowest_stage = 0;
  // Per step:
  int64_t num_micro_batches = 0;
  double pipeline = 0;         // (m + (p-1)/v) * per_micro_batch
  double bubble = 0;           // idle part of `pipeline`
  double bubble_fraction = 0;  // (p-1)/(v m); zb-h1 (p-1)/(3m) (m >= p)
  double dp_comm = 0;          // data-parallel / ZeRO traffic time, all of it
  double dp_exposed = 0;       // the part not hidden behind backward
  double embedding_sync = 0;   // tied-embedding all-reduce between first and last stage
  double optimizer = 0;        // Adam over this rank's optimizer shard
  double step = 0;
  // Throughput:
  double tokens_per_step = 0;
  double tokens_per_s = 0;
  double model_flops = 0;     // per step, whole job: 6 N tokens + attention
  double hardware_flops = 0;  // per step, whole job, recompute included
  double tflops_per_gpu = 0;  // hardware FLOP/s per GPU / 1e12
  double mfu = 0;             // model FLOP/s / (gpus * peak)
};
TimeBreakdown predict_time(const GptConfig& cfg, const Layout& layout, const Precision& prec,
                           const Workload& work, const Cluster& cluster, const ModelOptions& options = {});

// ---- search -------------------------------------------------------------------
struct PlanRequest {
  int gpus = 8;
  Workload work;
  Precision precision;
  ModelOptions options;
  bool allow_uneven_pp = false;   // also try pp that does not divide num_layers
  bool include_gpipe = false;     // GPipe never beats 1F1B in time and uses more memory
  int64_t max_micro_batch = 64;
  double memory_fraction = 1.0;   // usable fraction of device memory
};

// Why a layout is invalid for this model, batch and cluster ("" when valid):
// divisibility of heads/vocab/layers/GPUs/batch, tp beyond one node, v, ...
// Does not look at memory.
std::string check_layout(const GptConfig& cfg, const Layout& layout, const Cluster& cluster,
                         const PlanRequest& request);

struct Candidate {
  Layout layout;
  MemoryBreakdown memory;
  TimeBreakdown time;
};
struct Rejection {
  Layout layout;
  std::string reason;   // short class, e.g. "out of memory", "tp does not divide num_heads"
  std::string message;  // full sentence with numbers
};
struct PlanResult {
  std::vector<Candidate> feasible;              // best first (tokens/s, then memory)
  std::map<std::string, int64_t> rejected;      // reason -> count
  std::vector<Rejection> rejection_examples;    // first example of each reason
  std::vector<Rejection> out_of_memory;         // the fastest few that did not fit
  int64_t considered = 0;
};

class Planner {
 public:
  // Validates cfg, cluster and request (throws pp3d::Error naming the field).
  Planner(GptConfig cfg, Cluster cluster, PlanRequest request);

  // Memory and time of one layout; dp = 0 means gpus / (tp * pp). Throws
  // pp3d::Error with check_layout()'s reason when the layout is invalid.
  Candidate evaluate(Layout layout) const;
  // Memory check: "" when it fits, else "needs 93.1 GB > 80.0 GB: activations ...".
  std::string memory_verdict(const MemoryBreakdown& mem) const;
  // Enumerates the search space (see docs/PLANNER.md) and ranks what fits.
  PlanResult search() const;
  // Multi-line human-readable breakdown of one layout.
  std::string explain(const Layout& layout) const;
  // A few sentences on why result.feasible[0] beats the best layouts that
  // differ from it in (tp, pp), in ZeRO stage and in recompute.
  std::string explain_winner(const PlanResult& result) const;

  const GptConfig& config() const { return cfg_; }
  const Cluster& cluster() const { return cluster_; }
  const PlanRequest& request() const { return req_; }
  double memory_limit() const { return cluster_.gpu.memory_bytes * req_.memory_fraction; }

 private:
  GptConfig cfg_;
  Cluster cluster_;
  PlanRequest req_;
};

}  // namespace pp3d
