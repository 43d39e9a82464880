// Incremental decoding of a Llama with a grouped-query key/value cache
// (include/pp3d/model/llama_generate.h). Public headers only, like llama.cpp.
#include "pp3d/model/llama_generate.h"

#include <algorithm>
#include <cmath>
#include <string>

#include <fmt/format.h>

#include "pp3d/core/error.h"
#include "pp3d/parallel/tensor_parallel.h"
#include "pp3d/parallel/vocab_parallel.h"

namespace pp3d {

namespace {

Tensor act(Backend& be, const Shape& shape) {
  return Tensor::empty(shape, DType::F32, be.device(), MemCategory::Activations);
}

// Flat element range [begin, begin + n) of t (a view).
Tensor span(const Tensor& t, int64_t begin, int64_t n) { return t.reshape({-1}).slice(begin, begin + n); }

Parameter& param(Llama& m, const std::string& name) {
  Parameter* p = m.find_parameter(name);
  PP3D_CHECK(p != nullptr, "forward_decode: the Llama holds no parameter '{}'", name);
  return *p;
}

struct BlockParams {
  Parameter *input_norm, *q, *k, *v, *o, *post_norm, *gate, *up, *down;
};

BlockParams block_params(Llama& m, int64_t l) {
  auto p = [&](const char* suffix) { return &param(m, fmt::format("model.layers.{}.{}", l, suffix)); };
  return {p("input_layernorm.weight"), p("self_attn.q_proj.weight"),          p("self_attn.k_proj.weight"),
          p("self_attn.v_proj.weight"), p("self_attn.o_proj.weight"),        p("post_attention_layernorm.weight"),
          p("mlp.gate_proj.weight"),   p("mlp.up_proj.weight"),              p("mlp.down_proj.weight")};
}

// rmsnorm(x) * weight over rows of x [N, C].
Tensor rmsnorm(Backend& be, const Tensor& x, const Parameter& w, float eps) {
  const int64_t C = w.value.numel(), rows = x.numel() / C;
  Tensor y = act(be, {rows, C}), rstd = act(be, {rows});
  be.rmsnorm_forward(x.reshape({rows, C}), value_as_f32(be, w.value), y, rstd, eps);
  return y;
}

// What one block's attention over the cache needs.
struct Dims {
  int64_t B, Tn, t0, Hq, Hkv, D, Tmax;
  int64_t group() const { return Hq / Hkv; }
  // Scores of token (b, j) at position t0 + j: Hq rows of t0 + j + 1 keys,
  // stored densely one token after the other (row length varies by token).
  int64_t scores_offset(int64_t b, int64_t j) const {
    const int64_t per_b = Hq * (Tn * (t0 + 1) + Tn * (Tn - 1) / 2);  // sum over j of Hq * (t0 + j + 1)
    return b * per_b + Hq * (j * (t0 + 1) + j * (j - 1) / 2);
  }
  int64_t scores_size() const { return scores_offset(B, 0); }
};

// Copies the new tokens' k and v ([B, Tn, Hkv, D], k already rotated) into the
// cache positions [t0, t0 + Tn).
void append_kv(Backend& be, const Tensor& k, const Tensor& v, const Tensor& K, const Tensor& V, const Dims& d) {
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t j = 0; j < d.Tn; ++j)
      for (int64_t g = 0; g < d.Hkv; ++g) {
        const int64_t src = ((b * d.Tn + j) * d.Hkv + g) * d.D, dst = ((b * d.Hkv + g) * d.Tmax + d.t0 + j) * d.D;
        Tensor kd = span(K, dst, d.D), vd = span(V, dst, d.D);
        be.copy(span(k, src, d.D), kd);
        be.copy(span(v, src, d.D), vd);
      }
}

// Softmax of every row (lengths as in Dims::scores_offset), on the host; a
// device tensor makes one round trip.
void softmax_rows(Backend& be, Tensor& scores, const Dims& d) {
  const bool host = be.device().is_cpu();
  if (!host) be.synchronize();
  Tensor h = host ? scores : scores.to(Device::cpu());
  float* row = h.data<float>();
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t j = 0; j < d.Tn; ++j) {
      const int64_t n = d.t0 + j + 1;
      for (int64_t r = 0; r < d.Hq; ++r, row += n) {
        float mx = row[0];
        for (int64_t i = 1; i < n; ++i) mx = std::max(mx, row[i]);
        double sum = 0.0;
        for (int64_t i = 0; i < n; ++i) {
          row[i] = std::exp(row[i] - mx);
          sum += row[i];
        }
        const auto inv = static_cast<float>(1.0 / sum);
        for (int64_t i = 0; i < n; ++i) row[i] *= inv;
      }
    }
  if (!host) scores.copy_from(h);
}

