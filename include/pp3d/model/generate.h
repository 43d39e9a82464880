// Text generation with a GPT: incremental decoding with a key/value cache.
// Sampling, the generation loop and byte-level (de)tokenisation are model
// independent (pp3d/model/sampling.h, included here); Llama has its own cache
// (pp3d/model/llama_generate.h).
//
// KvCache holds, for every transformer layer of a Gpt, the keys and values of
// the tokens decoded so far: K and V [B, H_local, T_max, D] f32 on the model's
// device (MemCategory::Activations), H_local = this tensor-parallel rank's heads.
// forward_decode() runs only the NEW tokens through the model: their q, k, v
// are computed, k and v appended to the cache, and each new query attends to
// the cached keys of its sequence (one query row per token, Backend::gemm over
// the cache, softmax on the host) — the prefix is never recomputed. It uses the
// model's own parameters (Gpt::find_parameter) and Backend ops, so the same
// code runs on the CPU and CUDA backends (CUDA: the scores make one host round
// trip per layer; correct but not tuned).
//
// Tensor parallelism: a Gpt with tp_size > 1 decodes collectively over its
// tp_group (heads split, the row-parallel projections all-reduced, the logits
// all-gathered), so every rank gets the full logits and samples the same token.
// Sequence parallelism does not change the parameters and is not used while
// decoding. Pipeline stages (a Gpt without the embedding or the head, or with
// a subset of the layers) are rejected.
//
// Ownership: a KvCache owns its tensors and references (does not own) the
// model it was made for. Thread-safety: none; one decoding session per thread.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "pp3d/model/gpt.h"
#include "pp3d/model/kv_cache.h"
#include "pp3d/model/sampling.h"  // SamplingOptions, GenerateOptions, sample_token, encode_bytes

namespace pp3d {

class KvCache {
 public:
  // Room for `max_len` tokens of `batch` sequences (max_len 0: the model's
  // max_seq_len). Preconditions (checked): the model holds the embedding, the
  // head and every layer; 1 <= max_len <= max_seq_len (learned positions).
  KvCache(Gpt& model, int64_t batch, int64_t max_len = 0);

  Gpt& model() const { return *model_; }
  int64_t batch() const { return batch_; }
  int64_t max_len() const { return max_len_; }
  // Tokens cached per sequence = the position of the next token.
  int64_t length() const { return length_; }
  int64_t local_heads() const { return heads_; }
  int64_t head_dim() const { return head_dim_; }
  // Forget the cached tokens (the storage is kept and overwritten).
  void reset() { length_ = 0; }

  // Layer l's keys / values [B, H_local, max_len, D]; positions >= length() are stale.
  const Tensor& keys(int64_t layer) const { return kv_.keys(layer); }
  const Tensor& values(int64_t layer) const { return kv_.values(layer); }

 private:
  friend Tensor forward_decode(Gpt&, const Tensor&, KvCache&, bool);
  Gpt* model_;
  int64_t batch_, max_len_, heads_, head_dim_;
  int64_t length_ = 0;
  KvStore kv_;
};

// Feeds `ids` [B, T_new] (i32, host or device; B == cache.batch()) at positions
// [cache.length(), cache.length() + T_new) of each sequence, appends their keys
// and values to the cache and returns the logits as a HOST f32 tensor over the
// padded vocabulary: [B, T_new, Vp] when all_positions, else [B, 1, Vp] for
// the last new token only (columns >= vocab_size are padding). T_new may be
// the whole prompt (prefill) or 1 (one decoding step). Throws when the cache
// would overflow. Collective over the model's tp_group when tp_size > 1.
Tensor forward_decode(Gpt& model, const Tensor& ids, KvCache& cache, bool all_positions = false);

// Autoregressive generation for one sequence: prefills `prompt` (non-empty,
// ids < vocab_size) in one forward_decode call, then decodes one token at a
// time; new token i is sampled with token_index i. Returns the new tokens
// only. Throws when prompt + max_new_tokens exceeds the model's max_seq_len.
// Collective over the tp_group (every rank passes the same arguments and gets
// the same tokens).
std::vector<int32_t> generate(Gpt& model, const std::vector<int32_t>& prompt, const GenerateOptions& options);

}  // namespace pp3d
