// Gpt: a GPT-2-shaped transformer (or one pipeline stage / tensor-parallel
// shard of it) with explicit forward and backward built only from Backend ops.
//
// Model: x = wte[ids] + wpe[pos]; L pre-LN blocks
//   x += attn.c_proj(causal_attention(attn.c_attn(ln_1(x))))
//   x += mlp.c_proj(gelu_tanh(mlp.c_fc(ln_2(x))))
// then ln_f, logits = x . wte^T over the padded vocabulary (padded columns
// never reach the loss), cross-entropy. Linear weights are [out, in] and
// y = x W^T + b (PyTorch / llm.c convention). See docs/MODEL.md.
//
// Loss normalisation: forward on the head stage adds loss_weight * (sum of the
// per-token losses of the micro-batch) to the cache's loss(), and backward
// produces the gradient of exactly that quantity. With loss_weight = 1 /
// (tokens in the global batch) the sum of loss() over all micro-batches (and
// data-parallel ranks) is the mean loss of the global batch, and the
// accumulated gradients are its gradient, in every layout.
//
// Pipeline use: each in-flight micro-batch has its own ActivationCache, owned
// by the caller; backward(cache) consumes and frees it. Micro-batches may be
// forwarded and backwarded in any interleaving (1F1B etc.).
//
// Memory: parameters MemCategory::Params, gradients Grads, everything in a
// cache Activations. Parameter gradients ACCUMULATE across backward calls;
// call zero_grad() between optimizer steps.
// Tensor parallelism: GptLayout{tp_rank, tp_size, tp_group, sequence_parallel}
// (Megatron-style; docs/MODEL.md "Tensor parallelism"). forward/backward are
// then collective over tp_group.
// Module contract (pp3d/parallel/module.h): a Gpt is a Module whose layers are
// the embedding, the blocks and the head, so PipelineStage, GradBucketer and
// ZeroOptimizer apply to it like to any other model; forward/backward run the
// library's layer loop (hooks see layer positions, 0 = first layer held).
// Thread-safety: one Gpt is used from one thread at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "pp3d/backend/backend.h"
#include "pp3d/comm/communicator.h"
#include "pp3d/model/gpt_config.h"
#include "pp3d/core/parameter.h"
#include "pp3d/parallel/module.h"

namespace pp3d {

class Gpt;
namespace detail {
struct GptCacheState;
class GptEmbeddingLayer;
class GptBlockLayer;
class GptHeadLayer;
std::vector<std::unique_ptr<Layer>> make_gpt_layers(Gpt& g);
}  // namespace detail

struct GptOptions {
  uint64_t seed = 1337;        // parameter init: rng_key(seed, name)
  bool recompute = false;      // per-block activation recompute (bitwise identical gradients)
  bool decay_vectors = false;  // weight decay also on 1-D tensors (biases, LayerNorm)
  // Storage of every parameter: F32, or BF16 / F16 for mixed precision
  // (docs/MIXED_PRECISION.md): values are the rounding of the f32 init (2
  // bytes/elem in MemCategory::Params); gradients f32 unless grad_dtype; GEMMs read the
  // 16-bit weights directly, LayerNorm / bias / embedding weights are cast to
  // f32 per use; activations and compute are f32. The optimizer (AdamW,
  // ZeroOptimizer) keeps the f32 master copy.
  DType param_dtype = DType::F32;
  // Storage of every Parameter::grad: F32 (default; Megatron-style fp32
  // accumulation) or, with a 16-bit param_dtype, that same dtype (ZeRO's
  // 16-bit gradients, 2 bytes/elem in MemCategory::Grads). 16-bit gradients
  // are accumulated through f32 and rounded after each op's contribution.
  DType grad_dtype = DType::F32;
  // Storage of the activations saved for backward and of the hidden state
  // passed between blocks: F32 (default) or, with a 16-bit param_dtype, that
  // same dtype (--activation-dtype param). Every op still computes in f32: a
  // block reads its 16-bit input through an f32 copy, its outputs are rounded
  // to 16-bit when the block's forward ends, and backward reads them back
  // through f32 copies (Workspace). LayerNorm mean/rstd, the attention lse,
  // the logits and every activation gradient stay f32. A stage without the
  // head returns its hidden state in this dtype (pipeline p2p in 16-bit) and
  // accepts it (or f32) as input (docs/MIXED_PRECISION.md).
  DType activation_dtype = DType::F32;
  // Compute precision: F32 (default: every op in f32, 16-bit weights read
  // through f32), or, with a 16-bit param_dtype, that dtype (--compute-dtype
  // param): activations flow in 16 bits between ops — every Linear GEMM (the
  // four per block and the LM head) takes 16-bit operands with f32
  // accumulation (Backend::gemm16; tensor cores on CUDA) and writes a 16-bit
  // output (x W^T + b rounded once) and a 16-bit input gradient; LayerNorm,
  // GELU and attention (cuDNN SDPA on CUDA) read and write 16 bits with f32
  // math. The residual stream (unless activation_dtype), the logits and the
  // loss stay f32 (docs/MIXED_PRECISION.md has the dtype of every tensor).
  DType compute_dtype = DType::F32;
};

class Gpt : public Module {
 public:
  // Allocates and initialises this layout's parameters on backend.device().
  // `backend` must outlive the model.
  Gpt(const GptConfig& config, Backend& backend, const GptLayout& layout = {}, const GptOptions& options = {});
  ~Gpt();
  Gpt(const Gpt&) = delete;
  Gpt& operator=(const Gpt&) = delete;

