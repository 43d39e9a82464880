// Shared key/value storage and decode checks (include/pp3d/model/kv_cache.h).
#include "pp3d/model/kv_cache.h"

#include <utility>

#include "pp3d/backend/backend.h"
#include "pp3d/core/error.h"

namespace pp3d {

KvStore::KvStore(std::string owner, int64_t layers, int64_t batch, int64_t heads, int64_t max_len, int64_t head_dim,
                 Device device)
    : owner_(std::move(owner)) {
  for (int64_t i = 0; i < layers; ++i) {
    k_.push_back(Tensor::zeros({batch, heads, max_len, head_dim}, DType::F32, device, MemCategory::Activations));
    v_.push_back(Tensor::zeros({batch, heads, max_len, head_dim}, DType::F32, device, MemCategory::Activations));
  }
}

const Tensor& KvStore::at(const std::vector<Tensor>& kv, int64_t layer) const {
  PP3D_CHECK(layer >= 0 && layer < static_cast<int64_t>(kv.size()), "{}: layer {} out of [0, {})", owner_, layer,
             kv.size());
  return kv[static_cast<std::size_t>(layer)];
}

int64_t kv_cache_max_len(std::string_view owner, int64_t batch, int64_t max_len, int64_t max_seq_len,
                         std::string_view note) {
  PP3D_CHECK(batch >= 1, "{}: batch must be >= 1, got {}", owner, batch);
  const int64_t n = max_len == 0 ? max_seq_len : max_len;
  PP3D_CHECK(n >= 1 && n <= max_seq_len, "{}: max_len {} must be in [1, the model's max_seq_len {}]{}{}", owner, n,
             max_seq_len, note.empty() ? "" : " ", note);
  return n;
}

Tensor check_decode_ids(const Tensor& ids, int64_t batch, int64_t cached, int64_t cache_max_len, int64_t context,
                        int64_t vocab) {
  PP3D_CHECK(ids.defined() && ids.dim() == 2 && ids.dtype() == DType::I32 && ids.size(0) == batch && ids.size(1) >= 1,
             "forward_decode: ids must be i32 [{}, T_new >= 1], got {}", batch,
             ids.defined() ? ids.str() : std::string("undefined"));
  const int64_t Tn = ids.size(1);
  PP3D_CHECK(cached + Tn <= cache_max_len,
             "forward_decode: {} cached + {} new tokens exceed the cache's {} positions (model context {})", cached,
             Tn, cache_max_len, context);
  const Tensor host = ids.device().is_cpu() ? ids : ids.to(Device::cpu());
  const int32_t* id = host.data<int32_t>();
  for (int64_t i = 0; i < batch * Tn; ++i)
    PP3D_CHECK(id[i] >= 0 && id[i] < vocab, "forward_decode: token id {} at [{}, {}] is outside the vocabulary [0, {})",
               id[i], i / Tn, i % Tn, vocab);
  return host;
}

Tensor decode_head_rows(Backend& be, const Tensor& x, int64_t B, int64_t Tn, bool all_positions) {
  if (all_positions || Tn == 1) return x;
  Tensor last = Tensor::empty({B, x.size(-1)}, DType::F32, be.device(), MemCategory::Activations);
  for (int64_t b = 0; b < B; ++b) {
    Tensor dst = last.slice(b, b + 1);
    be.copy(x.slice(b * Tn + Tn - 1, b * Tn + Tn), dst);
  }
  return last;
}

}  // namespace pp3d
