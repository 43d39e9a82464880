// Incremental decoding with a key/value cache (include/pp3d/model/generate.h).
//
// Per layer and new token (b, j) at position p = t0 + j:
//   scores[h, 0..p] = scale * q[b, j, h, :] . K[b, h, 0..p, :]   (Backend::gemm, batch over heads)
//   probs = softmax(scores) on the host (one round trip per layer for a device model)
//   att[b, j, h, :] = probs[h, 0..p] . V[b, h, 0..p, :]          (Backend::gemm, batch over heads)
// The rest of the block is the model's own forward (LayerNorm, column/row-parallel
// Linears, GELU, residuals) applied to the new tokens only.
#include <cmath>
#include <string>

#include <fmt/format.h>

#include "model/gpt_internal.h"
#include "pp3d/core/error.h"
#include "pp3d/model/generate.h"
#include "pp3d/parallel/tensor_parallel.h"
#include "pp3d/parallel/vocab_parallel.h"

namespace pp3d {

using detail::new_activation;

namespace {

Parameter& param(Gpt& m, const std::string& name) {
  Parameter* p = m.find_parameter(name);
  PP3D_CHECK(p != nullptr, "forward_decode: the model holds no parameter '{}'", name);
  return *p;
}

struct LayerParams {
  Parameter *ln1_w, *ln1_b, *qkv_w, *qkv_b, *attn_proj_w, *attn_proj_b;
  Parameter *ln2_w, *ln2_b, *fc_w, *fc_b, *mlp_proj_w, *mlp_proj_b;
};

LayerParams layer_params(Gpt& m, int64_t l) {
  auto p = [&](const char* suffix) { return &param(m, fmt::format("h.{}.{}", l, suffix)); };
  return {p("ln_1.weight"),      p("ln_1.bias"),      p("attn.c_attn.weight"), p("attn.c_attn.bias"),
          p("attn.c_proj.weight"), p("attn.c_proj.bias"), p("ln_2.weight"),      p("ln_2.bias"),
          p("mlp.c_fc.weight"),  p("mlp.c_fc.bias"),  p("mlp.c_proj.weight"), p("mlp.c_proj.bias")};
}

// Flat element range [begin, begin + n) of t (a view).
Tensor span(const Tensor& t, int64_t begin, int64_t n) { return t.reshape({-1}).slice(begin, begin + n); }

// Row-wise softmax of scores [rows, L] over the first valid(row) columns (the
// rest set to 0), on the host; a device tensor makes one round trip.
template <typename ValidFn>
void softmax_rows(Backend& be, Tensor& scores, int64_t rows, int64_t L, ValidFn valid) {
  const bool host = be.device().is_cpu();
  if (!host) be.synchronize();
  Tensor h = host ? scores : scores.to(Device::cpu());
  float* s = h.data<float>();
  for (int64_t r = 0; r < rows; ++r) {
    float* row = s + r * L;
    const int64_t n = valid(r);
    float mx = row[0];
    for (int64_t i = 1; i < n; ++i) mx = std::max(mx, row[i]);
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      row[i] = std::exp(row[i] - mx);
      sum += row[i];
    }
    const auto inv = static_cast<float>(1.0 / sum);
    for (int64_t i = 0; i < n; ++i) row[i] *= inv;
    for (int64_t i = n; i < L; ++i) row[i] = 0.0f;
  }
  if (!host) scores.copy_from(h);
}

// Causal attention of the Tn new tokens (qkv [B, Tn, 3, H, D]) over the cache
// after their keys/values were appended at [t0, t0 + Tn). Returns [B, Tn, H*D].
Tensor cached_attention(Backend& be, const Tensor& qkv, const Tensor& K, const Tensor& V, int64_t B, int64_t Tn,
                        int64_t t0, int64_t H, int64_t D, int64_t Tmax) {
  const int64_t L = t0 + Tn;  // keys visible to the last new token
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const int64_t per_b = H * Tmax * D;
  Tensor scores = new_activation(be, {B * Tn * H, L});
  for (int64_t b = 0; b < B; ++b) {
    const Tensor Kb = span(K, b * per_b, per_b);
    for (int64_t j = 0; j < Tn; ++j) {
      const Tensor q = span(qkv, (b * Tn + j) * 3 * H * D, H * D);  // this token's q of every head
      Tensor c = span(scores, (b * Tn + j) * H * L, H * L);
      be.gemm(false, true, 1, t0 + j + 1, D, scale, q, Kb, 0.0f, c, H, D, Tmax * D, L);
    }
  }
  softmax_rows(be, scores, B * Tn * H, L, [&](int64_t r) { return t0 + (r / H) % Tn + 1; });
  Tensor att = new_activation(be, {B, Tn, H * D});
  for (int64_t b = 0; b < B; ++b) {
    const Tensor Vb = span(V, b * per_b, per_b);
    for (int64_t j = 0; j < Tn; ++j) {
      const Tensor p = span(scores, (b * Tn + j) * H * L, H * L);
      Tensor out = span(att, (b * Tn + j) * H * D, H * D);
      be.gemm(false, false, 1, D, t0 + j + 1, 1.0f, p, Vb, 0.0f, out, H, L, Tmax * D, D);
    }
  }
  return att;
}

// Copies the k and v of the new tokens (qkv [B, Tn, 3, H, D]) into the cache
// positions [t0, t0 + Tn).
void append_kv(Backend& be, const Tensor& qkv, const Tensor& K, const Tensor& V, int64_t B, int64_t Tn, int64_t t0,
               int64_t H, int64_t D, int64_t Tmax) {
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < Tn; ++j)
      for (int64_t h = 0; h < H; ++h) {
        const int64_t src = (b * Tn + j) * 3 * H * D + h * D, dst = ((b * H + h) * Tmax + t0 + j) * D;
        Tensor kd = span(K, dst, D), vd = span(V, dst, D);
        be.copy(span(qkv, src + H * D, D), kd);
        be.copy(span(qkv, src + 2 * H * D, D), vd);
      }
}

