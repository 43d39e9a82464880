// Published measurements of large GPT and Llama training runs (docs/data/published_runs.yaml)
// and the planner's predictions for them: the validation table of
// docs/PLANNER.md, printed by `pp3d-plan --validate-published FILE`.
//
// Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "pp3d/plan/planner.h"

namespace pp3d {

struct PublishedRun {
  std::string name, source;
  std::string gpu = "a100";
  int gpus_per_node = 8;
  GptConfig model;        // layers, hidden, heads, vocab (51200), seq_len (2048); untied head;
                          // arch llama: kv_heads (0: heads), ffn (SwiGLU width), no dropout
  int gpus = 0;
  Layout layout;          // tp, pp, dp = gpus / (tp pp), zero, micro_batch (0: the planner's best), schedule, v, recompute, sp
  int64_t global_batch = 0;
  std::string metric;     // "hardware_tflops" (recompute counted), "model_tflops" (MFU x peak) or
                          // "tokens_per_gpu" (tokens/s per GPU: no FLOP convention involved)
  double published = 0;   // TFLOP/s per GPU, or tokens/s per GPU
  bool dp_overlap = true;  // false: the framework reduces gradients after the backward pass (no overlap)
  std::string precision = "bf16";  // "bf16" or "fp8" (Transformer Engine FP8 linear layers)
  bool flash_attention = false;    // fused attention that never stores the s x s scores
  bool dropout = true;             // attention and hidden dropout (Megatron's 0.1 defaults)
  bool tp_overlap = false;         // TP collectives pipelined with the adjacent GEMMs (userbuffers)
  bool pp_overlap = false;         // interleaved-pipeline p2p overlapped with the next chunk (overlap_p2p_comm)
  bool holdout = false;            // evaluated only after the model's terms were fixed (out-of-sample check)
};

// Reads the `runs:` list (keys in the file's header comment). Throws
// pp3d::Error naming the file, the run and the bad or unknown key.
std::vector<PublishedRun> load_published_runs(const std::string& path);

struct PublishedComparison {
  PublishedRun run;
  Candidate predicted;   // the layout evaluated (micro-batch resolved)
  double predicted_tflops = 0;  // in the run's metric (tokens/s per GPU for "tokens_per_gpu")
  double error = 0;             // predicted / published - 1
};
// Evaluates every run on its preset cluster (memory is not checked: the
// published runs ran). micro_batch 0: the fastest power of two <= 8 that fits.
std::vector<PublishedComparison> compare_published(const std::vector<PublishedRun>& runs);
double mean_abs_error(const std::vector<PublishedComparison>& rows);
double max_abs_error(const std::vector<PublishedComparison>& rows);
// The rows whose run.gpu is one of `gpus` (e.g. {"h100", "h200"}), whose
// run.holdout equals `holdout` (default: the rows the model was checked on)
// and whose model is of `arch` (GPT rows and Llama rows are separate sets).
std::vector<PublishedComparison> rows_on(const std::vector<PublishedComparison>& rows,
                                         const std::vector<std::string>& gpus, bool holdout = false,
                                         ModelArch arch = ModelArch::Gpt2);
// The table printed by pp3d-plan --validate-published (Markdown).
std::string published_table(const std::vector<PublishedComparison>& rows);

}  // namespace pp3d
