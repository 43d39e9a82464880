// pp3d-train --arch llama: the Llama flags and a first training loop for
// pp3d::Llama (docs/LLAMA.md). The loop is the library's primitives assembled
// directly — DataLoader -> PipelineStage (any schedule) -> ZeroOptimizer
// (stages 0-3) -> global-norm clipping -> AdamW with the LR schedule — not
// pp3d::Trainer, which is GPT-specific so far: flags for checkpoints, resume,
// 16-bit precision and traces are rejected with --arch llama. --init-from and
// --export-safetensors take a Hugging Face Llama directory (config.json +
// model.safetensors; export with tp = pp = 1). Internal to the program.
#pragma once

#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "pp3d/comm/communicator.h"
#include "pp3d/model/llama.h"
#include "pp3d/train/trainer.h"

namespace pp3d::cli {

struct ArchFlags {
  std::string arch = "gpt2";  // gpt2 | llama
  int64_t num_kv_heads = 0;   // llama: 0 = --num-heads (multi-head attention)
  float rope_theta = 10000.0f;
  float norm_eps = 1e-5f;
};

// Registers --arch, --num-kv-heads, --rope-theta and --norm-eps.
void add_arch_options(CLI::App& app, ArchFlags& f);
// The Llama of a TrainConfig + flags for a vocabulary of `vocab` tokens (tp
// must divide the padded vocabulary). Throws a user error naming the flag for
// settings --arch llama does not support yet.
LlamaConfig llama_config(const TrainConfig& c, const ArchFlags& f, const CLI::App& app, int64_t vocab);
void check_llama_supported(const TrainConfig& c);
// The training run on `world` (collective). Logs on global rank 0; the last
// line is "done: final train loss <x>".
void run_llama(const TrainConfig& c, const ArchFlags& f, const CLI::App& app, std::shared_ptr<Communicator> world);

}  // namespace pp3d::cli
