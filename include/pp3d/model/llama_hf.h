// Hugging Face interop for pp3d::Llama: a directory with config.json
// (LlamaForCausalLM keys) and model.safetensors (HF tensor names, which are
// pp3d's Llama parameter names; [out, in] weights, no permutation: pp3d's RoPE
// is HF's rotate_half). Vocabulary padding rows are dropped on save and filled
// with zeros on load. Host I/O; not thread-safe.
#pragma once

#include <string>
#include <vector>

#include "pp3d/core/parameter.h"
#include "pp3d/model/llama.h"

namespace pp3d {

// Reads dir/config.json. Throws pp3d::Error naming the key for missing keys
// and for what pp3d does not implement (rope_scaling, attention or MLP biases,
// an activation other than silu, a head_dim other than hidden / heads).
LlamaConfig load_llama_hf_config(const std::string& dir);

// Writes dir/config.json and dir/model.safetensors (F32) from whole,
// unsharded parameters (a tp = 1 model holding every layer, ZeRO-3 gathered).
// The directory is created if needed.
void save_llama_hf(const std::string& dir, const LlamaConfig& config, const std::vector<Parameter*>& params);

// Sets each parameter (any TP shard, any pipeline stage, f32 or 16-bit) from
// dir/model.safetensors: this rank's slice of the full tensor, so every layout
// loads the same weights. BF16 / F16 files are converted to f32 exactly.
// Throws naming the tensor when one is missing or has the wrong shape.
void load_llama_hf(const std::string& dir, const LlamaConfig& config, const std::vector<Parameter*>& params);

}  // namespace pp3d
