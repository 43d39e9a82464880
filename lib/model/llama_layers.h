// The layers of pp3d::Llama (internal to lib/model; public headers only):
// the embedding, one per transformer block and the head (final norm, LM head,
// vocab-parallel cross-entropy). Activations between layers are
// [B, T_local, C] (T_local = T/tp with sequence parallelism) in the activation
// dtype (LlamaOptions::activation_dtype); activation gradients are f32.
#pragma once

#include <memory>

#include "pp3d/model/llama.h"

namespace pp3d::llama_detail {

// What every layer of one Llama instance reads (the config is resolved).
struct LayerEnv {
  LlamaConfig cfg;
  Backend* be = nullptr;
  Communicator* tp = nullptr;  // nullptr when tp_size == 1
  int tp_rank = 0, tp_size = 1;
  bool sp = false;
  bool recompute = false;
  DType act_dtype = DType::F32;   // LlamaOptions::activation_dtype: storage of saved activations / hidden state
  DType gemm_dtype = DType::F32;  // LlamaOptions::compute_dtype: 16-bit = the 16-bit activation flow between ops
  int64_t local_heads() const { return cfg.num_heads / tp_size; }
  int64_t local_kv_heads() const { return cfg.num_kv_heads / tp_size; }
  // Tokens per sequence in the norm / residual regions.
  int64_t local_seq(int64_t T) const { return sp ? T / tp_size : T; }
};

struct BlockParams {
  Parameter *input_norm, *q, *k, *v, *o, *post_norm, *gate, *up, *down;
};

std::unique_ptr<Layer> make_embedding_layer(const LayerEnv& env, Parameter& embed);
std::unique_ptr<Layer> make_block_layer(const LayerEnv& env, const BlockParams& p);
std::unique_ptr<Layer> make_head_layer(const LayerEnv& env, Parameter& norm, Parameter& head);

}  // namespace pp3d::llama_detail
