// Internal pieces of the GPT model shared by gpt.cpp and gpt_block.cpp:
// the per-micro-batch activation cache, partial-gradient sync and the Block.
#pragma once

#include <memory>
#include <vector>

#include "pp3d/backend/backend.h"
#include "pp3d/comm/communicator.h"
#include "pp3d/model/gpt.h"
#include "pp3d/parallel/tensor_parallel.h"

namespace pp3d::detail {

// Activations of one block for one micro-batch. Rows are the N = B*T tokens,
// or this rank's B*T/tp tokens in the sequence-parallel regions (x, ln1, x2,
// ln2 and the LayerNorm statistics) when sequence parallelism is on.
struct BlockActs {
  Tensor x;  // block input (always kept in Train mode)
  Tensor ln1, ln1_mean, ln1_rstd, qkv, att, lse, x2, ln2, ln2_mean, ln2_rstd, fc, gelu;
  bool full() const { return qkv.defined(); }
  void drop_all_but_input();
};

// What the embedding layer (ids) or the head layer (the rest) of one
// micro-batch keeps between forward and backward.
struct GptCacheState : LayerState {
  bool eval = false;
  int64_t B = 0, T = 0;
  float loss_weight = 0.0f;
  double loss = 0.0;
  Tensor ids;        // embedding: [B, T] i32 (global token ids)
  Tensor targets;    // head: [N] i32
  Tensor x_final, lnf, lnf_mean, lnf_rstd, logits, max, sumexp;  // head; logits [N, Vp/tp]
  // Split backward (Layer::backward_input / backward_weight): the input part
  // leaves the weight part here. Embedding: its whole backward (d of the
  // block input, dx [N_local, C]); head: the LM-head GEMM's operands.
  bool split_backward = false;
  Tensor dx;
  std::vector<LinearWeightGrad> weight_grads;
};

// One block of one micro-batch: sequence sizes and the saved activations.
struct BlockState : LayerState {
  int64_t B = 0, T = 0;
  BlockActs acts;
  std::vector<LinearWeightGrad> weight_grads;  // split backward: the four GEMMs' weight parts
};

// The Gpt's layers (lib/model/gpt_layers.cpp); they call the Gpt's stage-end
// code and its Blocks, so the numerics are those of the whole-stage code.
std::vector<std::unique_ptr<Layer>> make_gpt_layers(Gpt& g);

// An f32 activation tensor on `be`'s device.
Tensor new_activation(Backend& be, const Shape& shape);
// Activation storage (GptOptions::activation_dtype): `t` itself when it has
// dtype `dt`, else a new MemCategory::Activations tensor holding t rounded to
// dt (Backend::cast). Undefined stays undefined.
Tensor store_activation(Backend& be, const Tensor& t, DType dt);
// `t` itself when f32, else an f32 copy (MemCategory::Workspace) for compute.
Tensor activation_f32(Backend& be, const Tensor& t);
// `t` on the backend's device (copied there if needed, e.g. host token ids).
Tensor on_device(Backend& be, const Tensor& t);
// Position ids [B * Tl] i32: t0 + (i % Tl) (tokens [t0, t0 + Tl) of each sequence).
Tensor positions(Backend& be, int64_t B, int64_t t0, int64_t Tl);

// Gradients of TP-replicated parameters that a backward pass computes from the
// local sequence slice only (sequence parallelism: LayerNorm weight/bias).
// When active, grad(i) is a zeroed scratch row and finish() all-reduces the
// scratch over the TP group and adds it to the parameters' grads, so each
// micro-batch's contribution is complete before LayerHooks::after_backward.
// Otherwise grad(i) is the parameter's own grad and finish() does nothing.
class PartialGrads {
 public:
  PartialGrads(Backend& be, Communicator* tp, bool active, std::vector<Parameter*> params);
  Tensor& grad(std::size_t i) { return targets_[i]; }
  void finish();

 private:
  Backend& be_;
  Communicator* tp_;
  std::vector<Parameter*> params_;
  Tensor scratch_;
  std::vector<Tensor> targets_;
};

}  // namespace pp3d::detail

namespace pp3d {

// One pre-LN transformer layer; parameters are owned by the Gpt. With tensor
// parallelism c_attn and c_fc are column-parallel, the two c_proj row-parallel
// (lib/parallel/tensor_parallel.cpp); tp == nullptr is the serial layer.
struct Gpt::Block {
  Parameter *ln1_w, *ln1_b, *qkv_w, *qkv_b, *attn_proj_w, *attn_proj_b;
  Parameter *ln2_w, *ln2_b, *fc_w, *fc_b, *mlp_proj_w, *mlp_proj_b;
  int64_t local_heads = 0, head_dim = 0;
  float eps = 1e-5f;
  Communicator* tp = nullptr;  // tensor-parallel group (not owned)
  bool sequence_parallel = false;
  DType act_dtype = DType::F32;  // GptOptions::activation_dtype: storage of the saved activations and output
  DType gemm_dtype = DType::F32;  // GptOptions::compute_dtype: operand dtype of the four Linear GEMMs

  // Fills a (a.x must be set, [N_local, C], f32 or act_dtype) and returns the
  // block output [N_local, C] in act_dtype; T is the full sequence length. The
  // saved activations (not the LayerNorm statistics or lse) are act_dtype.
  Tensor forward(Backend& be, int64_t B, int64_t T, detail::BlockActs& a) const;
  // Needs a full set of activations (recompute first if a.full() is false).
  // Accumulates parameter grads, frees a's activations, returns dx [N_local, C].
  // With `defer_weight` (split backward) the four Linear weight/bias gradients
  // are appended there instead (their operands stay referenced until run);
  // the LayerNorm gradients are always computed here.
  Tensor backward(Backend& be, int64_t B, int64_t T, detail::BlockActs& a, const Tensor& dout,
                  std::vector<LinearWeightGrad>* defer_weight = nullptr);
};

}  // namespace pp3d
