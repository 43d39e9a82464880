// The layers of pp3d::Llama, from Backend ops and pp3d's tensor-parallel
// primitives (public headers only). Shapes: rows N = B*T tokens, N_l = B*T_l in
// the sequence-parallel regions (norms, residuals); heads local to this TP rank.
//
// Mixed precision, GPT's semantics (docs/MIXED_PRECISION.md, "Llama"). 16-bit
// parameters are read by the GEMMs directly and cast to f32 per use elsewhere
// (RMSNorm weights, the embedding table). With compute_dtype f32 every op
// computes in f32. With a 16-bit compute dtype activations flow in 16 bits
// between ops (as GPT): every Linear takes 16-bit operands (Backend::gemm16,
// f32 accumulation) and writes a 16-bit output; RMSNorm, RoPE, grouped-query
// attention (P and dS rounded) and SwiGLU read and write 16 bits with f32 math
// inside; the residual stream (and its gradient), RMSNorm rstd, the attention
// lse, the logits and the loss stay f32. With a 16-bit activation dtype each
// layer also rounds what it saves for backward and its output when its
// forward ends, and backward reads them through f32 Workspace copies.
#include <cmath>

#include "model/llama_layers.h"
#include "pp3d/core/error.h"
#include "pp3d/parallel/tensor_parallel.h"
#include "pp3d/parallel/vocab_parallel.h"

namespace pp3d::llama_detail {

namespace {

Tensor act(Backend& be, const Shape& shape, DType dt = DType::F32) {
  return Tensor::empty(shape, dt, be.device(), MemCategory::Activations);
}

// Activation storage: `t` itself when it already has dtype `dt`, else its
// rounding to dt (a new Activations tensor). Undefined stays undefined.
Tensor store(Backend& be, const Tensor& t, DType dt) {
  if (!t.defined() || t.dtype() == dt) return t;
  Tensor out = Tensor::empty(t.shape(), dt, be.device(), MemCategory::Activations);
  be.cast(t, out);
  return out;
}

// `t` as f32 for compute: itself, or an f32 Workspace copy of a 16-bit tensor.
Tensor f32(Backend& be, const Tensor& t) {
  if (!t.defined() || t.dtype() == DType::F32) return t;
  Tensor out = Tensor::empty(t.shape(), DType::F32, be.device(), MemCategory::Workspace);
  be.cast(t, out);
  return out;
}

// RMSNorm weight gradients from this rank's tokens only (sequence
// parallelism) are partial: accumulate into a scratch, all-reduce it over TP
// and add, so every micro-batch's contribution is complete before the
// layer's after_backward hook. Otherwise straight into the parameter's grad.
class NormGrads {
 public:
  NormGrads(const LayerEnv& env, std::vector<Parameter*> params) : env_(env), params_(std::move(params)) {
    partial_ = env.sp && env.tp_size > 1;
    for (Parameter* p : params_)
      grads_.push_back(partial_ ? Tensor::zeros(p->grad.shape(), DType::F32, env.be->device(), MemCategory::Comm)
                                : p->grad);
  }
  Tensor& grad(std::size_t i) { return grads_[i]; }
  void finish() {
    if (!partial_) return;
    for (std::size_t i = 0; i < params_.size(); ++i) {
      env_.tp->all_reduce(grads_[i]);
      env_.be->axpy(1.0f, grads_[i], params_[i]->grad);
    }
  }

