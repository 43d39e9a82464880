// Text generation with a Llama: incremental decoding with a key/value cache.
// Sampling and the generation loop are GPT's, model independent
// (pp3d/model/sampling.h).
//
// LlamaKvCache holds, for every transformer layer, the keys and values of the
// tokens decoded so far: K and V [B, Hkv_local, T_max, D] f32 on the model's
// device (MemCategory::Activations). Grouped-query attention caches each kv
// head once (Hkv, not Hq: a multi-query model caches 1/Hq of what multi-head
// would). Keys are cached after RoPE, rotated at their absolute position.
//
// forward_decode() runs only the NEW tokens through the model:
//   h = rmsnorm(x); q, k = rope(h Wq^T, h Wk^T) at positions t0, t0+1, ...; v = h Wv^T
//   K[:, :, t0:t0+Tn], V[:, :, t0:t0+Tn] = k, v
//   per new token (position p) and kv head g, for the G = Hq/Hkv query heads of g:
//     scores[G, 0..p] = scale * q[G, :] . K[g, 0..p, :]^T     (Backend::gemm, batched over kv heads)
//     probs = softmax(scores)                                  (host; one round trip per layer on CUDA)
//     att[G, :]       = probs . V[g, 0..p, :]                  (Backend::gemm, batched over kv heads)
//   then o_proj, the residual, rmsnorm, SwiGLU MLP and the head as in Llama's forward.
// It reads the model's parameters (Llama::find_parameter) and uses Backend
// ops only, so it runs on the CPU and CUDA backends.
//
// Tensor parallelism: a Llama with tp_size > 1 decodes collectively over its
// tp_group (heads split by kv head, o/down all-reduced, the logits
// all-gathered), so every rank gets the full logits (tests/parallel/
// llama_generate_tp_test.cpp). Sequence parallelism
// does not change the parameters and is not used while decoding. Pipeline
// stages (a Llama without the embedding, the head or every layer) are rejected.
//
// Ownership: a LlamaKvCache owns its tensors and references (does not own)
// the model. Thread-safety: none; one decoding session per thread.
#pragma once

#include <cstdint>
#include <vector>

#include "pp3d/model/llama.h"
#include "pp3d/model/kv_cache.h"
#include "pp3d/model/sampling.h"

namespace pp3d {

class LlamaKvCache {
 public:
  // Room for `max_len` tokens of `batch` sequences (max_len 0: the model's
  // max_seq_len). Preconditions (checked): the model holds the embedding, the
  // head and every layer; 1 <= max_len <= max_seq_len.
  LlamaKvCache(Llama& model, int64_t batch, int64_t max_len = 0);

  Llama& model() const { return *model_; }
  int64_t batch() const { return batch_; }
  int64_t max_len() const { return max_len_; }
  // Tokens cached per sequence = the position of the next token.
  int64_t length() const { return length_; }
  int64_t local_kv_heads() const { return kv_heads_; }
  int64_t head_dim() const { return head_dim_; }
  // Forget the cached tokens (the storage is kept and overwritten).
  void reset() { length_ = 0; }

  // Layer l's keys (after RoPE) / values [B, Hkv_local, max_len, D]; positions >= length() are stale.
  const Tensor& keys(int64_t layer) const { return kv_.keys(layer); }
  const Tensor& values(int64_t layer) const { return kv_.values(layer); }

 private:
  friend Tensor forward_decode(Llama&, const Tensor&, LlamaKvCache&, bool);
  Llama* model_;
  int64_t batch_, max_len_, kv_heads_, head_dim_;
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
Tensor forward_decode(Llama& model, const Tensor& ids, LlamaKvCache& cache, bool all_positions = false);

// Autoregressive generation for one sequence (generate_with over a
// LlamaKvCache): prefills `prompt` (non-empty, ids < vocab_size), then decodes
// one token at a time; new token i is sampled with token_index i. Returns the
// new tokens only. Throws when prompt + max_new_tokens - 1 exceeds the model's
// max_seq_len. Collective over the tp_group.
std::vector<int32_t> generate(Llama& model, const std::vector<int32_t>& prompt, const GenerateOptions& options);

// The same tokens without a cache: a full forward over the whole sequence for
// every new token (O(T^2) per token). The reference generate() is tested
// against and the baseline of its speed-up; not for production use.
std::vector<int32_t> generate_uncached(Llama& model, const std::vector<int32_t>& prompt,
                                       const GenerateOptions& options);

}  // namespace pp3d
