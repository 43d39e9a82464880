// Llama: a Llama-family decoder (RMSNorm, SwiGLU, RoPE, grouped-query
// attention) written as a client of the module contract
// (pp3d/parallel/module.h) with pp3d's public headers only, the way a
// third-party trainer would write it.
//
//   x = embed_tokens[ids]                                         [B, T, C]
//   for each layer:
//     h = rmsnorm(x) * input_layernorm
//     q, k, v = rope(h Wq^T), rope(h Wk^T), h Wv^T                 (Hq, Hkv heads of D = C/Hq)
//     x = x + o_proj(gqa_attention(q, k, v))                       (causal, scale 1/sqrt(D))
//     h = rmsnorm(x) * post_attention_layernorm
//     x = x + down_proj(silu(gate_proj(h)) * up_proj(h))
//   logits = (rmsnorm(x) * norm) lm_head^T   (lm_head = embed_tokens when tied)
//   loss   = sum over tokens of cross_entropy(logits[..., :V], targets)
//
// Parameters carry Hugging Face Llama names ("model.embed_tokens.weight",
// "model.layers.{l}.self_attn.q_proj.weight", ..., "model.norm.weight",
// "lm_head.weight"), linear weights [out, in], no biases; RoPE in HF's
// rotate_half convention, so HF weights load without permutation. The
// vocabulary is padded to padded_vocab_size (rows past vocab_size never reach
// the loss and get zero gradient).
//
// Tensor parallelism (LlamaLayout::tp_size > 1): q/k/v and gate/up are
// column-parallel (k and v by kv head: tp must divide num_kv_heads), o and
// down row-parallel, the embedding and the LM head vocab-parallel, the
// cross-entropy vocab-parallel; sequence parallelism keeps the RMSNorm /
// residual regions at T/tp tokens (RMSNorm weight gradients are all-reduced
// over TP inside each backward). Pipeline: a Llama holds transformer layers
// [first_layer, end_layer) plus the embedding and/or the head; a tied head on
// a stage without the embedding holds its own copy of embed_tokens, declared
// as a shared parameter (PipelineStage sums the copies' gradients).
//
// Initialisation is layout-independent (make_sharded_parameter: Normal(0,
// init_std) for matrices, ones for the norms, drawn by global element index).
// Parameters are on the backend's device in LlamaOptions::param_dtype (16-bit:
// the rounding of the f32 init; the optimizer keeps the f32 master), owned by
// the Llama. Not thread-safe; every rank of the TP group makes the same calls.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "pp3d/backend/backend.h"
#include "pp3d/comm/communicator.h"
#include "pp3d/core/parameter.h"
#include "pp3d/parallel/module.h"
#include "pp3d/parallel/pipeline_schedule.h"

namespace pp3d {

class ProcessGrid;

struct LlamaConfig {
  int64_t vocab_size = 32000;
  int64_t padded_vocab_size = 0;  // 0: vocab_size rounded up to a multiple of 64
  int64_t hidden_size = 4096;     // C
  int64_t num_layers = 32;        // L
  int64_t num_heads = 32;         // Hq
  int64_t num_kv_heads = 0;       // Hkv (0: num_heads, i.e. multi-head); must divide num_heads
  int64_t mlp_hidden_size = 11008;  // F
  int64_t max_seq_len = 2048;
  float rope_theta = 10000.0f;
  float norm_eps = 1e-5f;
  bool tied_embeddings = false;
  float init_std = 0.02f;

  int64_t head_dim() const { return hidden_size / num_heads; }
  // With the defaults (0) filled in.
  LlamaConfig resolved() const;
  // Throws pp3d::Error naming the offending values when the config is invalid
  // or does not split over tp_size tensor-parallel ranks.
  void validate(int tp_size = 1) const;
};

struct LlamaLayout {
  Communicator* tp_group = nullptr;  // nullptr: tp_size must be 1 (not owned)
  int tp_rank = 0;
  int tp_size = 1;
  bool sequence_parallel = false;  // needs T % tp_size == 0
  int64_t first_layer = 0;         // transformer layers [first_layer, end_layer)
  int64_t end_layer = -1;          // -1: num_layers
  bool has_embedding = true;
  bool has_head = true;

  // The TP fields of this rank of `grid` (the whole model: set the pipeline
  // fields with make_llama_chunks).
  static LlamaLayout tensor_parallel(const ProcessGrid& grid, bool sequence_parallel = false);
};

struct LlamaOptions {
  uint64_t seed = 1337;
  bool recompute = false;  // keep only each block's input; rerun its forward in backward
  // Mixed precision, with GPT's meanings (GptOptions, docs/MIXED_PRECISION.md
  // "Llama"): parameter storage F32 | BF16 | F16 (GEMMs read 16-bit weights,
  // RMSNorm weights and the embedding table are cast to f32 per use);
  // gradients F32 or the param dtype (accumulated through f32); saved
  // activations / hidden state between layers and stages F32 or the param
  // dtype (every op computes in f32; RMSNorm rstd, attention lse, logits and
  // activation gradients stay f32); compute F32 or the param dtype: with the
  // param dtype activations flow in 16 bits between ops (as GPT): Linears take
  // 16-bit operands (Backend::gemm16, f32 accumulation) and write 16-bit
  // outputs; RMSNorm, RoPE, attention (P, dS rounded) and SwiGLU read and write
  // 16 bits with f32 math; residual stream, logits and loss stay f32.
  // The constructor rejects a 16-bit grad/activation/compute dtype that is not
  // the param dtype.
  DType param_dtype = DType::F32;
  DType grad_dtype = DType::F32;
  DType activation_dtype = DType::F32;
  DType compute_dtype = DType::F32;
};

class Llama final : public Module {
 public:
  Llama(const LlamaConfig& config, Backend& backend, const LlamaLayout& layout = {}, const LlamaOptions& options = {});
  ~Llama() override;

  std::vector<Layer*> layers() override;
  std::vector<Parameter*> shared_parameters() override;
  // [B, T, C], or [B, T/tp, C] with sequence parallelism.
  Shape output_shape(int64_t batch, int64_t seq) const override;
  DType activation_dtype() const override { return opts_.activation_dtype; }
  Backend& backend() const override { return be_; }
  Tensor prepare_input(const Tensor& input, MicroBatchContext& ctx) override;

  // nullptr when this instance does not hold it.
  Parameter* find_parameter(const std::string& name);
  const LlamaConfig& config() const { return cfg_; }
  const LlamaLayout& layout() const { return layout_; }

 private:
  LlamaConfig cfg_;
  Backend& be_;
  LlamaLayout layout_;
  LlamaOptions opts_;
  std::vector<std::unique_ptr<Parameter>> params_;
  std::vector<std::unique_ptr<Layer>> layers_;
};

// This pipeline rank's chunks of a Llama split by `split` over the
// transformer layers (virtual stage 0 also holds the embedding, the last one
// the head), ready for PipelineStage. `base` supplies the TP fields.
std::vector<std::unique_ptr<Module>> make_llama_chunks(const LlamaConfig& config, Backend& backend,
                                                       const LlamaLayout& base, const LlamaOptions& options,
                                                       const PipelineSplit& split, int pp_rank);

}  // namespace pp3d