 private:
  const LayerEnv& env_;
  std::vector<Parameter*> params_;
  std::vector<Tensor> grads_;
  bool partial_ = false;
};

struct RmsOut {
  Tensor y, rstd;
};

// The dtype of the activations between ops: 16-bit with a 16-bit compute dtype.
DType op_dtype(const LayerEnv& env) { return env.gemm_dtype; }
bool c16(const LayerEnv& env) { return env.gemm_dtype != DType::F32; }

// A Linear output as the f32 residual-stream term: t itself when f32, else its
// f32 copy (an Activations tensor: it becomes x2 / the block output).
Tensor residual_f32(Backend& be, const Tensor& t) {
  if (t.dtype() == DType::F32) return t;
  Tensor out = act(be, t.shape());
  be.cast(t, out);
  return out;
}

// x f32; y in y_dt (16-bit compute: f32 statistics, y rounded once); a 16-bit
// weight is read through an f32 copy.
RmsOut rmsnorm(Backend& be, const Tensor& x, const Parameter& w, float eps, DType y_dt) {
  const int64_t C = w.value.numel(), rows = x.numel() / C;
  RmsOut r{act(be, {rows, C}, y_dt), act(be, {rows})};
  be.rmsnorm_forward(x.reshape({rows, C}), value_as_f32(be, w.value), r.y, r.rstd, eps);
  return r;
}

// dx (f32, overwritten) and dweight (+=, f32 or 16-bit) of y = rmsnorm(x) * w;
// x f32 or 16-bit (read through f32), dy f32 or 16-bit (16-bit compute, read as is).
void rmsnorm_grad(Backend& be, const Tensor& dy, const Tensor& x, const Parameter& w, const Tensor& rstd, Tensor& dx,
                  Tensor& dweight) {
  const int64_t C = w.value.numel(), rows = x.numel() / C;
  be.rmsnorm_backward(dy.reshape({rows, C}), f32(be, x).reshape({rows, C}), value_as_f32(be, w.value), rstd, dx,
                      dweight);
}

// ---- embedding ------------------------------------------------------------------------

struct EmbedState : LayerState {
  Tensor ids;
  Tensor dy;  // split backward: the input part keeps d(output) for the weight part
};

class EmbeddingLayer final : public Layer {
 public:
  EmbeddingLayer(const LayerEnv& env, Parameter& embed) : env_(env), embed_(embed) {}
  std::vector<Parameter*> parameters() override { return {&embed_}; }

  Tensor forward(const Tensor& ids, MicroBatchContext& ctx, std::unique_ptr<LayerState>& saved) override {
    const VocabShard vs = vocab_shard(env_.cfg.vocab_size, env_.cfg.padded_vocab_size, env_.tp_rank, env_.tp_size);
    Tensor x = vocab_parallel_embedding_forward(*env_.be, env_.tp, ids, value_as_f32(*env_.be, embed_.value),
                                                vs.start, env_.sp);
    x = store(*env_.be, x, env_.act_dtype);
    if (ctx.train()) {
      auto s = std::make_unique<EmbedState>();
      s->ids = ids;
      saved = std::move(s);
    }
    return x.reshape({ids.size(0), env_.local_seq(ids.size(1)), env_.cfg.hidden_size});
  }

  Tensor backward(const Tensor& dy, MicroBatchContext& ctx, LayerState& saved) override {
    backward_input(dy, ctx, saved);
    backward_weight(ctx, saved);
    return Tensor();  // token ids need no gradient
  }

  // Split backward (zero-bubble schedules): the embedding's backward is all
  // weight gradient, so the input part only keeps dy.
  bool splits_backward() const override { return true; }
  Tensor backward_input(const Tensor& dy, MicroBatchContext&, LayerState& saved) override {
    static_cast<EmbedState&>(saved).dy = dy;
    return Tensor();
  }
  void backward_weight(MicroBatchContext&, LayerState& saved) override {
    auto& s = static_cast<EmbedState&>(saved);
    const Tensor dy = s.dy;
    s.dy = Tensor();
    const VocabShard vs = vocab_shard(env_.cfg.vocab_size, env_.cfg.padded_vocab_size, env_.tp_rank, env_.tp_size);
    const Tensor full = env_.sp ? sequence_all_gather(*env_.be, env_.tp, dy) : dy;
    vocab_parallel_embedding_backward(*env_.be, s.ids.reshape({s.ids.numel()}),
                                      full.reshape({s.ids.numel(), env_.cfg.hidden_size}), embed_.grad, vs.start);
    s.ids = Tensor();
  }

