// Sampling (greedy / temperature / top-k / top-p, counter-based RNG), the
// model-independent generation loop and byte-level (de)tokenisation. See
// include/pp3d/model/sampling.h.
#include "pp3d/model/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "pp3d/core/error.h"
#include "pp3d/core/rng.h"

namespace pp3d {

void SamplingOptions::validate() const {
  PP3D_CHECK(std::isfinite(temperature) && temperature >= 0.0f,
             "--temperature must be a finite number >= 0 (0 = greedy), got {}", temperature);
  PP3D_CHECK(top_k >= 0, "--top-k must be >= 0 (0 = no limit), got {}", top_k);
  PP3D_CHECK(top_p > 0.0f && top_p <= 1.0f, "--top-p must be in (0, 1] (1 = no limit), got {}", top_p);
}

int32_t sample_token(const float* logits, int64_t vocab, const SamplingOptions& o, uint64_t token_index) {
  o.validate();
  PP3D_CHECK(vocab >= 1, "sample_token: vocab must be >= 1, got {}", vocab);
  for (int64_t i = 0; i < vocab; ++i)
    PP3D_CHECK(!std::isnan(logits[i]), "sample_token: logit {} is NaN (diverged or corrupt model?)", i);
  const auto greater = [&](int64_t a, int64_t b) {  // larger logit first, lower id on ties
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  if (o.temperature == 0.0f || o.top_k == 1) {
    int64_t best = 0;
    for (int64_t i = 1; i < vocab; ++i)
      if (greater(i, best)) best = i;
    return static_cast<int32_t>(best);
  }
  // Candidate ids in increasing order: all, or the top_k largest.
  std::vector<int64_t> ids(static_cast<std::size_t>(vocab));
  std::iota(ids.begin(), ids.end(), 0);
  if (o.top_k > 0 && o.top_k < vocab) {
    std::nth_element(ids.begin(), ids.begin() + (o.top_k - 1), ids.end(), greater);
    ids.resize(static_cast<std::size_t>(o.top_k));
    std::sort(ids.begin(), ids.end());
  }
  float mx = logits[ids[0]];
  for (int64_t i : ids) mx = std::max(mx, logits[i]);
  std::vector<double> p(ids.size());
  double sum = 0.0;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    p[i] = std::exp((static_cast<double>(logits[ids[i]]) - mx) / o.temperature);
    sum += p[i];
  }
  if (o.top_p < 1.0f) {
    // The nucleus: most likely first (the logit order, so ties go to the lower id)
    // until the kept mass reaches top_p of the total; the rest gets probability 0.
    std::vector<std::size_t> order(ids.size());
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return greater(ids[a], ids[b]); });
    const double want = static_cast<double>(o.top_p) * sum;
    double kept = 0.0;
    std::size_t n = 0;
    while (n < order.size() && (n == 0 || kept < want)) kept += p[order[n++]];
    for (std::size_t i = n; i < order.size(); ++i) p[order[i]] = 0.0;
    sum = kept;
  }
  const double target = static_cast<double>(rng_uniform(rng_key(o.seed, "sample"), token_index)) * sum;
  double cum = 0.0;
  int64_t last = ids[0];
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (p[i] == 0.0) continue;
    last = ids[i];
    cum += p[i];
    if (cum > target) return static_cast<int32_t>(ids[i]);
  }
  return static_cast<int32_t>(last);  // rounding: u * sum == sum
}

std::vector<int32_t> generate_with(const DecodeStep& step, int64_t vocab, const std::vector<int32_t>& prompt,
                                   const GenerateOptions& o) {
  o.sampling.validate();
  PP3D_CHECK(!prompt.empty(), "generate: the prompt must hold at least one token");
  PP3D_CHECK(o.max_new_tokens >= 0, "--max-new-tokens must be >= 0, got {}", o.max_new_tokens);
  std::vector<int32_t> out;
  if (o.max_new_tokens == 0) return out;
  const auto P = static_cast<int64_t>(prompt.size());
  Tensor logits = step(Tensor::from_vector_i32({1, P}, prompt));
  for (int64_t i = 0; i < o.max_new_tokens; ++i) {
    PP3D_CHECK(logits.device().is_cpu() && logits.dtype() == DType::F32 && logits.numel() >= vocab,
               "generate: the decoder returned {} (want host f32 logits of >= {} columns)", logits.str(), vocab);
    const int32_t tok = sample_token(logits.data<float>(), vocab, o.sampling, static_cast<uint64_t>(i));
    out.push_back(tok);
    if (o.on_token) o.on_token(tok);
    if (tok == o.stop_token || i + 1 == o.max_new_tokens) break;
    logits = step(Tensor::from_vector_i32({1, 1}, {tok}));
  }
  return out;
}

int64_t generation_positions(const std::vector<int32_t>& prompt, const GenerateOptions& o, int64_t context,
                             std::string_view context_limit) {
  PP3D_CHECK(!prompt.empty(), "generate: the prompt must hold at least one token");
  PP3D_CHECK(o.max_new_tokens >= 0, "--max-new-tokens must be >= 0, got {}", o.max_new_tokens);
  const auto P = static_cast<int64_t>(prompt.size());
  const int64_t needed = P + std::max<int64_t>(o.max_new_tokens - 1, 0);
  PP3D_CHECK(needed <= context,
             "the prompt ({} tokens) + --max-new-tokens {} needs {} positions but the model's context is {} tokens "
             "({}); shorten the prompt or lower --max-new-tokens",
             P, o.max_new_tokens, needed, context, context_limit);
  return needed;
}

std::vector<int32_t> encode_bytes(std::string_view text) {
  std::vector<int32_t> ids;
  ids.reserve(text.size());
  for (char c : text) ids.push_back(static_cast<int32_t>(static_cast<unsigned char>(c)));
  return ids;
}

std::string decode_tokens(const std::vector<int32_t>& tokens, int64_t vocab_size) {
  std::string s;
  if (vocab_size == 256) {
    for (int32_t t : tokens) {
      PP3D_CHECK(t >= 0 && t < 256, "decode_tokens: token {} is not a byte", t);
      s.push_back(static_cast<char>(static_cast<unsigned char>(t)));
    }
    return s;
  }
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    if (i > 0) s += ' ';
    s += std::to_string(tokens[i]);
  }
  return s;
}

}  // namespace pp3d
