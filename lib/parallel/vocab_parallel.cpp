// Vocabulary-parallel embedding and cross-entropy (see vocab_parallel.h).
#include "pp3d/parallel/vocab_parallel.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "pp3d/core/error.h"
#include "pp3d/parallel/tensor_parallel.h"

namespace pp3d {

namespace {

Tensor activation(Backend& be, const Shape& shape) {
  return Tensor::empty(shape, DType::F32, be.device(), MemCategory::Activations);
}

std::vector<float> host_values(const Tensor& t) {
  return t.device().is_cpu() ? t.to_vector() : t.to(Device::cpu()).to_vector();
}

// Host values into an existing tensor on any device.
void store(const std::vector<float>& v, Tensor& t) {
  if (t.device().is_cpu()) {
    t.fill_from(v);
  } else {
    t.copy_from(Tensor::from_vector(t.shape(), v));
  }
}

}  // namespace

VocabShard vocab_shard(int64_t vocab_size, int64_t padded_vocab, int tp_rank, int tp_size) {
  PP3D_CHECK(tp_size >= 1 && tp_rank >= 0 && tp_rank < tp_size, "tp_rank {} out of range for tp_size {}", tp_rank,
             tp_size);
  PP3D_CHECK(vocab_size >= 1 && padded_vocab >= vocab_size,
             "vocab_size {} must be in [1, padded vocabulary {}]", vocab_size, padded_vocab);
  PP3D_CHECK(padded_vocab % tp_size == 0,
             "padded vocabulary {} is not divisible by tp_size {} (pad the vocabulary to a multiple of tp)",
             padded_vocab, tp_size);
  VocabShard s;
  s.local = padded_vocab / tp_size;
  s.start = tp_rank * s.local;
  s.valid = std::clamp<int64_t>(vocab_size - s.start, 0, s.local);
  return s;
}

Tensor vocab_parallel_embedding_forward(Backend& be, Communicator* tp, const Tensor& ids, const Tensor& table,
                                        int64_t vocab_start, bool sequence_parallel) {
  PP3D_CHECK(ids.defined() && ids.dim() == 2 && ids.dtype() == DType::I32,
             "vocab_parallel_embedding_forward: ids must be i32 [B, T], got {}",
             ids.defined() ? ids.str() : std::string("undefined"));
  PP3D_CHECK(table.defined() && table.dim() == 2, "vocab_parallel_embedding_forward: table must be [V_local, C]");
  const int64_t B = ids.size(0), T = ids.size(1), C = table.size(1);
  Tensor out = activation(be, {B, T, C});
  Tensor out2 = out.reshape({B * T, C});
  // Ids outside [vocab_start, vocab_start + V_local) contribute 0 rows.
  be.embedding_forward(ids.reshape({B * T}), table, out2, vocab_start, false);
  if (sequence_parallel) return sequence_reduce_scatter(be, tp, out);
  if (tp_world(tp) > 1) tp->all_reduce(out);
  return out;
}

void vocab_parallel_embedding_backward(Backend& be, const Tensor& ids, const Tensor& dout, Tensor& dtable,
                                       int64_t vocab_start) {
  PP3D_CHECK(ids.defined() && dout.defined() && dtable.defined() && dtable.dim() == 2 &&
                 dout.numel() == ids.numel() * dtable.size(1),
             "vocab_parallel_embedding_backward: dout must be the full gradient [{}, {}] of the ids, got {}",
             ids.numel(), dtable.defined() && dtable.dim() == 2 ? dtable.size(1) : -1,
             dout.defined() ? dout.str() : std::string("undefined"));
  be.embedding_backward(ids.reshape({ids.numel()}), dout.reshape({ids.numel(), dtable.size(1)}), dtable,
                        vocab_start);
}

VocabParallelXent vocab_parallel_xent_forward(Backend& be, Communicator* tp, const Tensor& logits,
                                              const Tensor& targets, const VocabShard& shard) {
  PP3D_CHECK(logits.defined() && logits.dim() == 2 && logits.size(1) == shard.local,
             "vocab_parallel_xent_forward: logits must be [N, {}], got {}", shard.local,
             logits.defined() ? logits.str() : std::string("undefined"));
  const int64_t N = logits.size(0);
  PP3D_CHECK(targets.defined() && targets.numel() == N && targets.dtype() == DType::I32,
             "vocab_parallel_xent_forward: targets must be i32 [{}]", N);
  const Tensor tgt = targets.reshape({N});
  VocabParallelXent r;
  r.max = activation(be, {N});
  r.sumexp = activation(be, {N});
  Tensor tl = activation(be, {N});
  be.xent_stats(logits, tgt, shard.start, shard.valid, r.max, r.sumexp, tl);
  const bool parallel = tp_world(tp) > 1;
  std::vector<float> lmax = host_values(r.max);
  if (parallel) tp->all_reduce(r.max, ReduceOp::Max);
  const std::vector<float> gmax = host_values(r.max);
  std::vector<float> se = host_values(r.sumexp), tv = host_values(tl);
  if (parallel) {
    // sum exp(l - gmax) = exp(lmax - gmax) * sum exp(l - lmax); an empty block (valid == 0) has lmax = -inf.
    std::vector<float> packed(static_cast<std::size_t>(2 * N));
    for (std::size_t i = 0; i < static_cast<std::size_t>(N); ++i) {
      packed[i] = se[i] == 0.0f ? 0.0f : se[i] * std::exp(lmax[i] - gmax[i]);
      packed[i + static_cast<std::size_t>(N)] = tv[i];  // 0 unless the target is in this block
    }
    Tensor buf = Tensor::from_vector({2 * N}, packed, MemCategory::Comm);
    if (!be.device().is_cpu()) buf = buf.to(be.device(), MemCategory::Comm);
    tp->all_reduce(buf);
    const std::vector<float> summed = host_values(buf);
    se.assign(summed.begin(), summed.begin() + N);
    tv.assign(summed.begin() + N, summed.end());
    store(se, r.sumexp);
  }
  double sum = 0.0;
  for (std::size_t i = 0; i < gmax.size(); ++i)
    sum += std::log(static_cast<double>(se[i])) + static_cast<double>(gmax[i]) - static_cast<double>(tv[i]);
  r.loss_sum = sum;
  return r;
}

void vocab_parallel_xent_backward(Backend& be, const Tensor& logits, const Tensor& targets,
                                  const VocabShard& shard, const VocabParallelXent& stats, float weight,
                                  Tensor& dlogits) {
  be.xent_backward(logits, targets.reshape({targets.numel()}), shard.start, shard.valid, stats.max, stats.sumexp,
                   weight, dlogits);
}

}  // namespace pp3d
