// Gpt stage forward/backward: embedding -> blocks -> ln_f + LM head + loss
// (the ends are in gpt_ends.cpp). Layer hooks wrap every layer.
#include <string>
#include <vector>

#include "model/gpt_internal.h"
#include "pp3d/core/error.h"
#include "pp3d/model/gpt.h"

namespace pp3d {

using detail::on_device;

Tensor Gpt::forward(const Tensor& input, const Tensor& targets, float loss_weight, ActivationCache& cache,
                    ForwardMode mode) {
  PP3D_CHECK(layout_.tp_size == 1 || layout_.tp_group,
             "Gpt::forward with tp_size {}: GptLayout.tp_group is null (set it to the tensor-parallel "
             "communicator, e.g. ProcessGrid::tp_group())",
             layout_.tp_size);
  PP3D_CHECK(!cache.active(), "Gpt::forward into an ActivationCache that still holds a micro-batch "
                              "(run backward or clear() first)");
  PP3D_CHECK(input.defined(), "Gpt::forward: input is undefined");
  Backend& be = *backend_;
  const int64_t C = cfg_.hidden_size;
  detail::GptCacheState& s = cache.state();
  s = detail::GptCacheState{};
  s.eval = mode == ForwardMode::Eval;
  s.loss_weight = loss_weight;

  Tensor x;  // [B * T_local, C]
  if (layout_.has_embedding) {
    PP3D_CHECK(input.dim() == 2 && input.dtype() == DType::I32,
               "Gpt::forward on the embedding stage expects token ids i32 [B, T], got {}", input.str());
    s.B = input.size(0);
    s.T = input.size(1);
    PP3D_CHECK(s.T >= 1 && s.T <= cfg_.max_seq_len, "sequence length {} must be in [1, max_seq_len {}]", s.T,
               cfg_.max_seq_len);
    (void)local_seq(s.T);  // checks T % tp under sequence parallelism
    if (hooks_) hooks_->before_forward(-1);
    x = embed_forward(on_device(be, input), s);
    if (hooks_) hooks_->after_forward(-1);
  } else {
    const bool sp = layout_.sequence_parallel && layout_.tp_size > 1;
    const DType adt = opts_.activation_dtype;
    PP3D_CHECK(input.dim() == 3 && (input.dtype() == DType::F32 || input.dtype() == adt) && input.size(2) == C,
               "Gpt::forward on a middle/last stage expects hidden f32{} [B, T, {}]{}, got {}",
               adt == DType::F32 ? std::string() : fmt::format(" or {}", dtype_name(adt)), C,
               sp ? " (this rank's slice [B, T/tp, C] with sequence parallelism)" : "", input.str());
    s.B = input.size(0);
    s.T = input.size(1) * (layout_.sequence_parallel ? layout_.tp_size : 1);
    PP3D_CHECK(s.T >= 1 && s.T <= cfg_.max_seq_len, "sequence length {} must be in [1, max_seq_len {}]", s.T,
               cfg_.max_seq_len);
    x = on_device(be, input).reshape({s.B * input.size(1), C});
  }
  const int64_t B = s.B, T = s.T, N = B * T;
  // 16-bit activations: the hidden state between blocks is stored rounded
  // (a no-op for a previous stage's output, which is already 16-bit-exact).
  x = detail::store_activation(be, x, opts_.activation_dtype);

  s.blocks.resize(s.eval ? 0 : blocks_.size());
  for (std::size_t i = 0; i < blocks_.size(); ++i) {
    detail::BlockActs tmp;
    detail::BlockActs& a = s.eval ? tmp : s.blocks[i];
    a.x = x;
    const int64_t layer = layout_.first_layer + static_cast<int64_t>(i);
    if (hooks_) hooks_->before_forward(layer);
    Tensor out = blocks_[i]->forward(be, B, T, a);
    if (hooks_) hooks_->after_forward(layer);
    if (s.eval) a = detail::BlockActs{};
    else if (opts_.recompute) a.drop_all_but_input();
    x = out;
  }

  if (!layout_.has_head) {
    s.active = !s.eval;
    // In the activation dtype: pipeline p2p sends and receives 16-bit activations.
    return x.reshape(hidden_shape(B, T));
  }

  PP3D_CHECK(targets.defined() && targets.dtype() == DType::I32 && targets.numel() == N,
             "Gpt::forward on the head stage needs targets i32 [{}, {}], got {}", B, T,
             targets.defined() ? targets.str() : std::string("undefined"));
  if (hooks_) hooks_->before_forward(cfg_.num_layers);
  head_forward(x, targets, s);
  if (hooks_) hooks_->after_forward(cfg_.num_layers);
  s.active = !s.eval;
  return Tensor();
}

Tensor Gpt::backward(const Tensor& dout, ActivationCache& cache) {
  PP3D_CHECK(cache.active(), "Gpt::backward on a cache without a pending Train-mode forward");
  Backend& be = *backend_;
  detail::GptCacheState& s = cache.state();
  const int64_t B = s.B, T = s.T, Nl = B * local_seq(T), C = cfg_.hidden_size;

  Tensor dx;  // [B * T_local, C]
  if (layout_.has_head) {
    if (hooks_) hooks_->before_backward(cfg_.num_layers);
    dx = head_backward(s);
    if (hooks_) hooks_->after_backward(cfg_.num_layers);
  } else {
    PP3D_CHECK(dout.defined() && dout.dtype() == DType::F32 && dout.numel() == Nl * C,
               "Gpt::backward expects dout f32 {}, got {}", shape_str(hidden_shape(B, T)),
               dout.defined() ? dout.str() : std::string("undefined"));
    dx = on_device(be, dout).reshape({Nl, C});
  }

  for (std::size_t i = blocks_.size(); i-- > 0;) {
    detail::BlockActs& a = s.blocks[i];
    const int64_t layer = layout_.first_layer + static_cast<int64_t>(i);
    if (hooks_) hooks_->before_backward(layer);
    if (!a.full()) {  // activation recompute: rerun this block's forward from its input
      Tensor out = blocks_[i]->forward(be, B, T, a);
      (void)out;
    }
    dx = blocks_[i]->backward(be, B, T, a, dx);
    if (hooks_) hooks_->after_backward(layer);
  }

  Tensor result;
  if (layout_.has_embedding) {
    if (hooks_) hooks_->before_backward(-1);
    embed_backward(dx, s);
    if (hooks_) hooks_->after_backward(-1);
  } else {
    result = dx.reshape(hidden_shape(B, T));
  }
  const double loss = s.loss;
  s = detail::GptCacheState{};
  s.loss = loss;  // stays readable after backward
  return result;
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
