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
// Thread-safety: one Gpt is used from one thread at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "pp3d/backend/backend.h"
#include "pp3d/comm/communicator.h"
#include "pp3d/model/gpt_config.h"
#include "pp3d/model/parameter.h"

namespace pp3d {

namespace detail {
struct GptCacheState;
}

// The activations one micro-batch keeps between forward and backward.
class ActivationCache {
 public:
  ActivationCache();
  ~ActivationCache();
  ActivationCache(ActivationCache&&) noexcept;
  ActivationCache& operator=(ActivationCache&&) noexcept;
  ActivationCache(const ActivationCache&) = delete;
  ActivationCache& operator=(const ActivationCache&) = delete;

  // True when a forward has filled the cache and no backward consumed it.
  bool active() const;
  // Head stage, after forward: loss_weight * sum of per-token losses (double accumulation).
  double loss() const;
  // Head stage, after forward in Train mode: logits [B, T, padded_vocab / tp]
  // (f32; this rank's vocabulary columns under tensor parallelism).
  Tensor logits() const;
  // Frees everything (a forward that will not be backwarded).
  void clear();

  detail::GptCacheState& state();

 private:
  std::unique_ptr<detail::GptCacheState> s_;
};

// Callbacks around each layer's forward and backward (ZeRO-3 parameter
// gathering and release, bucketed gradient reduction as a layer's gradients
// become final). `layer` follows Parameter::layer: -1 embedding, [0, L) blocks,
// L the head. Called on the model's thread; the default does nothing.
class LayerHooks {
 public:
  virtual ~LayerHooks() = default;
  virtual void before_forward(int64_t layer) {}
  virtual void after_forward(int64_t layer) {}
  virtual void before_backward(int64_t layer) {}
  // The layer's parameter gradients have received this micro-batch's contribution.
  virtual void after_backward(int64_t layer) {}
};

enum class ForwardMode {
  Train,  // keep what backward needs
  Eval,   // keep nothing (loss only); backward on this cache throws
};

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
};

class Gpt {
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

  std::vector<Parameter*> parameters();
  // nullptr when this layout does not hold `name`.
  Parameter* find_parameter(const std::string& name);
  void zero_grad();
  // Installs layer hooks (nullptr removes them); the hooks must outlive their use.
  void set_layer_hooks(LayerHooks* hooks) { hooks_ = hooks; }
  LayerHooks* layer_hooks() const { return hooks_; }

  const GptConfig& config() const { return cfg_; }
  const GptLayout& layout() const { return layout_; }
  const GptOptions& options() const { return opts_; }
  Backend& backend() const { return *backend_; }
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
  LayerHooks* hooks_ = nullptr;
  int64_t building_layer_ = -1;  // Parameter::layer for add_parameter during construction
};

}  // namespace pp3d
