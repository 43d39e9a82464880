// KV-cached decoding (include/pp3d/model/generate.h) against the full forward
// pass: the logits of every position must equal ActivationCache::logits() of
// Gpt::forward over the same prefix, however the tokens are fed (one at a
// time, all at once, in chunks), for a batch of different sequences.
#include <algorithm>
#include <cmath>
#include <vector>

#include <catch2/catch.hpp>

#include "pp3d/core/error.h"
#include "decode_test_util.h"
#include "pp3d/model/generate.h"

using namespace pp3d;
using decode_test::random_ids;
using decode_test::require_logits_close;

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

// Full-forward logits [B, T, Vp] of ids [B, T].
std::vector<float> full_logits(Gpt& model, const Tensor& ids) {
  ActivationCache cache;
  model.forward(ids, ids, 1.0f, cache, ForwardMode::Train);
  return cache.logits().to_vector();
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
    require_logits_close(decode_test::decode_token_by_token(model, cache, ids, B, T, Vp), want, Vp, V,
                         "one token at a time");
  }
  SECTION("whole prefix at once (prefill), all positions") {
    KvCache cache(model, B, T);
    const Tensor lg = forward_decode(model, ids_t, cache, true);
    REQUIRE(lg.shape() == Shape{B, T, Vp});
    require_logits_close(lg.to_vector(), want, Vp, V, "prefill");
  }
  SECTION("chunks of 5, 1 and 13 tokens; last-position logits") {
    KvCache cache(model, B);
    (void)decode_test::require_chunks_match(model, cache, ids, B, T, want, Vp, V, {5, 1, 13});
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
  require_logits_close(decode_test::decode_token_by_token(model, cache, ids, B, T, Vp), want, Vp, V,
                       "bf16 one token at a time");
}