// One block on the new tokens x [B*Tn, C]; returns the block output [B*Tn, C].
Tensor decode_block(Backend& be, Communicator* tp, const LayerParams& p, const Tensor& x, const Tensor& K,
                    const Tensor& V, int64_t B, int64_t Tn, int64_t t0, int64_t H, int64_t D, int64_t Tmax,
                    float eps) {
  const int64_t N = B * Tn, C = x.size(-1);
  Tensor ln = new_activation(be, {N, C}), mean = new_activation(be, {N}), rstd = new_activation(be, {N});
  be.layernorm_forward(x, value_as_f32(be, p.ln1_w->value), value_as_f32(be, p.ln1_b->value), ln, mean, rstd, eps);
  const Tensor qkv = ColumnParallelLinear(*p.qkv_w, p.qkv_b).forward(be, tp, ln.reshape({B, Tn, C}));
  append_kv(be, qkv, K, V, B, Tn, t0, H, D, Tmax);
  const Tensor att = cached_attention(be, qkv, K, V, B, Tn, t0, H, D, Tmax);
  Tensor x2 = RowParallelLinear(*p.attn_proj_w, p.attn_proj_b).forward(be, tp, att).reshape({N, C});
  be.add(x, x2, x2);
  be.layernorm_forward(x2, value_as_f32(be, p.ln2_w->value), value_as_f32(be, p.ln2_b->value), ln, mean, rstd,
                        eps);
  const Tensor fc = ColumnParallelLinear(*p.fc_w, p.fc_b).forward(be, tp, ln.reshape({B, Tn, C}));
  Tensor gelu = new_activation(be, fc.shape());
  be.gelu_forward(fc, gelu);
  Tensor out = RowParallelLinear(*p.mlp_proj_w, p.mlp_proj_b).forward(be, tp, gelu).reshape({N, C});
  be.add(x2, out, out);
  return out;
}

}  // namespace