 private:
  LayerEnv env_;
  Parameter& embed_;
};

// ---- transformer block ------------------------------------------------------------------

struct BlockState : LayerState {
  int64_t B = 0, T = 0;
  Tensor x;  // block input [B, T_l, C] (always kept)
  Tensor h1, rstd1, q, k, v, att, lse, x2, h2, rstd2, gate, up, a;
  std::vector<LinearWeightGrad> weight_grads;  // split backward: the seven Linear weight GEMMs
  bool full() const { return q.defined(); }
};

class BlockLayer final : public LinearSplitBackwardLayer<BlockState> {
 public:
  BlockLayer(const LayerEnv& env, const BlockParams& p) : env_(env), p_(p) {}
  std::vector<Parameter*> parameters() override {
    return {p_.input_norm, p_.q, p_.k, p_.v, p_.o, p_.post_norm, p_.gate, p_.up, p_.down};
  }

  Tensor forward(const Tensor& x, MicroBatchContext& ctx, std::unique_ptr<LayerState>& saved) override {
    auto s = std::make_unique<BlockState>();
    s->B = x.size(0);
    s->T = x.size(1) * (env_.sp ? env_.tp_size : 1);
    s->x = store(*env_.be, x, env_.act_dtype);  // the stored residual stream (a 16-bit input as is)
    Tensor y = run_forward(*s);
    if (ctx.train()) {
      if (env_.recompute) {  // keep the input only
        auto kept = std::make_unique<BlockState>();
        kept->B = s->B;
        kept->T = s->T;
        kept->x = s->x;
        s = std::move(kept);
      }
      saved = std::move(s);
    }
    return y;
  }

