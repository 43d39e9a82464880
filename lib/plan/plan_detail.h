// Internal helpers shared by the planner's memory, time and search files.
#pragma once

#include <cstdint>
#include <string>

#include "pp3d/model/gpt_config.h"
#include "pp3d/plan/layout.h"

namespace pp3d::detail {

// Training sequence length: work.seq_len, or the model's context when 0.
int64_t plan_seq_len(const GptConfig& cfg, const Workload& work);
// Why (cfg, layout, work) cannot be modelled ("" when it can): divisibility of
// heads, MLP, vocab, layers, batch; zero stage; v. dp must be set (>= 1).
std::string model_fit_reason(const GptConfig& cfg, const Layout& layout, const Workload& work);
// Throws pp3d::Error with model_fit_reason() when non-empty.
void check_model_fit(const GptConfig& cfg, const Layout& layout, const Workload& work);
// Whether every forward of the step runs before the first backward: GPipe,
// and interleaved 1F1B with exactly m = pp micro-batches (pp3d's schedule, as
// Megatron's, then warms up with all m*v chunk forwards).
bool all_forwards_first(const Layout& layout, int64_t num_micro_batches);
// m = global_batch / (dp * micro_batch); requires check_model_fit().
int64_t plan_micro_batches(const Layout& layout, const Workload& work);
// Parameters of one block per tensor-parallel rank (GPT-2 or Llama block).
double block_parameters(const GptConfig& cfg, int tp);
// Elements of one whole block's linear (matmul) weights: GPT 4C^2 + 2CF;
// Llama 2C^2 + 2C*Ckv + 3CF (Ckv = kv_heads * head_dim).
double linear_weights_per_block(const GptConfig& cfg);

}  // namespace pp3d::detail

namespace pp3d {
struct MemoryBreakdown;
struct ModelOptions;
}  // namespace pp3d

namespace pp3d::detail {

// pp3d accounting (ModelOptions::pp3d_accounting, lib/plan/memory_pp3d.cpp):
// fills r.activations (the allocator's Activations peak on `stage`) and its
// parts (in_flight, activation_per_layer, logits, recompute_working).
void pp3d_activations(const GptConfig& cfg, const Layout& l, const Precision& prec, const Workload& work,
                      const ModelOptions& opt, int stage, MemoryBreakdown& r);
// Peak elements of ZeRO-3 gathered (full) parameters on `stage`: the largest
// window of 1 + prefetch consecutive layers in execution order (embedding,
// blocks, head; the head of a whole tied model also uses the embedding).
double pp3d_zero3_gathered(const GptConfig& cfg, const Layout& l, int stage, int prefetch);
}  // namespace pp3d::detail
