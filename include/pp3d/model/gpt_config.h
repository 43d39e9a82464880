// GptConfig (the model's hyper-parameters) and GptLayout (which part of the
// model one process holds: a tensor-parallel rank and a pipeline layer range).
//
// Plain value types; validate() throws pp3d::Error naming the offending field.
// Thread-safe (no shared state).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace pp3d {

class Communicator;

// Architecture family a GptConfig describes. pp3d::Gpt builds Gpt2 only; the
// planner (pp3d/plan) also describes Llama-family shapes with it (RoPE, no
// position table, RMSNorm without bias, SwiGLU with three C x F matrices,
// grouped-query attention with num_kv_heads, no biases; pp3d::Llama builds them).
enum class ModelArch : uint8_t { Gpt2, Llama };

// GPT-2/GPT-3 shape: learned positions, pre-LN blocks, GELU(tanh) MLP, final
// LayerNorm, (tied) LM head. Fields set to 0 take their documented default.
struct GptConfig {
  int64_t vocab_size = 50257;
  int64_t padded_vocab_size = 0;  // 0: vocab_size rounded up to a multiple of 64
  int64_t max_seq_len = 1024;
  int64_t num_layers = 12;
  int64_t num_heads = 12;
  int64_t hidden_size = 768;
  int64_t mlp_hidden_size = 0;  // 0: 4 * hidden_size
  float ln_eps = 1e-5f;
  float init_std = 0.02f;      // std of wte and every Linear weight (residual projections: / sqrt(2L))
  float wpe_init_std = 0.01f;  // std of wpe (GPT-2's convention)
  bool tied_embeddings = true;  // LM head = wte; false: a separate "lm_head.weight" [Vp, C]
  ModelArch arch = ModelArch::Gpt2;  // Llama: a planner description only (see ModelArch)
  int64_t num_kv_heads = 0;          // Llama: key/value heads (0: num_heads); Gpt2 must leave it 0
  float rope_theta = 10000.0f;       // Llama: RoPE base theta (ignored for Gpt2); ln_eps is RMSNorm's eps

  // Effective values (defaults resolved).
  int64_t padded_vocab() const;
  int64_t mlp_hidden() const;
  int64_t head_dim() const { return hidden_size / num_heads; }
  bool is_llama() const { return arch == ModelArch::Llama; }
  // Key/value heads: num_kv_heads, or num_heads when 0 (always num_heads for Gpt2).
  int64_t kv_heads() const { return num_kv_heads > 0 ? num_kv_heads : num_heads; }

  // Throws pp3d::Error on an inconsistent config (non-positive sizes, hidden
  // not divisible by heads, padded vocab smaller than vocab, ...).
  void validate() const;

  // Number of parameters of the whole (unsharded) model, padded vocab included
  // (Llama: the count of pp3d::Llama / Hugging Face LlamaForCausalLM).
  int64_t num_parameters() const;

  // A copy with the defaults filled in (padded_vocab_size, mlp_hidden_size).
  GptConfig resolved() const;

  // "L12 H12 C768 V50257(50304) T1024"; Llama: "llama L16 H32/8 C2048 F8192 V... T...".
  std::string str() const;
};

// Smallest multiple of `multiple` that is >= vocab.
int64_t round_up_vocab(int64_t vocab, int64_t multiple = 64);

// Which part of the model a Gpt instance holds.
// - Tensor parallelism (Megatron-style, docs/MODEL.md): tp_size ranks split
//   heads / MLP columns / vocab rows; tp_group is their communicator (rank
//   tp_rank, size tp_size; e.g. ProcessGrid::tp_group()). It may be null when
//   tp_size == 1, and also while only building parameters (forward/backward
//   with tp_size > 1 then throw). sequence_parallel additionally splits the
//   sequence of the LayerNorm/residual regions: every rank holds T/tp tokens
//   (T % tp_size == 0 required) and the hidden state passed between pipeline
//   stages is the local slice [B, T/tp, C] (see Gpt::forward).
// - Pipeline parallelism: blocks [first_layer, last_layer); the embedding
//   (wte, wpe) is on the stage with has_embedding (first_layer must be 0), the
//   final LayerNorm + head + loss on the stage with has_head (last_layer must
//   be num_layers). With tied embeddings a head-only stage holds its own copy
//   of "wte", initialised identically; its gradient must be summed with the
//   first stage's (embedding group all-reduce) by the caller.
struct GptLayout {
  int tp_rank = 0;
  int tp_size = 1;
  int64_t first_layer = 0;
  int64_t last_layer = -1;  // -1: num_layers
  bool has_embedding = true;
  bool has_head = true;
  std::shared_ptr<Communicator> tp_group;  // size tp_size, rank tp_rank; null allowed when tp_size == 1
  bool sequence_parallel = false;          // Megatron sequence parallelism (no-op when tp_size == 1)

  // Throws pp3d::Error when the layout does not fit `cfg`.
  void validate(const GptConfig& cfg) const;
  // last_layer with -1 resolved.
  int64_t end_layer(const GptConfig& cfg) const { return last_layer < 0 ? cfg.num_layers : last_layer; }
};

}  // namespace pp3d
