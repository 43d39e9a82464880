// One GPT block: forward and backward from Backend ops and the tensor-parallel
// Linear layers (see gpt.h for the math, docs/MODEL.md for the TP layout).
#include <cmath>

#include "model/gpt_internal.h"
#include "pp3d/parallel/tensor_parallel.h"

namespace pp3d {
namespace detail {

void BlockActs::drop_all_but_input() {
  ln1 = ln1_mean = ln1_rstd = qkv = att = lse = Tensor();
  x2 = ln2 = ln2_mean = ln2_rstd = fc = gelu = Tensor();
}

Tensor new_activation(Backend& be, const Shape& shape) {
  return Tensor::empty(shape, DType::F32, be.device(), MemCategory::Activations);
}

Tensor store_activation(Backend& be, const Tensor& t, DType dt) {
  if (!t.defined() || t.dtype() == dt) return t;
  Tensor out = Tensor::empty(t.shape(), dt, be.device(), MemCategory::Activations);
  be.cast(t, out);
  return out;
}

Tensor activation_f32(Backend& be, const Tensor& t) {
  if (!t.defined() || t.dtype() == DType::F32) return t;
  Tensor out = Tensor::empty(t.shape(), DType::F32, be.device(), MemCategory::Workspace);
  be.cast(t, out);
  return out;
}

PartialGrads::PartialGrads(Backend& be, Communicator* tp, bool active, std::vector<Parameter*> params)
    : be_(be), tp_(active && tp_world(tp) > 1 ? tp : nullptr), params_(std::move(params)) {
  int64_t total = 0;
  for (Parameter* p : params_) total += p->grad.numel();
  if (tp_ != nullptr) scratch_ = Tensor::zeros({total}, DType::F32, be.device(), MemCategory::Comm);
  int64_t off = 0;
  for (Parameter* p : params_) {
    const int64_t n = p->grad.numel();
    targets_.push_back(tp_ ? scratch_.slice(off, off + n).reshape(p->grad.shape()) : p->grad);
    off += n;
  }
}

void PartialGrads::finish() {
  if (tp_ == nullptr) return;
  tp_->all_reduce(scratch_);
  for (std::size_t i = 0; i < params_.size(); ++i) be_.axpy(1.0f, targets_[i], params_[i]->grad);
  scratch_ = Tensor();
  targets_.clear();
  tp_ = nullptr;
}

}  // namespace detail

using detail::new_activation;

namespace {

// Local rows (tokens) of the sequence-parallel regions.
int64_t sp_rows(int64_t T, const Communicator* tp, bool sp) { return sp ? T / tp_world(tp) : T; }

// A Linear output as the f32 residual-stream term: t itself when f32, else its
// f32 copy (an Activations tensor: it becomes x2 / the block output).
Tensor residual_f32(Backend& be, const Tensor& t) {
  if (t.dtype() == DType::F32) return t;
  Tensor out = new_activation(be, t.shape());
  be.cast(t, out);
  return out;
}

}  // namespace

Tensor Gpt::Block::forward(Backend& be, int64_t B, int64_t T, detail::BlockActs& a) const {
  const int64_t Tl = sp_rows(T, tp, sequence_parallel), Nl = B * Tl;
  const int64_t C = ln1_w->value.numel(), H = local_heads, D = head_dim;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  // 16-bit compute (gemm_dtype bf16/f16): every Linear writes a 16-bit output
  // and a 16-bit input gradient; LayerNorm, attention and GELU read and write
  // 16 bits (f32 math inside); the residual stream and its gradient stay as
  // before (f32, or act_dtype between blocks). See docs/MIXED_PRECISION.md.
  const bool c16 = gemm_dtype != DType::F32;
  const DType op_dt = c16 ? gemm_dtype : DType::F32;  // dtype of the per-op activations
  auto new_act = [op_dt](Backend& b, const Shape& shape) {
    return Tensor::empty(shape, op_dt, b.device(), MemCategory::Activations);
  };
  const ColumnParallelLinear c_attn(*qkv_w, qkv_b, {false, sequence_parallel, gemm_dtype, c16, c16});
  const RowParallelLinear attn_proj(*attn_proj_w, attn_proj_b, {true, sequence_parallel, gemm_dtype, c16, c16});
  const ColumnParallelLinear c_fc(*fc_w, fc_b, {false, sequence_parallel, gemm_dtype, c16, c16});
  const RowParallelLinear mlp_proj(*mlp_proj_w, mlp_proj_b, {true, sequence_parallel, gemm_dtype, c16, c16});

  const Tensor x = detail::activation_f32(be, a.x);  // compute in f32 (a.x may be 16-bit storage)
  a.ln1 = new_act(be, {Nl, C});
  a.ln1_mean = new_activation(be, {Nl});
  a.ln1_rstd = new_activation(be, {Nl});
  be.layernorm_forward(x, value_as_f32(be, ln1_w->value), value_as_f32(be, ln1_b->value), a.ln1, a.ln1_mean,
                       a.ln1_rstd, eps);
  a.qkv = c_attn.forward(be, tp, a.ln1.reshape({B, Tl, C}));  // [B, T, 3*H*D]: this rank's heads
  a.att = new_act(be, {B, T, H, D});
  a.lse = new_activation(be, {B, H, T});
  be.attention_forward(a.qkv.reshape({B, T, 3, H, D}), a.att, a.lse, scale);
  a.x2 = residual_f32(be, attn_proj.forward(be, tp, a.att.reshape({B, T, H * D})).reshape({Nl, C}));
  be.add(x, a.x2, a.x2);  // residual: x2 = x + attn_proj(...)
  a.ln2 = new_act(be, {Nl, C});
  a.ln2_mean = new_activation(be, {Nl});
  a.ln2_rstd = new_activation(be, {Nl});
  be.layernorm_forward(a.x2, value_as_f32(be, ln2_w->value), value_as_f32(be, ln2_b->value), a.ln2, a.ln2_mean,
                       a.ln2_rstd, eps);
  if (c16) {  // one fused op (cuBLASLt GELU_AUX_BIAS): gelu = round(gelu(f32 pre)), fc = round(pre)
    a.gelu = c_fc.forward_gelu(be, tp, a.ln2.reshape({B, Tl, C}), a.fc);
  } else {
    a.fc = c_fc.forward(be, tp, a.ln2.reshape({B, Tl, C}));
    a.gelu = new_act(be, a.fc.shape());
    be.gelu_forward(a.fc, a.gelu);
  }
  Tensor out = residual_f32(be, mlp_proj.forward(be, tp, a.gelu.reshape({B, T, -1})).reshape({Nl, C}));
  be.add(a.x2, out, out);  // residual
  if (act_dtype == DType::F32) return out;
  // 16-bit activation storage: round what backward reads, and the output.
  for (Tensor* t : {&a.x, &a.ln1, &a.qkv, &a.att, &a.x2, &a.ln2, &a.fc, &a.gelu})
    *t = detail::store_activation(be, *t, act_dtype);
  return detail::store_activation(be, out, act_dtype);
}

Tensor Gpt::Block::backward(Backend& be, int64_t B, int64_t T, detail::BlockActs& a, const Tensor& dout,
                            std::vector<LinearWeightGrad>* defer_weight) {
  const int64_t Tl = sp_rows(T, tp, sequence_parallel), Nl = B * Tl, N = B * T;
  const int64_t C = ln1_w->value.numel(), H = local_heads, D = head_dim;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  // 16-bit compute (gemm_dtype bf16/f16): every Linear writes a 16-bit output
  // and a 16-bit input gradient; LayerNorm, attention and GELU read and write
  // 16 bits (f32 math inside); the residual stream and its gradient stay as
  // before (f32, or act_dtype between blocks). See docs/MIXED_PRECISION.md.
  const bool c16 = gemm_dtype != DType::F32;
  const DType op_dt = c16 ? gemm_dtype : DType::F32;  // dtype of the per-op activations
  auto new_act = [op_dt](Backend& b, const Shape& shape) {
    return Tensor::empty(shape, op_dt, b.device(), MemCategory::Activations);
  };
  const ColumnParallelLinear c_attn(*qkv_w, qkv_b, {false, sequence_parallel, gemm_dtype, c16, c16});
  const RowParallelLinear attn_proj(*attn_proj_w, attn_proj_b, {true, sequence_parallel, gemm_dtype, c16, c16});
  const ColumnParallelLinear c_fc(*fc_w, fc_b, {false, sequence_parallel, gemm_dtype, c16, c16});
  const RowParallelLinear mlp_proj(*mlp_proj_w, mlp_proj_b, {true, sequence_parallel, gemm_dtype, c16, c16});
  // LayerNorm grads from the local tokens are partial under sequence parallelism.
  detail::PartialGrads ln(be, tp, sequence_parallel, {ln1_w, ln1_b, ln2_w, ln2_b});
  // 16-bit activation storage: each saved tensor is read through an f32 copy
  // made just before its use and freed right after it (Workspace).
  // With 16-bit compute the ops read the 16-bit tensors directly (only the
  // f32 residual x, x2 go through f32()).
  auto f32 = [&be](const Tensor& t) { return detail::activation_f32(be, t); };
  auto in = [&](const Tensor& t) { return c16 ? t : f32(t); };

  // MLP branch: out = x2 + mlp_proj(gelu(fc(ln2(x2))))
  Tensor dfc;
  if (c16) {  // mlp_proj's input gradient fused with GELU's backward (cuBLASLt DGELU): dfc 16-bit
    dfc = mlp_proj.backward_dgelu(be, tp, dout.reshape({B, Tl, C}), a.gelu.reshape({B, T, -1}),
                                  a.fc.reshape({B, T, -1}), defer_weight);
  } else {  // (gelu freed before dfc is allocated: the planner's memory model counts this order)
    Tensor dgelu =
        mlp_proj.backward(be, tp, dout.reshape({B, Tl, C}), in(a.gelu).reshape({B, T, -1}), true, defer_weight);
    a.gelu = Tensor();
    dfc = new_act(be, a.fc.shape());
    be.gelu_backward(in(a.fc), dgelu.reshape(a.fc.shape()), dfc);
  }
  a.gelu = a.fc = Tensor();
  Tensor dln2 = c_fc.backward(be, tp, dfc, in(a.ln2).reshape({B, Tl, C}), true, defer_weight).reshape({Nl, C});
  dfc = Tensor();
  a.ln2 = Tensor();
  Tensor dx2 = new_activation(be, {Nl, C});
  be.layernorm_backward(dln2, f32(a.x2), value_as_f32(be, ln2_w->value), a.ln2_mean, a.ln2_rstd, dx2, ln.grad(2),
                        ln.grad(3));
  dln2 = Tensor();
  be.add(dx2, dout.reshape({Nl, C}), dx2);  // residual gradient
  a.x2 = a.ln2_mean = a.ln2_rstd = Tensor();
  // Attention branch: x2 = x + attn_proj(attention(c_attn(ln1(x))))
  Tensor datt =
      attn_proj.backward(be, tp, dx2.reshape({B, Tl, C}), in(a.att).reshape({B, T, H * D}), true, defer_weight);
  Tensor dqkv = new_act(be, {N, 3 * H * D});
  Tensor dqkv5 = dqkv.reshape({B, T, 3, H, D});
  be.attention_backward(datt.reshape({B, T, H, D}), in(a.qkv).reshape({B, T, 3, H, D}), in(a.att), a.lse, dqkv5,
                        scale);
  datt = Tensor();
  a.att = a.lse = a.qkv = Tensor();
  Tensor dln1 = c_attn.backward(be, tp, dqkv.reshape({B, T, 3 * H * D}), in(a.ln1).reshape({B, Tl, C}), true,
                               defer_weight)
                    .reshape({Nl, C});
  dqkv = Tensor();
  Tensor dx = new_activation(be, {Nl, C});
  be.layernorm_backward(dln1, f32(a.x), value_as_f32(be, ln1_w->value), a.ln1_mean, a.ln1_rstd, dx, ln.grad(0),
                        ln.grad(1));
  be.add(dx, dx2, dx);
  a.drop_all_but_input();
  a.x = Tensor();
  ln.finish();
  return dx;
}

}  // namespace pp3d
