#include "pp3d/model/arch_config.h"

#include "pp3d/core/error.h"

namespace pp3d {

GptConfig to_gpt_config(const LlamaConfig& llama) {
  const LlamaConfig l = llama.resolved();
  GptConfig c;
  c.arch = ModelArch::Llama;
  c.vocab_size = l.vocab_size;
  c.padded_vocab_size = l.padded_vocab_size;
  c.max_seq_len = l.max_seq_len;
  c.num_layers = l.num_layers;
  c.num_heads = l.num_heads;
  c.num_kv_heads = l.num_kv_heads;
  c.hidden_size = l.hidden_size;
  c.mlp_hidden_size = l.mlp_hidden_size;
  c.ln_eps = l.norm_eps > 0 ? l.norm_eps : 1e-5f;
  c.rope_theta = l.rope_theta;
  c.init_std = l.init_std;
  c.tied_embeddings = l.tied_embeddings;
  c.validate();
  return c;
}

LlamaConfig to_llama_config(const GptConfig& config) {
  PP3D_CHECK(config.is_llama(), "to_llama_config: the config describes a {} model, not a Llama", config.str());
  const GptConfig g = config.resolved();
  LlamaConfig l;
  l.vocab_size = g.vocab_size;
  l.padded_vocab_size = g.padded_vocab_size;
  l.hidden_size = g.hidden_size;
  l.num_layers = g.num_layers;
  l.num_heads = g.num_heads;
  l.num_kv_heads = g.kv_heads();
  l.mlp_hidden_size = g.mlp_hidden_size;
  l.max_seq_len = g.max_seq_len;
  l.rope_theta = g.rope_theta;
  l.norm_eps = g.ln_eps;
  l.tied_embeddings = g.tied_embeddings;
  l.init_std = g.init_std;
  return l;
}

}  // namespace pp3d
