// Gpt as a client of the module contract: the embedding, each transformer
// block and the head (ln_f + LM head + loss) are Layers; the library's layer
// loop (module_forward / module_backward) runs them and fires the hooks.
// Activations between layers are [B, T_local, C] in the activation dtype.
#include <memory>
#include <vector>

#include "model/gpt_internal.h"
#include "pp3d/core/error.h"
#include "pp3d/model/gpt.h"

namespace pp3d::detail {

namespace {

// A layer's input as the blocks and the head read it: [B * T_local, C] on the
// backend's device, stored in the activation dtype (a no-op when it already is).
Tensor hidden_rows(Backend& be, const Tensor& x, int64_t C, DType adt) {
  const Tensor d = on_device(be, x);
  return store_activation(be, d.reshape({d.numel() / C, C}), adt);
}

}  // namespace

class GptEmbeddingLayer final : public Layer {
 public:
  explicit GptEmbeddingLayer(Gpt& g) : g_(g) {}
  std::vector<Parameter*> parameters() override { return {g_.wte_, g_.wpe_}; }

  Tensor forward(const Tensor& ids, MicroBatchContext& ctx, std::unique_ptr<LayerState>& saved) override {
    Backend& be = *g_.backend_;
    auto s = std::make_unique<GptCacheState>();
    s->eval = !ctx.train();
    s->B = ids.size(0);
    s->T = ids.size(1);
    const Tensor x = g_.embed_forward(on_device(be, ids), *s);
    const Tensor out = store_activation(be, x, g_.opts_.activation_dtype);
    const Shape shape = g_.hidden_shape(s->B, s->T);
    saved = std::move(s);
    return out.reshape(shape);
  }

  Tensor backward(const Tensor& dy, MicroBatchContext& ctx, LayerState& saved) override {
    backward_input(dy, ctx, saved);
    backward_weight(ctx, saved);
    return Tensor();
  }

  // The embedding's backward is all weight gradient (token ids need none):
  // the input part only keeps dy for the weight part.
  bool splits_backward() const override { return true; }
  Tensor backward_input(const Tensor& dy, MicroBatchContext&, LayerState& saved) override {
    static_cast<GptCacheState&>(saved).dx = dy.reshape({dy.numel() / g_.cfg_.hidden_size, g_.cfg_.hidden_size});
    return Tensor();
  }
  void backward_weight(MicroBatchContext&, LayerState& saved) override {
    auto& s = static_cast<GptCacheState&>(saved);
    g_.embed_backward(s.dx, s);
    s = GptCacheState{};
  }

 private:
  Gpt& g_;
};

class GptBlockLayer final : public LinearSplitBackwardLayer<BlockState> {
 public:
  GptBlockLayer(Gpt& g, Gpt::Block& b) : g_(g), b_(b) {}
  std::vector<Parameter*> parameters() override {
    return {b_.ln1_w, b_.ln1_b, b_.qkv_w, b_.qkv_b, b_.attn_proj_w, b_.attn_proj_b,
            b_.ln2_w, b_.ln2_b, b_.fc_w,  b_.fc_b,  b_.mlp_proj_w,  b_.mlp_proj_b};
  }

  Tensor forward(const Tensor& x, MicroBatchContext& ctx, std::unique_ptr<LayerState>& saved) override {
    Backend& be = *g_.backend_;
    const int64_t C = g_.cfg_.hidden_size;
    auto s = std::make_unique<BlockState>();
    s->B = x.size(0);
    s->T = x.size(1) * (g_.layout_.sequence_parallel ? g_.layout_.tp_size : 1);
    s->acts.x = hidden_rows(be, x, C, g_.opts_.activation_dtype);
    const Tensor out = b_.forward(be, s->B, s->T, s->acts);
    const Shape shape = g_.hidden_shape(s->B, s->T);
    if (ctx.train()) {
      if (g_.opts_.recompute) s->acts.drop_all_but_input();
      saved = std::move(s);
    }
    return out.reshape(shape);
  }