 private:
  // Split backward (LinearSplitBackwardLayer): the input part is everything but
  // the seven Linear weight-gradient GEMMs (RMSNorm weight gradients included).
  Backend& weight_grad_backend() override { return *env_.be; }
  // defer: nullptr (fused), or where the Linear weight-gradient parts go.
  Tensor backward_parts(const Tensor& dy, MicroBatchContext&, BlockState& s,
                        std::vector<LinearWeightGrad>* defer) override {
    if (!s.full()) run_forward(s);  // activation recompute
    Backend& be = *env_.be;
    const int64_t B = s.B, T = s.T, Tl = env_.local_seq(T), Nl = B * Tl, C = env_.cfg.hidden_size;
    const int64_t Hq = env_.local_heads(), Hkv = env_.local_kv_heads(), D = env_.cfg.head_dim();
    const Lin l = linears();
    const DType odt = op_dtype(env_);
    NormGrads ng(env_, {p_.input_norm, p_.post_norm});
    // 16-bit compute: the ops read the saved 16-bit tensors as they are; else
    // through f32 copies (16-bit activation storage).
    auto in = [&](const Tensor& t) { return c16(env_) ? t : f32(be, t); };

    // MLP branch: y = x2 + down(silu(gate(h2)) * up(h2))
    const Tensor da = l.down.backward(be, env_.tp, dy, in(s.a), true, defer);  // 16-bit with 16-bit compute
    s.a = Tensor();
    Tensor dgate = act(be, s.gate.shape(), odt), dup = act(be, s.up.shape(), odt);
    be.swiglu_backward(in(s.gate), in(s.up), da, dgate, dup);
    s.gate = s.up = Tensor();
    const Tensor h2 = in(s.h2).reshape({B, Tl, C});
    // gate and up as one fused Linear: their input gradients add in f32, rounded once.
    Tensor dh2 = l.gate.backward(be, env_.tp, dgate, h2, true, defer);
    be.add(dh2, l.up.backward(be, env_.tp, dup, h2, true, defer), dh2);
    dgate = dup = Tensor();
    Tensor dx2 = act(be, {Nl, C});
    rmsnorm_grad(be, store(be, dh2, odt), s.x2, *p_.post_norm, s.rstd2, dx2, ng.grad(1));
    dh2 = Tensor();
    be.add(dx2, dy.reshape({Nl, C}), dx2);  // residual
    s.h2 = s.x2 = s.rstd2 = Tensor();

    // Attention branch: x2 = x + o(gqa(rope(q(h1)), rope(k(h1)), v(h1)))
    Tensor att = in(s.att);  // read twice: one f32 copy of a 16-bit att (f32 compute)
    const Tensor datt = l.o.backward(be, env_.tp, dx2.reshape({B, Tl, C}), att.reshape({B, T, Hq * D}), true, defer);
    Tensor dq = act(be, {B, T, Hq, D}, odt), dk = act(be, {B, T, Hkv, D}, odt), dv = act(be, {B, T, Hkv, D}, odt);
    be.gqa_attention_backward(datt.reshape({B, T, Hq, D}), in(s.q), in(s.k), in(s.v), att, s.lse, dq, dk, dv,
                              scale());
    s.q = s.k = s.v = s.att = s.lse = att = Tensor();
    be.rope_backward(dq, dq, 0, env_.cfg.rope_theta);
    be.rope_backward(dk, dk, 0, env_.cfg.rope_theta);
    const Tensor h1 = in(s.h1).reshape({B, Tl, C});
    // q, k, v as one fused Linear: input gradients add in f32, rounded once.
    Tensor dh1 = l.q.backward(be, env_.tp, dq.reshape({B, T, Hq * D}), h1, true, defer);
    be.add(dh1, l.k.backward(be, env_.tp, dk.reshape({B, T, Hkv * D}), h1, true, defer), dh1);
    be.add(dh1, l.v.backward(be, env_.tp, dv.reshape({B, T, Hkv * D}), h1, true, defer), dh1);
    Tensor dx = act(be, {Nl, C});
    rmsnorm_grad(be, store(be, dh1, odt), s.x, *p_.input_norm, s.rstd1, dx, ng.grad(0));
    dh1 = Tensor();
    be.add(dx, dx2, dx);
    s.x = s.h1 = s.rstd1 = Tensor();
    ng.finish();
    return dx.reshape({B, Tl, C});
  }

  struct Lin {
    ColumnParallelLinear q, k, v;
    RowParallelLinear o;
    ColumnParallelLinear gate, up;
    RowParallelLinear down;
  };
  // 16-bit compute: every Linear writes a 16-bit output; o and down (whose
  // input gradients feed attention / SwiGLU backward) also take a 16-bit dy
  // and return a 16-bit dx. q, k, v and gate, up return f32 dx (dy is rounded
  // by gemm16 anyway), summed in f32 and rounded once: the fused QKV / gate-up
  // Linear of Megatron-style Llamas.
  Lin linears() const {
    const bool h = c16(env_);
    const ColumnParallelLinear::Options col{false, env_.sp, env_.gemm_dtype, h, false};
    const RowParallelLinear::Options row{true, env_.sp, env_.gemm_dtype, h, h};
    return {{*p_.q, nullptr, col},    {*p_.k, nullptr, col},  {*p_.v, nullptr, col},
            {*p_.o, nullptr, row},    {*p_.gate, nullptr, col}, {*p_.up, nullptr, col},
            {*p_.down, nullptr, row}};
  }
  float scale() const { return 1.0f / std::sqrt(static_cast<float>(env_.cfg.head_dim())); }

