// Sampling and the generation loop (include/pp3d/model/generate.h): greedy
// generation equals the argmax of a full forward pass recomputed over the
// growing sequence (no cache); determinism; top-k = 1 is greedy; seeds;
// the sampled frequencies follow softmax(logits / temperature) restricted to
// the top k, and top-p keeps the nucleus; byte-level (de)tokenisation.
#include <algorithm>
#include <cmath>
#include <map>
#include <vector>

#include <catch2/catch.hpp>

#include "pp3d/core/error.h"
#include "pp3d/model/generate.h"

using namespace pp3d;

namespace {

GptConfig sample_config() {
  GptConfig c;
  c.vocab_size = 256;
  c.max_seq_len = 32;
  c.num_layers = 2;
  c.num_heads = 2;
  c.hidden_size = 16;
  c.init_std = 0.3f;  // peaked, position-dependent distributions
  return c;
}

// Greedy continuation by brute force: a full forward over the whole sequence for every new token.
std::vector<int32_t> greedy_reference(Gpt& model, std::vector<int32_t> seq, int64_t n) {
  const int64_t Vp = model.config().padded_vocab(), V = model.config().vocab_size;
  std::vector<int32_t> out;
  for (int64_t i = 0; i < n; ++i) {
    const auto T = static_cast<int64_t>(seq.size());
    ActivationCache cache;
    const Tensor ids = Tensor::from_vector_i32({1, T}, seq);
    model.forward(ids, ids, 1.0f, cache, ForwardMode::Train);
    const std::vector<float> lg = cache.logits().to_vector();
    const float* last = lg.data() + (T - 1) * Vp;
    const auto best = static_cast<int32_t>(std::max_element(last, last + V) - last);  // first max = lowest id
    out.push_back(best);
    seq.push_back(best);
  }
  return out;
}

}  // namespace

TEST_CASE("greedy generation equals the argmax of full forward passes", "[generate]") {
  auto be = make_cpu_backend();
  Gpt model(sample_config(), *be, {}, {.seed = 5});
  const std::vector<int32_t> prompt = encode_bytes("the red ");
  GenerateOptions g;
  g.max_new_tokens = 20;
  g.sampling.temperature = 0.0f;
  std::vector<int32_t> streamed;
  g.on_token = [&](int32_t t) { streamed.push_back(t); };
  const std::vector<int32_t> got = generate(model, prompt, g);
  CHECK(got == greedy_reference(model, prompt, 20));
  CHECK(streamed == got);
  // Deterministic, and top-k 1 at temperature 1 is greedy.
  CHECK(generate(model, prompt, g) == got);
  g.sampling.temperature = 1.0f;
  g.sampling.top_k = 1;
  CHECK(generate(model, prompt, g) == got);
  // The prompt + max_new_tokens - 1 fill the context exactly.
  g.max_new_tokens = 32 - static_cast<int64_t>(prompt.size()) + 1;
  CHECK(static_cast<int64_t>(generate(model, prompt, g).size()) == g.max_new_tokens);
  g.max_new_tokens += 1;
  CHECK_THROWS_WITH(generate(model, prompt, g), Catch::Contains("the model's context is 32 tokens"));
}

TEST_CASE("sampling at temperature 1: same seed same sample, other seed other sample", "[generate]") {
  auto be = make_cpu_backend();
  Gpt model(sample_config(), *be, {}, {.seed = 5});
  const std::vector<int32_t> prompt = encode_bytes("alice");
  GenerateOptions g;
  g.max_new_tokens = 24;
  g.sampling.temperature = 1.0f;
  g.sampling.seed = 42;
  const std::vector<int32_t> a = generate(model, prompt, g);
  CHECK(generate(model, prompt, g) == a);
  g.sampling.seed = 43;
  const std::vector<int32_t> b = generate(model, prompt, g);
  CHECK(b != a);
  g.sampling.temperature = 0.0f;
  CHECK(generate(model, prompt, g) != a);  // sampling is not greedy here
  g.stop_token = a[0];
  g.sampling.temperature = 1.0f;
  g.sampling.seed = 42;
  CHECK(generate(model, prompt, g) == std::vector<int32_t>{a[0]});  // stops after the stop token
}