KvCache::KvCache(Gpt& model, int64_t batch, int64_t max_len) : model_(&model), batch_(batch) {
  const GptConfig& c = model.config();
  const GptLayout& l = model.layout();
  PP3D_CHECK(l.has_embedding && l.has_head && l.first_layer == 0 && l.end_layer(c) == c.num_layers,
             "decoding needs the whole model (embedding, layers [0, {}) and head) on every tensor-parallel rank; "
             "this instance is a pipeline stage (layers [{}, {}), embedding {}, head {})",
             c.num_layers, l.first_layer, l.end_layer(c), l.has_embedding, l.has_head);
  max_len_ = kv_cache_max_len("KvCache", batch, max_len, c.max_seq_len, "(learned positions)");
  heads_ = c.num_heads / l.tp_size;
  head_dim_ = c.head_dim();
  kv_ = KvStore("KvCache", c.num_layers, batch_, heads_, max_len_, head_dim_, model.backend().device());
}

Tensor forward_decode(Gpt& model, const Tensor& ids_in, KvCache& cache, bool all_positions) {
  PP3D_CHECK(&cache.model() == &model, "forward_decode: the KvCache was made for another model");
  Backend& be = model.backend();
  const GptConfig& cfg = model.config();
  const GptLayout& lay = model.layout();
  Communicator* tp = model.tp_group();
  PP3D_CHECK(lay.tp_size == 1 || (tp != nullptr && tp->size() == lay.tp_size),
             "forward_decode: tp_size {} needs a tp_group of that size", lay.tp_size);
  (void)check_decode_ids(ids_in, cache.batch(), cache.length(), cache.max_len(), cfg.max_seq_len, cfg.vocab_size);
  const int64_t B = cache.batch(), Tn = ids_in.size(1), t0 = cache.length(), N = B * Tn, C = cfg.hidden_size;
  const Tensor ids = detail::on_device(be, ids_in);
  const int64_t H = cache.local_heads(), D = cache.head_dim(), Tmax = cache.max_len();

  const VocabShard shard = vocab_shard(cfg.vocab_size, cfg.padded_vocab(), lay.tp_rank, lay.tp_size);
  // 16-bit models: the embedding and LayerNorm ops read f32 only (value_as_f32: a per-use f32 copy).
  Tensor x = vocab_parallel_embedding_forward(be, tp, ids, value_as_f32(be, param(model, "wte").value), shard.start,
                                              false)
                 .reshape({N, C});
  be.embedding_forward(detail::positions(be, B, t0, Tn), value_as_f32(be, param(model, "wpe").value), x, 0, true);
  for (int64_t l = 0; l < cfg.num_layers; ++l)
    x = decode_block(be, tp, layer_params(model, l), x, cache.keys(l), cache.values(l), B, Tn, t0, H, D, Tmax,
                     cfg.ln_eps);
  cache.length_ = t0 + Tn;

  // Head on every new token, or on the last one of each sequence.
  const int64_t Tout = all_positions ? Tn : 1, rows = B * Tout;
  const Tensor xh = decode_head_rows(be, x, B, Tn, all_positions);
  Tensor lnf = new_activation(be, {rows, C}), mean = new_activation(be, {rows}), rstd = new_activation(be, {rows});
  be.layernorm_forward(xh.reshape({rows, C}), value_as_f32(be, param(model, "ln_f.weight").value),
                       value_as_f32(be, param(model, "ln_f.bias").value), lnf, mean, rstd, cfg.ln_eps);
  Parameter& head = param(model, cfg.tied_embeddings ? "wte" : "lm_head.weight");
  const Tensor logits = ColumnParallelLinear(head, nullptr, {true, false}).forward(be, tp, lnf.reshape({B, Tout, C}));
  if (be.device().is_cpu()) return logits;
  be.synchronize();
  return logits.to(Device::cpu());
}

}  // namespace pp3d
