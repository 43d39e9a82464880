// Loading a GptConfig from a model YAML file (configs/models/*.yaml).
//
// Required keys: num_layers, hidden_size, num_heads, vocab_size, seq_len
// (-> GptConfig::max_seq_len). Optional: padded_vocab_size, mlp_hidden_size,
// tied_embeddings, ln_eps, init_std. Any other key is rejected with its name.
// Pure function; thread-safe.
#pragma once

#include <string>

#include "pp3d/model/gpt_config.h"

namespace pp3d {

// Throws pp3d::Error naming the file and the missing, unknown or bad key.
GptConfig load_gpt_config_yaml(const std::string& path);

}  // namespace pp3d
