// Describing a Llama as a GptConfig with arch Llama, and back: checkpoint
// manifests, the planner and the Trainer carry one model description type.
// Kept out of llama.h because pp3d::Llama is written as a client of the
// public headers and does not depend on GPT's (layering_test).
#pragma once

#include "pp3d/model/gpt_config.h"
#include "pp3d/model/llama.h"

namespace pp3d {

// The same shape as a GptConfig with arch Llama (how checkpoint manifests and
// the planner describe a Llama: ln_eps is norm_eps) and back. Lossless for every
// LlamaConfig field except wpe_init_std, which Llama does not have.
GptConfig to_gpt_config(const LlamaConfig& llama);
// Throws pp3d::Error when `config` is not arch Llama.
LlamaConfig to_llama_config(const GptConfig& config);

}  // namespace pp3d