  // One stage forward. input: ids [B, T] i32 on the embedding stage, else
  // hidden [B, T, C] f32 or activation_dtype (the previous stage's output).
  // targets: [B, T] i32, read only on the head stage (may be undefined
  // elsewhere). Returns the hidden state [B, T, C] (activation_dtype) for the next stage, or an undefined Tensor on the
  // head stage (the loss is then in cache.loss()). T <= max_seq_len.
  // Inputs on another device (e.g. host ids for a CUDA model) are copied over.
  // In Train mode the cache REFERENCES `input` (no copy): keep its contents
  // unchanged until backward(cache).
  // Tensor parallelism (tp_size > 1): every rank of layout().tp_group calls
  // forward/backward together with the same ids/targets; the loss is the same
  // on every rank. With sequence_parallel the hidden state between stages (the
  // input and output here, dout and the result of backward) is this rank's
  // token slice [B, T/tp, C] = tokens [tp_rank*T/tp, (tp_rank+1)*T/tp) of
  // every sequence (see hidden_shape); ids and targets stay [B, T].
  Tensor forward(const Tensor& input, const Tensor& targets, float loss_weight, ActivationCache& cache,
                 ForwardMode mode = ForwardMode::Train);

  // One stage backward for a cache filled by forward (consumed and freed).
  // dout: gradient w.r.t. this stage's output (hidden_shape); ignored on the head
  // stage. Accumulates parameter gradients; returns d(input hidden), or an
  // undefined Tensor on the embedding stage. Gradients are complete when it
  // returns (also with sequence parallelism: the LayerNorm gradients computed
  // from the local tokens are all-reduced over TP inside backward, per layer,
  // before LayerHooks::after_backward) — the trainer needs no extra TP call.
  Tensor backward(const Tensor& dout, ActivationCache& cache);

  // Whole model on one process (embedding and head): forward + backward of the
  // mean loss over the B*T tokens, gradients ACCUMULATED. Returns the mean loss.
  float train_step_forward_backward(const Tensor& ids, const Tensor& targets);
  // Mean loss over the B*T tokens, no gradients.
  float evaluate(const Tensor& ids, const Tensor& targets);

  // ---- the module contract (pp3d/parallel/module.h) ----
  // Layers in forward order: the embedding (when held), one per block, the
  // head with ln_f + LM head + loss (when held).
  std::vector<Layer*> layers() override;
  std::vector<Parameter*> parameters() override;
  // The tied wte copy when this instance holds only one end of a tied model.
  std::vector<Parameter*> shared_parameters() override;
  Shape output_shape(int64_t batch, int64_t seq) const override { return hidden_shape(batch, seq); }
  DType activation_dtype() const override { return opts_.activation_dtype; }
  Backend& backend() const override { return *backend_; }
  // Checks ids / hidden input and targets (the messages name Gpt::forward).
  Tensor prepare_input(const Tensor& input, MicroBatchContext& ctx) override;

  // nullptr when this layout does not hold `name`.
  Parameter* find_parameter(const std::string& name);

  const GptConfig& config() const { return cfg_; }
  const GptLayout& layout() const { return layout_; }
  const GptOptions& options() const { return opts_; }
  // Number of elements over this instance's (local) parameters.
  int64_t num_local_parameters() const;
  // Shape of the hidden state passed between stages: [batch, seq, C], or the
  // local slice [batch, seq/tp, C] with sequence parallelism (throws when tp
  // does not divide seq).
  Shape hidden_shape(int64_t batch, int64_t seq) const;
  // The tensor-parallel group (nullptr when tp_size == 1 and none was given).
  Communicator* tp_group() const { return layout_.tp_group.get(); }

  struct Block;  // one transformer layer (lib/model/gpt_block.cpp)

 private:
  friend class detail::GptEmbeddingLayer;
  friend class detail::GptHeadLayer;
  friend class detail::GptBlockLayer;
  friend std::vector<std::unique_ptr<Layer>> detail::make_gpt_layers(Gpt& g);
  void build_parameters();
  // Stage ends (lib/model/gpt_ends.cpp): embedding and ln_f + head + loss.
  Tensor embed_forward(const Tensor& ids, detail::GptCacheState& s);
  void embed_backward(const Tensor& dx, detail::GptCacheState& s);
  void head_forward(const Tensor& x, const Tensor& targets, detail::GptCacheState& s);
  Tensor head_backward(detail::GptCacheState& s);
  // Rows of the sequence-parallel regions for a sequence of T tokens.
  int64_t local_seq(int64_t T) const;
  Parameter& add_parameter(const std::string& name, Shape global, ShardSpec shard, InitSpec init);

  GptConfig cfg_;
  GptLayout layout_;
  GptOptions opts_;
  Backend* backend_;
  std::vector<std::unique_ptr<Parameter>> params_;
  std::vector<std::unique_ptr<Block>> blocks_;
  Parameter* wte_ = nullptr;
  Parameter* wpe_ = nullptr;
  Parameter* lnf_w_ = nullptr;
  Parameter* lnf_b_ = nullptr;
  Parameter* head_ = nullptr;  // wte (tied) or lm_head.weight
  std::vector<std::unique_ptr<Layer>> layers_;  // lib/model/gpt_layers.cpp
  int64_t building_layer_ = -1;  // Parameter::layer for add_parameter during construction
};

}  // namespace pp3d
