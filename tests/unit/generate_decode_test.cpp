// KV-cached decoding (include/pp3d/model/generate.h) against the full forward
// pass: the logits of every position must equal ActivationCache::logits() of
// Gpt::forward over the same prefix, however the tokens are fed (one at a
// time, all at once, in chunks), for a batch of different sequences.
#include <algorithm>
#include <cmath>
#include <vector>

#include <catch2/catch.hpp>

#include "pp3d/core/error.h"
#include "pp3d/model/generate.h"

using namespace pp3d;

namespace {

// Non-trivial weights (std 0.2, so attention is far from uniform), vocab not a multiple of 64.
GptConfig decode_config() {
  GptConfig c;
  c.vocab_size = 100;
  c.max_seq_len = 24;
  c.num_layers = 2;
  c.num_heads = 4;
  c.hidden_size = 32;
  c.init_std = 0.2f;
  c.wpe_init_std = 0.2f;
  return c;
}

std::vector<int32_t> random_ids(int64_t n, int64_t vocab, uint32_t seed) {
  std::vector<int32_t> ids(static_cast<std::size_t>(n));
  uint32_t s = seed;
  for (auto& id : ids) {
    s = s * 1664525u + 1013904223u;
    id = static_cast<int32_t>((s >> 8) % static_cast<uint32_t>(vocab));
  }
  return ids;
}

// Full-forward logits [B, T, Vp] of ids [B, T].
std::vector<float> full_logits(Gpt& model, const Tensor& ids) {
  ActivationCache cache;
  model.forward(ids, ids, 1.0f, cache, ForwardMode::Train);
  return cache.logits().to_vector();
}

// |got - want| <= 1e-5 * (|want| + max |logit| of the position): fp32 relative
// accuracy of a sum of terms as large as the largest logit.
void require_logits_close(const std::vector<float>& got, const std::vector<float>& want, int64_t Vp,
                          int64_t valid, const std::string& what) {
  REQUIRE(got.size() == want.size());
  for (std::size_t p = 0; p < want.size() / static_cast<std::size_t>(Vp); ++p) {
    const float* w = want.data() + p * static_cast<std::size_t>(Vp);
    const float* g = got.data() + p * static_cast<std::size_t>(Vp);
    float scale = 0.0f;
    for (int64_t v = 0; v < valid; ++v) scale = std::max(scale, std::fabs(w[v]));
    REQUIRE(scale > 0.5f);  // the logits are not trivially small
    for (int64_t v = 0; v < valid; ++v) {
      const double tol = 1e-5 * (std::fabs(w[v]) + scale);
      if (!(std::fabs(g[v] - w[v]) <= tol)) {
        INFO(what << ": position " << p << " token " << v << " got " << g[v] << " want " << w[v]);
        REQUIRE(false);
      }
    }
  }
}

}  // namespace

TEST_CASE("forward_decode matches the full forward at every position", "[generate]") {
  auto be = make_cpu_backend();
  const GptConfig cfg = decode_config();
  Gpt model(cfg, *be, {}, {.seed = 7});
  const int64_t B = 2, T = 19, Vp = cfg.padded_vocab(), V = cfg.vocab_size;
  const std::vector<int32_t> ids = random_ids(B * T, V, 11);
  const Tensor ids_t = Tensor::from_vector_i32({B, T}, ids);
  const std::vector<float> want = full_logits(model, ids_t);
  REQUIRE(static_cast<int64_t>(want.size()) == B * T * Vp);

  SECTION("one token at a time") {
    KvCache cache(model, B);
    std::vector<float> got(want.size());
    for (int64_t t = 0; t < T; ++t) {
      std::vector<int32_t> step(static_cast<std::size_t>(B));
      for (int64_t b = 0; b < B; ++b) step[static_cast<std::size_t>(b)] = ids[static_cast<std::size_t>(b * T + t)];
      const Tensor lg = forward_decode(model, Tensor::from_vector_i32({B, 1}, step), cache);
      REQUIRE(lg.shape() == Shape{B, 1, Vp});
      REQUIRE(cache.length() == t + 1);
      const std::vector<float> v = lg.to_vector();
      for (int64_t b = 0; b < B; ++b)
        std::copy_n(v.begin() + b * Vp, Vp, got.begin() + (b * T + t) * Vp);
    }
    require_logits_close(got, want, Vp, V, "one token at a time");
  }
  SECTION("whole prefix at once (prefill), all positions") {
    KvCache cache(model, B, T);
    const Tensor lg = forward_decode(model, ids_t, cache, true);
    REQUIRE(lg.shape() == Shape{B, T, Vp});
    require_logits_close(lg.to_vector(), want, Vp, V, "prefill");
  }
  SECTION("chunks of 5, 1 and 13 tokens; last-position logits") {
    KvCache cache(model, B);
    int64_t t0 = 0;
    for (int64_t n : {5, 1, 13}) {
      std::vector<int32_t> chunk;
      for (int64_t b = 0; b < B; ++b)
        for (int64_t t = t0; t < t0 + n; ++t) chunk.push_back(ids[static_cast<std::size_t>(b * T + t)]);
      const Tensor lg = forward_decode(model, Tensor::from_vector_i32({B, n}, chunk), cache);
      t0 += n;
      std::vector<float> want_last, got = lg.to_vector();
      for (int64_t b = 0; b < B; ++b)
        want_last.insert(want_last.end(), want.begin() + (b * T + t0 - 1) * Vp, want.begin() + (b * T + t0) * Vp);
      require_logits_close(got, want_last, Vp, V, "chunk ending at " + std::to_string(t0));
    }
  }
}