  // Fills every activation of s from s.x; returns the block output [B, T_l, C]
  // in the activation dtype (with a 16-bit one, the saved activations are
  // rounded too, when the forward is done; with 16-bit compute they are 16-bit
  // already and kept as they are).
  Tensor run_forward(BlockState& s) const {
    Backend& be = *env_.be;
    const int64_t B = s.B, T = s.T, Tl = env_.local_seq(T), C = env_.cfg.hidden_size;
    const int64_t Hq = env_.local_heads(), Hkv = env_.local_kv_heads(), D = env_.cfg.head_dim();
    const Lin l = linears();
    const DType odt = op_dtype(env_);
    const Tensor x = f32(be, s.x);  // the residual stream in f32
    RmsOut n1 = rmsnorm(be, x, *p_.input_norm, env_.cfg.norm_eps, odt);
    s.h1 = n1.y;
    s.rstd1 = n1.rstd;
    const Tensor h1 = s.h1.reshape({B, Tl, C});
    s.q = l.q.forward(be, env_.tp, h1).reshape({B, T, Hq, D});
    s.k = l.k.forward(be, env_.tp, h1).reshape({B, T, Hkv, D});
    s.v = l.v.forward(be, env_.tp, h1).reshape({B, T, Hkv, D});
    be.rope_forward(s.q, s.q, 0, env_.cfg.rope_theta);
    be.rope_forward(s.k, s.k, 0, env_.cfg.rope_theta);
    s.att = act(be, {B, T, Hq, D}, odt);
    s.lse = act(be, {B, Hq, T});
    be.gqa_attention_forward(s.q, s.k, s.v, s.att, s.lse, scale());
    s.x2 = residual_f32(be, l.o.forward(be, env_.tp, s.att.reshape({B, T, Hq * D})));
    be.add(s.x2, x, s.x2);  // residual
    RmsOut n2 = rmsnorm(be, s.x2, *p_.post_norm, env_.cfg.norm_eps, odt);
    s.h2 = n2.y;
    s.rstd2 = n2.rstd;
    const Tensor h2 = s.h2.reshape({B, Tl, C});
    s.gate = l.gate.forward(be, env_.tp, h2);
    s.up = l.up.forward(be, env_.tp, h2);
    s.a = act(be, s.gate.shape(), odt);
    be.swiglu_forward(s.gate, s.up, s.a);
    Tensor y = residual_f32(be, l.down.forward(be, env_.tp, s.a));
    be.add(y, s.x2, y);  // residual
    const DType adt = env_.act_dtype;
    if (adt != DType::F32)
      for (Tensor* t : {&s.h1, &s.q, &s.k, &s.v, &s.att, &s.x2, &s.h2, &s.gate, &s.up, &s.a}) *t = store(be, *t, adt);
    return store(be, y, adt).reshape({B, Tl, C});
  }

  LayerEnv env_;
  BlockParams p_;
};

// ---- head: final norm, LM head, vocab-parallel cross-entropy ----------------------------------

struct HeadState : LayerState {
  int64_t B = 0, T = 0;
  float loss_weight = 0.0f;
  Tensor x, h, rstd, logits, targets;
  VocabParallelXent stats;
  std::vector<LinearWeightGrad> weight_grads;  // split backward: the LM-head weight GEMM
};

class HeadLayer final : public LinearSplitBackwardLayer<HeadState> {
 public:
  HeadLayer(const LayerEnv& env, Parameter& norm, Parameter& head) : env_(env), norm_(norm), head_(head) {}
  std::vector<Parameter*> parameters() override { return {&norm_, &head_}; }

