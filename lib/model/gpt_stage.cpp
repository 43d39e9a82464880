// Gpt stage forward/backward through the library's layer loop (the layers are
// in gpt_layers.cpp, the stage ends in gpt_ends.cpp), input checks, and the
// module contract's accessors.
#include <string>
#include <vector>

#include "model/gpt_internal.h"
#include "pp3d/core/error.h"
#include "pp3d/model/gpt.h"

namespace pp3d {

std::vector<Layer*> Gpt::layers() {
  std::vector<Layer*> out;
  out.reserve(layers_.size());
  for (auto& l : layers_) out.push_back(l.get());
  return out;
}

std::vector<Parameter*> Gpt::shared_parameters() {
  const bool whole = layout_.has_embedding && layout_.has_head;
  Parameter* wte = find_parameter("wte");
  if (!cfg_.tied_embeddings || whole || wte == nullptr) return {};
  return {wte};
}

Tensor Gpt::prepare_input(const Tensor& input, MicroBatchContext& ctx) {
  PP3D_CHECK(layout_.tp_size == 1 || layout_.tp_group,
             "Gpt::forward with tp_size {}: GptLayout.tp_group is null (set it to the tensor-parallel "
             "communicator, e.g. ProcessGrid::tp_group())",
             layout_.tp_size);
  const int64_t C = cfg_.hidden_size;
  int64_t B = 0, T = 0;
  if (layout_.has_embedding) {
    PP3D_CHECK(input.dim() == 2 && input.dtype() == DType::I32,
               "Gpt::forward on the embedding stage expects token ids i32 [B, T], got {}", input.str());
    B = input.size(0);
    T = input.size(1);
    PP3D_CHECK(T >= 1 && T <= cfg_.max_seq_len, "sequence length {} must be in [1, max_seq_len {}]", T,
               cfg_.max_seq_len);
    (void)local_seq(T);  // checks T % tp under sequence parallelism
  } else {
    const bool sp = layout_.sequence_parallel && layout_.tp_size > 1;
    const DType adt = opts_.activation_dtype;
    PP3D_CHECK(input.dim() == 3 && (input.dtype() == DType::F32 || input.dtype() == adt) && input.size(2) == C,
               "Gpt::forward on a middle/last stage expects hidden f32{} [B, T, {}]{}, got {}",
               adt == DType::F32 ? std::string() : fmt::format(" or {}", dtype_name(adt)), C,
               sp ? " (this rank's slice [B, T/tp, C] with sequence parallelism)" : "", input.str());
    B = input.size(0);
    T = input.size(1) * (layout_.sequence_parallel ? layout_.tp_size : 1);
    PP3D_CHECK(T >= 1 && T <= cfg_.max_seq_len, "sequence length {} must be in [1, max_seq_len {}]", T,
               cfg_.max_seq_len);
  }
  if (layout_.has_head) {
    const Tensor& targets = ctx.targets;
    PP3D_CHECK(targets.defined() && targets.dtype() == DType::I32 && targets.numel() == B * T,
               "Gpt::forward on the head stage needs targets i32 [{}, {}], got {}", B, T,
               targets.defined() ? targets.str() : std::string("undefined"));
  }
  return input;
}

Tensor Gpt::forward(const Tensor& input, const Tensor& targets, float loss_weight, ActivationCache& cache,
                    ForwardMode mode) {
  return module_forward(*this, input, targets, loss_weight, cache, mode);
}

Tensor Gpt::backward(const Tensor& dout, ActivationCache& cache) {
  if (!layout_.has_head && cache.active()) {  // the head stage makes its own gradient
    PP3D_CHECK(dout.defined() && dout.dtype() == DType::F32,
               "Gpt::backward expects dout f32 [B, T, {}] (this stage's output shape), got {}", cfg_.hidden_size,
               dout.defined() ? dout.str() : std::string("undefined"));
  }
  return module_backward(*this, dout, cache);
}

float Gpt::train_step_forward_backward(const Tensor& ids, const Tensor& targets) {
  PP3D_CHECK(layout_.has_embedding && layout_.has_head,
             "train_step_forward_backward needs the whole model (embedding and head) on this instance");
  PP3D_CHECK(ids.dim() == 2, "ids must be [B, T], got {}", ids.str());
  const float w = 1.0f / static_cast<float>(ids.numel());
  ActivationCache cache;
  forward(ids, targets, w, cache);
  const double loss = cache.loss();
  backward(Tensor(), cache);
  return static_cast<float>(loss);
}

float Gpt::evaluate(const Tensor& ids, const Tensor& targets) {
  PP3D_CHECK(layout_.has_embedding && layout_.has_head,
             "evaluate needs the whole model (embedding and head) on this instance");
  PP3D_CHECK(ids.dim() == 2, "ids must be [B, T], got {}", ids.str());
  ActivationCache cache;
  forward(ids, targets, 1.0f / static_cast<float>(ids.numel()), cache, ForwardMode::Eval);
  return static_cast<float>(cache.loss());
}

}  // namespace pp3d