// Causal grouped-query attention of the new tokens' q [B, Tn, Hq, D] (rotated)
// over the cache (their own keys included). Query head h reads kv head
// h / (Hq / Hkv) (HF repeat_kv), so the G query heads of kv head g are rows
// [g*G, (g+1)*G) of a token's q: one GEMM per token, batched over kv heads.
// Returns [B, Tn, Hq*D].
Tensor cached_attention(Backend& be, const Tensor& q, const Tensor& K, const Tensor& V, const Dims& d) {
  const int64_t G = d.group(), D = d.D, per_b = d.Hkv * d.Tmax * D;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  Tensor scores = act(be, {d.scores_size()});
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t j = 0; j < d.Tn; ++j) {
      const int64_t n = d.t0 + j + 1;
      const Tensor qt = span(q, (b * d.Tn + j) * d.Hq * D, d.Hq * D);
      Tensor s = span(scores, d.scores_offset(b, j), d.Hq * n);
      be.gemm(false, true, G, n, D, scale, qt, span(K, b * per_b, per_b), 0.0f, s, d.Hkv, G * D, d.Tmax * D, G * n);
    }
  softmax_rows(be, scores, d);
  Tensor att = act(be, {d.B, d.Tn, d.Hq * D});
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t j = 0; j < d.Tn; ++j) {
      const int64_t n = d.t0 + j + 1;
      const Tensor p = span(scores, d.scores_offset(b, j), d.Hq * n);
      Tensor out = span(att, (b * d.Tn + j) * d.Hq * D, d.Hq * D);
      be.gemm(false, false, G, D, n, 1.0f, p, span(V, b * per_b, per_b), 0.0f, out, d.Hkv, G * n, d.Tmax * D, G * D);
    }
  return att;
}

// One block on the new tokens x [B*Tn, C]; returns the block output [B*Tn, C].
Tensor decode_block(Backend& be, Communicator* tp, const LlamaConfig& cfg, const BlockParams& p, const Tensor& x,
                    const Tensor& K, const Tensor& V, const Dims& d) {
  const int64_t N = d.B * d.Tn, C = cfg.hidden_size;
  const Tensor h1 = rmsnorm(be, x, *p.input_norm, cfg.norm_eps).reshape({d.B, d.Tn, C});
  Tensor q = ColumnParallelLinear(*p.q, nullptr).forward(be, tp, h1).reshape({d.B, d.Tn, d.Hq, d.D});
  Tensor k = ColumnParallelLinear(*p.k, nullptr).forward(be, tp, h1).reshape({d.B, d.Tn, d.Hkv, d.D});
  const Tensor v = ColumnParallelLinear(*p.v, nullptr).forward(be, tp, h1);
  be.rope_forward(q, q, d.t0, cfg.rope_theta);  // absolute positions t0, t0 + 1, ...
  be.rope_forward(k, k, d.t0, cfg.rope_theta);
  append_kv(be, k, v, K, V, d);
  const Tensor att = cached_attention(be, q, K, V, d);
  Tensor x2 = RowParallelLinear(*p.o, nullptr).forward(be, tp, att).reshape({N, C});
  be.add(x2, x, x2);  // residual
  const Tensor h2 = rmsnorm(be, x2, *p.post_norm, cfg.norm_eps).reshape({d.B, d.Tn, C});
  const Tensor gate = ColumnParallelLinear(*p.gate, nullptr).forward(be, tp, h2);
  const Tensor up = ColumnParallelLinear(*p.up, nullptr).forward(be, tp, h2);
  Tensor a = act(be, gate.shape());
  be.swiglu_forward(gate, up, a);
  Tensor y = RowParallelLinear(*p.down, nullptr).forward(be, tp, a).reshape({N, C});
  be.add(y, x2, y);  // residual
  return y;
}

}  // namespace

LlamaKvCache::LlamaKvCache(Llama& model, int64_t batch, int64_t max_len) : model_(&model), batch_(batch) {
  const LlamaConfig& c = model.config();
  const LlamaLayout& l = model.layout();
  PP3D_CHECK(l.has_embedding && l.has_head && l.first_layer == 0 && l.end_layer == c.num_layers,
             "decoding needs the whole Llama (embedding, layers [0, {}) and head) on every tensor-parallel rank; "
             "this instance is a pipeline stage (layers [{}, {}), embedding {}, head {})",
             c.num_layers, l.first_layer, l.end_layer, l.has_embedding, l.has_head);
  max_len_ = kv_cache_max_len("LlamaKvCache", batch, max_len, c.max_seq_len);
  kv_heads_ = c.num_kv_heads / l.tp_size;
  head_dim_ = c.head_dim();
  kv_ = KvStore("LlamaKvCache", c.num_layers, batch_, kv_heads_, max_len_, head_dim_, model.backend().device());
}