  Tensor forward(const Tensor& x, MicroBatchContext& ctx, std::unique_ptr<LayerState>& saved) override {
    Backend& be = *env_.be;
    auto s = std::make_unique<HeadState>();
    s->B = x.size(0);
    s->T = x.size(1) * (env_.sp ? env_.tp_size : 1);
    s->loss_weight = ctx.loss_weight;
    s->x = store(be, x, env_.act_dtype);
    const int64_t N = s->B * s->T, C = env_.cfg.hidden_size;
    PP3D_CHECK(ctx.targets.numel() == N, "Llama head: targets have {} elements, expected B*T = {}",
               ctx.targets.numel(), N);
    // 16-bit compute: the final norm writes 16 bits (the LM-head GEMM operand), the logits stay f32.
    RmsOut n = rmsnorm(be, f32(be, s->x), norm_, env_.cfg.norm_eps, op_dtype(env_));
    s->rstd = n.rstd;
    s->logits = lm_head().forward(be, env_.tp, n.y.reshape({s->B, env_.local_seq(s->T), C}));  // f32 logits
    s->h = c16(env_) ? n.y : store(be, n.y, env_.act_dtype);
    s->targets = ctx.targets.reshape({N});
    const Tensor logits2 = s->logits.reshape({N, s->logits.size(-1)});
    s->stats = vocab_parallel_xent_forward(be, env_.tp, logits2, s->targets, shard());
    ctx.loss += static_cast<double>(ctx.loss_weight) * s->stats.loss_sum;
    if (ctx.train()) {
      ctx.output = s->logits;  // [B, T, Vp/tp]: this rank's vocabulary columns
      saved = std::move(s);
    }
    return Tensor();
  }

 private:
  // Split backward (LinearSplitBackwardLayer): the input part is the loss
  // gradient, the LM-head dx GEMM and the final norm (its weight gradient
  // included); the LM-head weight GEMM waits for the weight part.
  Backend& weight_grad_backend() override { return *env_.be; }
  Tensor backward_parts(const Tensor&, MicroBatchContext& ctx, HeadState& s,
                        std::vector<LinearWeightGrad>* defer) override {
    Backend& be = *env_.be;
    ctx.output = Tensor();
    const int64_t N = s.B * s.T, C = env_.cfg.hidden_size, Tl = env_.local_seq(s.T);
    Tensor dlogits = act(be, s.logits.shape());
    Tensor dlogits2 = dlogits.reshape({N, s.logits.size(-1)});
    vocab_parallel_xent_backward(be, s.logits.reshape({N, s.logits.size(-1)}), s.targets, shard(), s.stats,
                                 s.loss_weight, dlogits2);
    s.logits = Tensor();
    const Tensor h = c16(env_) ? s.h : f32(be, s.h);
    const Tensor dh = lm_head().backward(be, env_.tp, dlogits, h.reshape({s.B, Tl, C}), true, defer);  // 16-bit: c16
    NormGrads ng(env_, {&norm_});
    Tensor dx = act(be, {s.B * Tl, C});
    rmsnorm_grad(be, dh, s.x, norm_, s.rstd, dx, ng.grad(0));
    ng.finish();
    const int64_t B = s.B;
    s.x = s.h = s.rstd = s.targets = Tensor();
    s.stats = VocabParallelXent{};
    return dx.reshape({B, Tl, C});
  }

  VocabShard shard() const {
    return vocab_shard(env_.cfg.vocab_size, env_.cfg.padded_vocab_size, env_.tp_rank, env_.tp_size);
  }
  // f32 logits; with 16-bit compute a 16-bit d(final-norm output), as GPT's head.
  ColumnParallelLinear lm_head() const {
    return ColumnParallelLinear(head_, nullptr, {false, env_.sp, env_.gemm_dtype, false, c16(env_)});
  }

  LayerEnv env_;
  Parameter& norm_;
  Parameter& head_;
};

}  // namespace

std::unique_ptr<Layer> make_embedding_layer(const LayerEnv& env, Parameter& embed) {
  return std::make_unique<EmbeddingLayer>(env, embed);
}
std::unique_ptr<Layer> make_block_layer(const LayerEnv& env, const BlockParams& p) {
  return std::make_unique<BlockLayer>(env, p);
}
std::unique_ptr<Layer> make_head_layer(const LayerEnv& env, Parameter& norm, Parameter& head) {
  return std::make_unique<HeadLayer>(env, norm, head);
}

}  // namespace pp3d::llama_detail
