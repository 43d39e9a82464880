// Vocabulary-parallel embedding and cross-entropy (Megatron-style).
//
// The (padded) vocabulary Vp is split into tp equal row blocks: rank r holds
// ids [r*Vp/tp, (r+1)*Vp/tp) of the embedding table / LM head. Only the first
// `valid` of them are real tokens (valid = clamp(vocab_size - start, 0, Vp/tp));
// padding never reaches the loss, so any vocab_size <= Vp gives the serial loss.
//
//  - Embedding: each rank looks up the ids in its block (others contribute 0),
//    then the partial rows are summed over the group: all-reduce, or
//    reduce-scatter to the local token slice with sequence parallelism.
//  - Cross-entropy on local logits [N, Vp/tp]: the row max is all-reduced
//    (Max), the sum of exp rescaled to that max and the target logit are
//    all-reduced (Sum, one call); backward (softmax - one-hot) is local, with no
//    communication.
// `tp` may be nullptr (one rank). Collective: every rank of the group calls
// the same functions in the same order. Not thread-safe.
#pragma once

#include <cstdint>

#include "pp3d/backend/backend.h"
#include "pp3d/comm/communicator.h"

namespace pp3d {

// This rank's block of the vocabulary.
struct VocabShard {
  int64_t start = 0;  // first global id of the block
  int64_t local = 0;  // rows per rank (padded_vocab / tp)
  int64_t valid = 0;  // real (non-padding) ids in the block, in [0, local]
};

// Throws when padded_vocab is not divisible by tp_size or smaller than vocab_size.
VocabShard vocab_shard(int64_t vocab_size, int64_t padded_vocab, int tp_rank, int tp_size);

// ids [B, T] (i32, global ids) and this rank's table block [Vp/tp, C].
// Returns the embeddings [B, T, C] (summed over the group), or this rank's
// tokens [B, T/tp, C] with sequence_parallel.
Tensor vocab_parallel_embedding_forward(Backend& be, Communicator* tp, const Tensor& ids, const Tensor& table,
                                        int64_t vocab_start, bool sequence_parallel);
// dtable (this rank's block) += the rows of dout [B*T, C] (the gradient of the
// FULL output: with sequence parallelism all-gather it first) whose id is in
// the block. No communication.
void vocab_parallel_embedding_backward(Backend& be, const Tensor& ids, const Tensor& dout, Tensor& dtable,
                                       int64_t vocab_start);

// Per-row statistics of the softmax over the whole vocabulary.
struct VocabParallelXent {
  Tensor max;            // [N] global max over the valid logits (backend device)
  Tensor sumexp;         // [N] global sum of exp(logit - max)
  double loss_sum = 0.0;  // sum over the N rows of log(sumexp) + max - logit[target] (double)
};

// logits [N, Vp/tp] (this rank's columns), targets [N] (global ids). The same
// result on every rank of the group.
VocabParallelXent vocab_parallel_xent_forward(Backend& be, Communicator* tp, const Tensor& logits,
                                              const Tensor& targets, const VocabShard& shard);
// dlogits [N, Vp/tp] = weight * (softmax - one_hot) on the valid columns, 0 on
// padding. Local: no communication.
void vocab_parallel_xent_backward(Backend& be, const Tensor& logits, const Tensor& targets,
                                  const VocabShard& shard, const VocabParallelXent& stats, float weight,
                                  Tensor& dlogits);

}  // namespace pp3d
