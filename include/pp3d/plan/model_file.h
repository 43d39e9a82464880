// Loading the planner's model description (a GptConfig) from a model YAML file
// (configs/models/*.yaml), and describing a pp3d::Llama to the planner.
//
// Keys: arch (gpt2 | llama; default gpt2); required num_layers, hidden_size,
// num_heads, vocab_size, seq_len (-> GptConfig::max_seq_len). Optional for
// both: padded_vocab_size, mlp_hidden_size, tied_embeddings, init_std; gpt2:
// ln_eps; llama: num_kv_heads, rope_theta, norm_eps (mlp_hidden_size is
// required for llama; tied_embeddings defaults to false for llama, true for
// gpt2). Any other key is rejected with its name. Pure functions; thread-safe.
#pragma once

#include <string>

#include "pp3d/model/gpt_config.h"

namespace pp3d {

struct LlamaConfig;

// Throws pp3d::Error naming the file and the missing, unknown or bad key.
GptConfig load_gpt_config_yaml(const std::string& path);

// The planner's description (arch Llama) of the model pp3d::Llama builds for
// `llama`: same sizes, kv heads, padded vocabulary, head tying.
GptConfig llama_plan_config(const LlamaConfig& llama);

}  // namespace pp3d