TEST_CASE("forward_decode with an untied head and the same cache reused after reset", "[generate]") {
  auto be = make_cpu_backend();
  GptConfig cfg = decode_config();
  cfg.tied_embeddings = false;
  Gpt model(cfg, *be, {}, {.seed = 3});
  const int64_t T = 9, Vp = cfg.padded_vocab();
  const std::vector<int32_t> ids = random_ids(T, cfg.vocab_size, 5);
  const std::vector<float> want = full_logits(model, Tensor::from_vector_i32({1, T}, ids));
  KvCache cache(model, 1, T);
  (void)forward_decode(model, Tensor::from_vector_i32({1, 3}, random_ids(3, cfg.vocab_size, 99)), cache);
  cache.reset();
  const Tensor lg = forward_decode(model, Tensor::from_vector_i32({1, T}, ids), cache, true);
  require_logits_close(lg.to_vector(), want, Vp, cfg.vocab_size, "untied head");
}

TEST_CASE("forward_decode and KvCache reject bad input", "[generate]") {
  auto be = make_cpu_backend();
  const GptConfig cfg = decode_config();
  Gpt model(cfg, *be);
  CHECK_THROWS_WITH(KvCache(model, 1, cfg.max_seq_len + 1), Catch::Contains("max_seq_len 24"));
  CHECK_THROWS_WITH(KvCache(model, 0), Catch::Contains("batch must be >= 1"));
  KvCache cache(model, 1, 4);
  CHECK_THROWS_WITH(forward_decode(model, Tensor::from_vector_i32({1, 5}, {1, 2, 3, 4, 5}), cache),
                    Catch::Contains("exceed the cache's 4 positions"));
  CHECK_THROWS_WITH(forward_decode(model, Tensor::from_vector_i32({1, 1}, {100}), cache),
                    Catch::Contains("outside the vocabulary [0, 100)"));
  CHECK_THROWS_WITH(forward_decode(model, Tensor::from_vector_i32({2, 1}, {1, 2}), cache),
                    Catch::Contains("ids must be i32 [1, T_new >= 1]"));
  Gpt other(cfg, *be);
  CHECK_THROWS_WITH(forward_decode(other, Tensor::from_vector_i32({1, 1}, {1}), cache),
                    Catch::Contains("another model"));
  GptLayout stage;
  stage.last_layer = 1;
  stage.has_head = false;
  Gpt first_stage(cfg, *be, stage);
  CHECK_THROWS_WITH(KvCache(first_stage, 1), Catch::Contains("pipeline stage"));
}

TEST_CASE("forward_decode of a bf16 model matches its full forward", "[generate]") {
  // 16-bit parameters: LayerNorm / embedding values are read through value_as_f32,
  // so decoding computes what Gpt::forward computes for the same rounded weights.
  auto be = make_cpu_backend();
  const GptConfig cfg = decode_config();
  Gpt model(cfg, *be, {}, {.seed = 5, .param_dtype = DType::BF16});
  REQUIRE(model.find_parameter("ln_f.weight")->value.dtype() == DType::BF16);
  REQUIRE(model.find_parameter("wte")->value.dtype() == DType::BF16);
  const int64_t B = 2, T = 9, Vp = cfg.padded_vocab(), V = cfg.vocab_size;
  const std::vector<int32_t> ids = random_ids(B * T, V, 23);
  const std::vector<float> want = full_logits(model, Tensor::from_vector_i32({B, T}, ids));
  KvCache cache(model, B);
  std::vector<float> got(want.size());
  for (int64_t t = 0; t < T; ++t) {
    std::vector<int32_t> step(static_cast<std::size_t>(B));
    for (int64_t b = 0; b < B; ++b) step[static_cast<std::size_t>(b)] = ids[static_cast<std::size_t>(b * T + t)];
    const std::vector<float> v = forward_decode(model, Tensor::from_vector_i32({B, 1}, step), cache).to_vector();
    for (int64_t b = 0; b < B; ++b) std::copy_n(v.begin() + b * Vp, Vp, got.begin() + (b * T + t) * Vp);
  }
  require_logits_close(got, want, Vp, V, "bf16 one token at a time");
}