TEST_CASE("sample_token follows softmax(logits / T) over the top k", "[generate]") {
  const std::vector<float> logits = {1.0f, 3.0f, 0.5f, 3.0f, -2.0f, 2.0f};
  const auto V = static_cast<int64_t>(logits.size());
  SamplingOptions o;
  o.temperature = 0.0f;
  CHECK(sample_token(logits.data(), V, o, 0) == 1);  // ties: the lower id
  for (int64_t k : {0, 3}) {
    for (float temp : {1.0f, 0.5f}) {
      o.temperature = temp;
      o.top_k = k;
      o.seed = 9;
      // The expected probabilities, computed independently.
      std::vector<double> p(static_cast<std::size_t>(V));
      std::vector<float> sorted = logits;
      std::sort(sorted.begin(), sorted.end(), std::greater<>());
      const float kth = k > 0 ? sorted[static_cast<std::size_t>(k - 1)] : -1e30f;
      double sum = 0.0;
      for (int64_t i = 0; i < V; ++i) {
        // top 3 of {3, 3, 2, 1, ...} = ids 1, 3, 5 (no tie at the boundary here)
        p[static_cast<std::size_t>(i)] = logits[static_cast<std::size_t>(i)] >= kth ? std::exp(logits[i] / temp) : 0;
        sum += p[static_cast<std::size_t>(i)];
      }
      const int n = 20000;
      std::vector<int> count(static_cast<std::size_t>(V), 0);
      for (int i = 0; i < n; ++i) ++count[static_cast<std::size_t>(sample_token(logits.data(), V, o, i))];
      for (int64_t i = 0; i < V; ++i) {
        const double want = p[static_cast<std::size_t>(i)] / sum, got = count[static_cast<std::size_t>(i)] / double(n);
        INFO("k " << k << " T " << temp << " token " << i << " freq " << got << " want " << want);
        CHECK(std::fabs(got - want) <= 4.0 * std::sqrt(want * (1 - want) / n) + 1e-12);  // 4 sigma
      }
    }
  }
  // Pure function of (logits, options, index).
  o.top_k = 0;
  o.temperature = 1.0f;
  CHECK(sample_token(logits.data(), V, o, 17) == sample_token(logits.data(), V, o, 17));
  o.temperature = -1.0f;
  CHECK_THROWS_WITH(sample_token(logits.data(), V, o, 0), Catch::Contains("--temperature must be"));
  o.temperature = 1.0f;
  o.top_k = -1;
  CHECK_THROWS_WITH(sample_token(logits.data(), V, o, 0), Catch::Contains("--top-k must be >= 0"));
  o.top_k = 0;
  const std::vector<float> bad = {0.0f, std::nanf("")};
  CHECK_THROWS_WITH(sample_token(bad.data(), 2, o, 0), Catch::Contains("logit 1 is NaN"));
}

TEST_CASE("sample_token with top-p keeps the smallest most likely set reaching p", "[generate]") {
  // probabilities at temperature 1 (sorted): ids 1 and 3 (e^3 each), 5 (e^2), 0 (e^1), 2 (e^0.5), 4 (e^-2).
  const std::vector<float> logits = {1.0f, 3.0f, 0.5f, 3.0f, -2.0f, 2.0f};
  const auto V = static_cast<int64_t>(logits.size());
  double total = 0.0;
  for (float l : logits) total += std::exp(static_cast<double>(l));
  const double e3 = std::exp(3.0), e2 = std::exp(2.0);
  REQUIRE(2 * e3 < 0.8 * total);  // so top-p 0.8 needs ids 1, 3 and 5 ...
  REQUIRE(2 * e3 + e2 >= 0.8 * total);
  REQUIRE(e3 >= 0.3 * total);  // ... and top-p 0.3 id 1 alone (the lower id of the tie)
  SamplingOptions o;
  o.seed = 4;
  o.top_p = 0.3f;
  for (int i = 0; i < 200; ++i) REQUIRE(sample_token(logits.data(), V, o, i) == 1);
  o.top_p = 0.8f;
  const int n = 20000;
  std::vector<int> count(static_cast<std::size_t>(V), 0);
  for (int i = 0; i < n; ++i) ++count[static_cast<std::size_t>(sample_token(logits.data(), V, o, i))];
  const std::vector<double> want = {0, e3 / (2 * e3 + e2), 0, e3 / (2 * e3 + e2), 0, e2 / (2 * e3 + e2)};
  for (int64_t i = 0; i < V; ++i) {
    const double w = want[static_cast<std::size_t>(i)], got = count[static_cast<std::size_t>(i)] / double(n);
    INFO("token " << i << " freq " << got << " want " << w);
    CHECK(std::fabs(got - w) <= 4.0 * std::sqrt(w * (1 - w) / n) + 1e-12);  // 4 sigma
  }
  // top-p 1 is no limit: the same draws as without it.
  SamplingOptions all;
  all.seed = 4;
  o.top_p = 1.0f;
  for (int i = 0; i < 100; ++i) REQUIRE(sample_token(logits.data(), V, o, i) == sample_token(logits.data(), V, all, i));
  for (float bad : {0.0f, -0.5f, 1.5f, std::nanf("")}) {
    o.top_p = bad;
    CHECK_THROWS_WITH(sample_token(logits.data(), V, o, 0), Catch::Contains("--top-p must be in (0, 1]"));
  }
}

TEST_CASE("byte-level tokenisation round-trips, other vocabularies print ids", "[generate]") {
  const std::string text = "alice has 7 apples.\n\xff";
  const std::vector<int32_t> ids = encode_bytes(text);
  REQUIRE(ids.size() == text.size());
  CHECK(ids.back() == 255);
  CHECK(decode_tokens(ids, 256) == text);
  CHECK(decode_tokens({50256, 464, 3}, 50257) == "50256 464 3");
  CHECK_THROWS_WITH(decode_tokens({300}, 256), Catch::Contains("token 300 is not a byte"));
}