Tensor forward_decode(Llama& model, const Tensor& ids_in, LlamaKvCache& cache, bool all_positions) {
  PP3D_CHECK(&cache.model() == &model, "forward_decode: the LlamaKvCache was made for another model");
  Backend& be = model.backend();
  const LlamaConfig& cfg = model.config();
  const LlamaLayout& lay = model.layout();
  Communicator* tp = lay.tp_size > 1 ? lay.tp_group : nullptr;
  PP3D_CHECK(lay.tp_size == 1 || (tp != nullptr && tp->size() == lay.tp_size),
             "forward_decode: tp_size {} needs a tp_group of that size (LlamaLayout::tensor_parallel(grid))",
             lay.tp_size);
  const Tensor host_ids =
      check_decode_ids(ids_in, cache.batch(), cache.length(), cache.max_len(), cfg.max_seq_len, cfg.vocab_size);
  const int64_t B = cache.batch(), Tn = ids_in.size(1), t0 = cache.length(), N = B * Tn, C = cfg.hidden_size;
  const Tensor ids = be.device().is_cpu() ? host_ids : host_ids.to(be.device(), MemCategory::Activations);
  const Dims d{B, Tn, t0, cfg.num_heads / lay.tp_size, cache.local_kv_heads(), cache.head_dim(), cache.max_len()};

  const VocabShard shard = vocab_shard(cfg.vocab_size, cfg.padded_vocab_size, lay.tp_rank, lay.tp_size);
  const Tensor embed = value_as_f32(be, param(model, "model.embed_tokens.weight").value);
  Tensor x = vocab_parallel_embedding_forward(be, tp, ids, embed, shard.start, false).reshape({N, C});
  for (int64_t l = 0; l < cfg.num_layers; ++l)
    x = decode_block(be, tp, cfg, block_params(model, l), x, cache.keys(l), cache.values(l), d);
  cache.length_ = t0 + Tn;

  // Head on every new token, or on the last one of each sequence.
  const int64_t Tout = all_positions ? Tn : 1, rows = B * Tout;
  const Tensor xh = decode_head_rows(be, x, B, Tn, all_positions);
  const Tensor h = rmsnorm(be, xh.reshape({rows, C}), param(model, "model.norm.weight"), cfg.norm_eps);
  Parameter& head = param(model, cfg.tied_embeddings ? "model.embed_tokens.weight" : "lm_head.weight");
  const Tensor logits = ColumnParallelLinear(head, nullptr, {true, false}).forward(be, tp, h.reshape({B, Tout, C}));
  if (be.device().is_cpu()) return logits;
  be.synchronize();
  return logits.to(Device::cpu());
}

std::vector<int32_t> generate(Llama& model, const std::vector<int32_t>& prompt, const GenerateOptions& o) {
  o.sampling.validate();
  const int64_t needed = generation_positions(prompt, o, model.config().max_seq_len, "max_seq_len");
  if (o.max_new_tokens == 0) return {};
  LlamaKvCache cache(model, 1, needed);
  return generate_with([&](const Tensor& ids) { return forward_decode(model, ids, cache); },
                       model.config().vocab_size, prompt, o);
}

std::vector<int32_t> generate_uncached(Llama& model, const std::vector<int32_t>& prompt, const GenerateOptions& o) {
  o.sampling.validate();
  (void)generation_positions(prompt, o, model.config().max_seq_len, "max_seq_len");
  PP3D_CHECK(model.layout().tp_size == 1, "generate_uncached: tp_size must be 1, got {}", model.layout().tp_size);
  Backend& be = model.backend();
  std::vector<int32_t> seq;
  auto step = [&](const Tensor& ids) {  // ids: the prompt, then each sampled token
    seq.insert(seq.end(), ids.data<int32_t>(), ids.data<int32_t>() + ids.numel());
    const auto T = static_cast<int64_t>(seq.size());
    Tensor all = Tensor::from_vector_i32({1, T}, seq);
    if (!be.device().is_cpu()) all = all.to(be.device(), MemCategory::Activations);
    ActivationCache ac;  // Train mode publishes the logits; the ids double as (unused) targets
    (void)module_forward(model, all, all, 0.0f, ac, ForwardMode::Train);
    const Tensor logits = ac.logits();
    const int64_t Vp = logits.size(-1);
    Tensor last = logits.reshape({T, Vp}).slice(T - 1, T).clone();
    ac.clear();
    return last.device().is_cpu() ? last : last.to(Device::cpu());
  };
  return generate_with(step, model.config().vocab_size, prompt, o);
}

}  // namespace pp3d
