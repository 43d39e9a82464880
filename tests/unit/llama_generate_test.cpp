// KV-cached decoding of a Llama (include/pp3d/model/llama_generate.h):
//  - the logits of every position equal the full forward (module_forward) of
//    the same prefix, fed one token at a time, all at once or in chunks, for
//    multi-query (1 kv head), grouped (2) and multi-head (= num_heads) models;
//  - greedy and sampled generation equal a brute-force recompute-from-scratch
//    loop written here;
//  - decoding the PyTorch fixture (tests/fixtures/llama_reference.bin) one
//    token at a time reproduces torch's logits.
// PP3D_REF_VERBOSE=1 prints the largest differences.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "decode_test_util.h"
#include "llama_fixture.h"
#include "pp3d/core/error.h"
#include "pp3d/model/llama_generate.h"
#include "reference_fixture.h"

using namespace pp3d;
using decode_test::random_ids;
using decode_test::require_logits_close;

namespace {

// Non-trivial weights (std 0.2: attention far from uniform), odd vocabulary,
// a small RoPE theta so that positions matter a lot at these lengths.
LlamaConfig decode_config(int64_t kv_heads) {
  LlamaConfig c;
  c.vocab_size = 97;
  c.hidden_size = 32;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = kv_heads;
  c.mlp_hidden_size = 48;
  c.max_seq_len = 24;
  c.rope_theta = 100.0f;
  c.init_std = 0.2f;
  return c;
}

// Full-forward logits [B, T, Vp] of ids [B, T] (Train mode publishes them).
std::vector<float> full_logits(Llama& model, const Tensor& ids) {
  ActivationCache cache;
  (void)module_forward(model, ids, ids, 0.0f, cache, ForwardMode::Train);
  std::vector<float> out = cache.logits().to_vector();
  cache.clear();
  return out;
}

double g_worst = 0.0;  // largest |got - want| / max |logit| seen (reported)

// Tokens by brute force: a full forward over the whole sequence for every new
// token, sampled with sample_token as generate() does.
std::vector<int32_t> reference_tokens(Llama& model, std::vector<int32_t> seq, const GenerateOptions& g) {
  const int64_t Vp = model.config().padded_vocab_size, V = model.config().vocab_size;
  std::vector<int32_t> out;
  for (int64_t i = 0; i < g.max_new_tokens; ++i) {
    const auto T = static_cast<int64_t>(seq.size());
    const std::vector<float> lg = full_logits(model, Tensor::from_vector_i32({1, T}, seq));
    const int32_t tok = sample_token(lg.data() + (T - 1) * Vp, V, g.sampling, static_cast<uint64_t>(i));
    out.push_back(tok);
    seq.push_back(tok);
  }
  return out;
}

}  // namespace

TEST_CASE("llama forward_decode matches the full forward at every position", "[generate][llama]") {
  auto be = make_cpu_backend();
  for (const int64_t kv : {1, 2, 4}) {
    CAPTURE(kv);
    const LlamaConfig cfg = decode_config(kv);
    LlamaOptions opts;
    opts.seed = 7;
    Llama model(cfg, *be, {}, opts);
    const int64_t B = 2, T = 19, Vp = model.config().padded_vocab_size, V = cfg.vocab_size;
    const std::vector<int32_t> ids = random_ids(B * T, V, 11);
    const Tensor ids_t = Tensor::from_vector_i32({B, T}, ids);
    const std::vector<float> want = full_logits(model, ids_t);
    REQUIRE(static_cast<int64_t>(want.size()) == B * T * Vp);

    {  // one token at a time
      LlamaKvCache cache(model, B);
      REQUIRE(cache.local_kv_heads() == kv);  // grouped kv heads cached once
      REQUIRE(cache.keys(1).shape() == Shape{B, kv, cfg.max_seq_len, cfg.hidden_size / cfg.num_heads});
      const std::vector<float> got = decode_test::decode_token_by_token(model, cache, ids, B, T, Vp);
      g_worst = std::max(g_worst, require_logits_close(got, want, Vp, V, "one token at a time"));
    }
    {  // the whole prefix at once (prefill), all positions
      LlamaKvCache cache(model, B, T);
      const Tensor lg = forward_decode(model, ids_t, cache, true);
      REQUIRE(lg.shape() == Shape{B, T, Vp});
      g_worst = std::max(g_worst, require_logits_close(lg.to_vector(), want, Vp, V, "prefill"));
    }
    {  // chunks of 5, 1 and 13 tokens; last-position logits
      LlamaKvCache cache(model, B);
      const double w = decode_test::require_chunks_match(model, cache, ids, B, T, want, Vp, V, {5, 1, 13});
      g_worst = std::max(g_worst, w);
    }
  }
  if (std::getenv("PP3D_REF_VERBOSE") != nullptr)
    std::printf("llama decode: max |cached - full| / max |logit| = %.3e\n", g_worst);
}

TEST_CASE("llama forward_decode: tied head, cache reuse after reset", "[generate][llama]") {
  auto be = make_cpu_backend();
  LlamaConfig cfg = decode_config(2);
  cfg.tied_embeddings = true;
  Llama model(cfg, *be);
  const int64_t T = 9, Vp = model.config().padded_vocab_size;
  const std::vector<int32_t> ids = random_ids(T, cfg.vocab_size, 5);
  const std::vector<float> want = full_logits(model, Tensor::from_vector_i32({1, T}, ids));
  LlamaKvCache cache(model, 1, T);
  (void)forward_decode(model, Tensor::from_vector_i32({1, 3}, random_ids(3, cfg.vocab_size, 99)), cache);
  cache.reset();
  const Tensor lg = forward_decode(model, Tensor::from_vector_i32({1, T}, ids), cache, true);
  require_logits_close(lg.to_vector(), want, Vp, cfg.vocab_size, "tied head after reset");
}