 private:
  // Split backward (LinearSplitBackwardLayer): the input part is everything but
  // the four Linear weight/bias GEMMs (LayerNorm gradients included).
  Backend& weight_grad_backend() override { return *g_.backend_; }
  Tensor backward_parts(const Tensor& dy, MicroBatchContext&, BlockState& s,
                        std::vector<LinearWeightGrad>* defer_weight) override {
    Backend& be = *g_.backend_;
    const int64_t C = g_.cfg_.hidden_size;
    if (!s.acts.full()) {  // activation recompute: rerun this block's forward from its input
      Tensor out = b_.forward(be, s.B, s.T, s.acts);
      (void)out;
    }
    const Tensor dx =
        b_.backward(be, s.B, s.T, s.acts, on_device(be, dy).reshape({dy.numel() / C, C}), defer_weight);
    return dx.reshape(g_.hidden_shape(s.B, s.T));
  }

  Gpt& g_;
  Gpt::Block& b_;
};

class GptHeadLayer final : public Layer {
 public:
  explicit GptHeadLayer(Gpt& g) : g_(g) {}
  std::vector<Parameter*> parameters() override { return {g_.lnf_w_, g_.lnf_b_, g_.head_}; }

  Tensor forward(const Tensor& x, MicroBatchContext& ctx, std::unique_ptr<LayerState>& saved) override {
    Backend& be = *g_.backend_;
    auto s = std::make_unique<GptCacheState>();
    s->eval = !ctx.train();
    s->loss_weight = ctx.loss_weight;
    s->B = x.size(0);
    s->T = x.size(1) * (g_.layout_.sequence_parallel ? g_.layout_.tp_size : 1);
    g_.head_forward(hidden_rows(be, x, g_.cfg_.hidden_size, g_.opts_.activation_dtype), ctx.targets, *s);
    ctx.loss += s->loss;
    if (ctx.train()) {
      ctx.output = s->logits.reshape({s->B, s->T, -1});
      saved = std::move(s);
    }
    return Tensor();
  }

  Tensor backward(const Tensor&, MicroBatchContext& ctx, LayerState& saved) override {
    auto& s = static_cast<GptCacheState&>(saved);
    const Tensor dx = run_backward(ctx, s, false);
    s = GptCacheState{};
    return dx;
  }

  // Input part: the loss gradient, the LM-head dx GEMM and ln_f (its weight
  // gradients included); the LM-head weight GEMM waits for the weight part.
  bool splits_backward() const override { return true; }
  Tensor backward_input(const Tensor&, MicroBatchContext& ctx, LayerState& saved) override {
    return run_backward(ctx, static_cast<GptCacheState&>(saved), true);
  }
  void backward_weight(MicroBatchContext&, LayerState& saved) override {
    auto& s = static_cast<GptCacheState&>(saved);
    for (LinearWeightGrad& w : s.weight_grads) w.run(*g_.backend_);
    s = GptCacheState{};
  }

 private:
  Tensor run_backward(MicroBatchContext& ctx, GptCacheState& s, bool split) {
    ctx.output = Tensor();  // the logits are freed by head_backward
    s.split_backward = split;
    const Tensor dx = g_.head_backward(s);
    return dx.reshape(g_.hidden_shape(s.B, s.T));
  }

  Gpt& g_;
};

std::vector<std::unique_ptr<Layer>> make_gpt_layers(Gpt& g) {
  std::vector<std::unique_ptr<Layer>> out;
  if (g.layout_.has_embedding) out.push_back(std::make_unique<GptEmbeddingLayer>(g));
  for (auto& b : g.blocks_) out.push_back(std::make_unique<GptBlockLayer>(g, *b));
  if (g.layout_.has_head) out.push_back(std::make_unique<GptHeadLayer>(g));
  return out;
}

}  // namespace pp3d::detail
