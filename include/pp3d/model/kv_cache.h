// Model-independent pieces of incremental decoding, shared by GPT's KvCache
// (pp3d/model/generate.h) and Llama's LlamaKvCache (pp3d/model/llama_generate.h):
// the per-layer key/value storage with bounds-checked accessors and the
// argument checks of a cache and of forward_decode. Each model keeps its own
// cache class (model pointer, head count, pipeline-stage check).
//
// Ownership: a KvStore owns its tensors. Thread-safety: none.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "pp3d/core/tensor.h"

namespace pp3d {

class Backend;

// One K and one V tensor [batch, heads, max_len, head_dim] f32 per layer, zeroed,
// on `device` (MemCategory::Activations). `owner` ("KvCache", "LlamaKvCache")
// prefixes the accessors' errors.
class KvStore {
 public:
  KvStore() = default;
  KvStore(std::string owner, int64_t layers, int64_t batch, int64_t heads, int64_t max_len, int64_t head_dim,
          Device device);

  int64_t layers() const { return static_cast<int64_t>(k_.size()); }
  // Layer `layer`'s keys / values; throws naming the owner when layer is outside [0, layers()).
  const Tensor& keys(int64_t layer) const { return at(k_, layer); }
  const Tensor& values(int64_t layer) const { return at(v_, layer); }

 private:
  const Tensor& at(const std::vector<Tensor>& kv, int64_t layer) const;
  std::string owner_;
  std::vector<Tensor> k_, v_;
};

// Checks a cache's batch (>= 1) and max_len (0: the model's max_seq_len) and
// returns the resolved max_len in [1, max_seq_len]. `note` (may be empty)
// follows the max_len error, e.g. "(learned positions)".
int64_t kv_cache_max_len(std::string_view owner, int64_t batch, int64_t max_len, int64_t max_seq_len,
                         std::string_view note = {});

// forward_decode's checks of `ids`: i32 [batch, T_new >= 1], `cached` + T_new
// <= cache_max_len (`context`: the model's max_seq_len, for the message) and
// every id in [0, vocab). Returns ids on the host (ids itself when it is).
Tensor check_decode_ids(const Tensor& ids, int64_t batch, int64_t cached, int64_t cache_max_len, int64_t context,
                        int64_t vocab);

// The rows of the new tokens' hidden states x [B*Tn, C] that the head reads:
// x itself when all_positions (or Tn == 1), else the last new token of each
// sequence copied into a new f32 activation [B, C].
Tensor decode_head_rows(Backend& be, const Tensor& x, int64_t B, int64_t Tn, bool all_positions);

}  // namespace pp3d