TEST_CASE("llama generation equals recomputing the full forward for every token", "[generate][llama]") {
  auto be = make_cpu_backend();
  for (const int64_t kv : {1, 4}) {
    CAPTURE(kv);
    LlamaOptions opts;
    opts.seed = 5;
    Llama model(decode_config(kv), *be, {}, opts);
    const std::vector<int32_t> prompt = {3, 14, 15, 92, 65};
    GenerateOptions g;
    g.max_new_tokens = 15;
    g.sampling.temperature = 0.0f;
    std::vector<int32_t> streamed;
    g.on_token = [&](int32_t t) { streamed.push_back(t); };
    const std::vector<int32_t> greedy = generate(model, prompt, g);
    CHECK(greedy == reference_tokens(model, prompt, g));
    CHECK(streamed == greedy);
    g.on_token = nullptr;
    CHECK(generate_uncached(model, prompt, g) == greedy);
    // Sampling (temperature, top-k, top-p) draws the same tokens as the brute force.
    g.sampling = {.temperature = 0.9f, .top_k = 20, .seed = 42, .top_p = 0.8f};
    const std::vector<int32_t> sampled = generate(model, prompt, g);
    CHECK(sampled == reference_tokens(model, prompt, g));
    CHECK(sampled != greedy);
    // The context: prompt + max_new_tokens - 1 positions fit exactly, one more does not.
    g.max_new_tokens = 24 - static_cast<int64_t>(prompt.size()) + 1;
    CHECK(static_cast<int64_t>(generate(model, prompt, g).size()) == g.max_new_tokens);
    g.max_new_tokens += 1;
    CHECK_THROWS_WITH(generate(model, prompt, g), Catch::Contains("the model's context is 24 tokens"));
  }
}

TEST_CASE("llama forward_decode reproduces the PyTorch fixture's logits", "[generate][llama][reference]") {
  using namespace pp3d::test;
  const auto fx = read_fixture(std::string(PP3D_SOURCE_DIR) + "/tests/fixtures/llama_reference.bin");
  const LlamaConfig cfg = llama_fixture_config(fx);
  const auto& c = fx.at("config").i;
  const int64_t B = c[6], T = c[7], V = cfg.vocab_size;
  auto be = make_cpu_backend();
  Llama model(cfg, *be);
  set_llama_fixture_weights(model, fx.at("config_f").f[2], fx.at("config_f").f[3]);  // as llama_reference_test
  const auto& tok = fx.at("tokens").i;
  const int64_t Vp = model.config().padded_vocab_size;
  LlamaKvCache cache(model, B);
  std::vector<float> got(static_cast<std::size_t>(B * T * V));
  for (int64_t t = 0; t < T; ++t) {
    std::vector<int32_t> step;
    for (int64_t b = 0; b < B; ++b) step.push_back(tok[static_cast<std::size_t>(b * (T + 1) + t)]);
    const std::vector<float> lg = forward_decode(model, Tensor::from_vector_i32({B, 1}, step), cache).to_vector();
    for (int64_t b = 0; b < B; ++b) std::copy_n(lg.begin() + b * Vp, V, got.begin() + (b * T + t) * V);
  }
  const double err = ref_rel_l2(got, fx.at("logits").f);
  report_margin("llama decode vs torch logits", err);
  CHECK(err <= 1e-6);
}

TEST_CASE("llama forward_decode and LlamaKvCache reject bad input", "[generate][llama]") {
  auto be = make_cpu_backend();
  const LlamaConfig cfg = decode_config(2);
  Llama model(cfg, *be);
  CHECK_THROWS_WITH(LlamaKvCache(model, 1, cfg.max_seq_len + 1), Catch::Contains("max_seq_len 24"));
  CHECK_THROWS_WITH(LlamaKvCache(model, 0), Catch::Contains("batch must be >= 1"));
  LlamaKvCache cache(model, 1, 4);
  CHECK_THROWS_WITH(forward_decode(model, Tensor::from_vector_i32({1, 5}, {1, 2, 3, 4, 5}), cache),
                    Catch::Contains("exceed the cache's 4 positions"));
  CHECK_THROWS_WITH(forward_decode(model, Tensor::from_vector_i32({1, 1}, {97}), cache),
                    Catch::Contains("outside the vocabulary [0, 97)"));
  CHECK_THROWS_WITH(forward_decode(model, Tensor::from_vector_i32({2, 1}, {1, 2}), cache),
                    Catch::Contains("ids must be i32 [1, T_new >= 1]"));
  Llama other(cfg, *be);
  CHECK_THROWS_WITH(forward_decode(other, Tensor::from_vector_i32({1, 1}, {1}), cache),
                    Catch::Contains("another model"));
  LlamaLayout stage;
  stage.end_layer = 1;
  stage.has_head = false;
  Llama first_stage(cfg, *be, stage);
  CHECK_THROWS_WITH(LlamaKvCache(first_stage, 1), Catch::Contains("pipeline stage"));
  GenerateOptions g;
  g.sampling.top_p = 0.0f;
  CHECK_THROWS_WITH(generate(model, {1}, g), Catch::Contains("--top-p must be in (0, 1]"));
}
