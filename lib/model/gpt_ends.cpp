// Gpt stage ends: (vocab-parallel) embedding, and ln_f + LM head + (vocab-parallel)
// cross-entropy. With tp_size == 1 these are the serial ops, unchanged.
#include <vector>

#include "model/gpt_internal.h"
#include "pp3d/core/error.h"
#include "pp3d/model/gpt.h"
#include "pp3d/parallel/tensor_parallel.h"
#include "pp3d/parallel/vocab_parallel.h"

namespace pp3d {
namespace detail {

Tensor on_device(Backend& be, const Tensor& t) {
  return t.device() == be.device() ? t : t.to(be.device(), MemCategory::Activations);
}

Tensor positions(Backend& be, int64_t B, int64_t t0, int64_t Tl) {
  std::vector<int32_t> pos(static_cast<std::size_t>(B * Tl));
  for (int64_t i = 0; i < B * Tl; ++i) pos[static_cast<std::size_t>(i)] = static_cast<int32_t>(t0 + i % Tl);
  Tensor host = Tensor::from_vector_i32({B * Tl}, pos);
  return be.device().is_cpu() ? host : host.to(be.device(), MemCategory::Activations);
}

}  // namespace detail

using detail::new_activation;

namespace {

bool sp_active(const GptLayout& l) { return l.sequence_parallel && l.tp_size > 1; }

}  // namespace

Tensor Gpt::embed_forward(const Tensor& ids, detail::GptCacheState& s) {
  Backend& be = *backend_;
  const int64_t B = s.B, T = s.T, Tl = local_seq(T), C = cfg_.hidden_size;
  const bool sp = sp_active(layout_);
  const VocabShard shard = vocab_shard(cfg_.vocab_size, cfg_.padded_vocab(), layout_.tp_rank, layout_.tp_size);
  // wte rows summed over TP (all-reduce, or reduce-scatter to the local tokens), then + wpe.
  Tensor x = vocab_parallel_embedding_forward(be, tp_group(), ids, value_as_f32(be, wte_->value), shard.start, sp)
                 .reshape({B * Tl, C});
  const Tensor pos = detail::positions(be, B, sp ? layout_.tp_rank * Tl : 0, Tl);
  be.embedding_forward(pos, value_as_f32(be, wpe_->value), x, 0, true);
  if (!s.eval) s.ids = ids;
  return x;
}

void Gpt::embed_backward(const Tensor& dx, detail::GptCacheState& s) {
  Backend& be = *backend_;
  const int64_t B = s.B, T = s.T, Tl = local_seq(T), N = B * T, C = cfg_.hidden_size;
  const VocabShard shard = vocab_shard(cfg_.vocab_size, cfg_.padded_vocab(), layout_.tp_rank, layout_.tp_size);
  // The gradient of the whole sequence (identical on every TP rank), so the
  // wte block and wpe get complete gradients with no further reduction.
  const Tensor dfull = sp_active(layout_) ? sequence_all_gather(be, tp_group(), dx.reshape({B, Tl, C})) : dx;
  vocab_parallel_embedding_backward(be, s.ids, dfull, wte_->grad, shard.start);
  be.embedding_backward(detail::positions(be, B, 0, T), dfull.reshape({N, C}), wpe_->grad, 0);
}

void Gpt::head_forward(const Tensor& x, const Tensor& targets, detail::GptCacheState& s) {
  Backend& be = *backend_;
  const int64_t B = s.B, T = s.T, Tl = local_seq(T), N = B * T, Nl = B * Tl, C = cfg_.hidden_size;
  const bool sp = sp_active(layout_);
  const VocabShard shard = vocab_shard(cfg_.vocab_size, cfg_.padded_vocab(), layout_.tp_rank, layout_.tp_size);
  // 16-bit compute: ln_f writes 16 bits (the LM-head GEMM operand), the logits stay f32.
  const bool c16 = opts_.compute_dtype != DType::F32;
  Tensor lnf = Tensor::empty({Nl, C}, opts_.compute_dtype, be.device(), MemCategory::Activations);
  Tensor mean = new_activation(be, {Nl}), rstd = new_activation(be, {Nl});
  be.layernorm_forward(detail::activation_f32(be, x), value_as_f32(be, lnf_w_->value),
                       value_as_f32(be, lnf_b_->value), lnf, mean, rstd, cfg_.ln_eps);
  // logits [N, Vp/tp] = ln_f(x) . head_local^T: a column-parallel Linear without bias.
  const ColumnParallelLinear head(*head_, nullptr, {false, sp, opts_.compute_dtype, false, c16});
  Tensor logits = head.forward(be, tp_group(), lnf.reshape({B, Tl, C})).reshape({N, shard.local});
  Tensor tgt = detail::on_device(be, targets).reshape({N});
  VocabParallelXent st = vocab_parallel_xent_forward(be, tp_group(), logits, tgt, shard);
  s.loss = static_cast<double>(s.loss_weight) * st.loss_sum;
  if (!s.eval) {
    s.targets = tgt;
    s.x_final = x;  // already in the activation dtype (the last block's output)
    // logits stay f32 (the loss path); a 16-bit ln_f output is kept as it is.
    s.lnf = c16 ? lnf : detail::store_activation(be, lnf, opts_.activation_dtype);
    s.lnf_mean = mean;
    s.lnf_rstd = rstd;
    s.logits = logits;
    s.max = st.max;
    s.sumexp = st.sumexp;
  }
}

Tensor Gpt::head_backward(detail::GptCacheState& s) {
  Backend& be = *backend_;
  const int64_t B = s.B, T = s.T, Tl = local_seq(T), N = B * T, Nl = B * Tl, C = cfg_.hidden_size;
  const bool sp = sp_active(layout_);
  const VocabShard shard = vocab_shard(cfg_.vocab_size, cfg_.padded_vocab(), layout_.tp_rank, layout_.tp_size);
  Tensor dlogits = new_activation(be, {N, shard.local});
  VocabParallelXent st;
  st.max = s.max;
  st.sumexp = s.sumexp;
  vocab_parallel_xent_backward(be, s.logits, s.targets, shard, st, s.loss_weight, dlogits);  // no communication
  s.logits = Tensor();
  // Head GEMM backward; d(ln_f out) summed over TP (all-reduce / reduce-scatter).
  const bool c16 = opts_.compute_dtype != DType::F32;  // dlnf 16-bit (the gradient of a 16-bit tensor)
  const ColumnParallelLinear head(*head_, nullptr, {false, sp, opts_.compute_dtype, false, c16});
  const Tensor lnf = c16 ? s.lnf : detail::activation_f32(be, s.lnf);
  Tensor dlnf = head.backward(be, tp_group(), dlogits, lnf.reshape({B, Tl, C}), true,
                              s.split_backward ? &s.weight_grads : nullptr)
                    .reshape({Nl, C});
  dlogits = Tensor();
  detail::PartialGrads ln(be, tp_group(), sp, {lnf_w_, lnf_b_});
  Tensor dx = new_activation(be, {Nl, C});
  be.layernorm_backward(dlnf, detail::activation_f32(be, s.x_final), value_as_f32(be, lnf_w_->value), s.lnf_mean,
                        s.lnf_rstd, dx, ln.grad(0), ln.grad(1));
  ln.finish();
  s.lnf = s.lnf_mean = s.lnf_rstd = s.x_final = s.max = s.sumexp = Tensor();
  return dx;
}

}  // namespace pp3d
