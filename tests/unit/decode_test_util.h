// Shared helpers of the KV-cached decoding tests (generate_decode_test.cpp for
// GPT, llama_generate_test.cpp for Llama): deterministic token ids, the logits
// tolerance against the full forward, and decoding a batch token by token or
// in chunks through any model's forward_decode. Header-only.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "pp3d/core/tensor.h"

namespace decode_test {

// n ids in [0, vocab) from a linear congruential generator (seeded, portable).
inline std::vector<int32_t> random_ids(int64_t n, int64_t vocab, uint32_t seed) {
  std::vector<int32_t> ids(static_cast<std::size_t>(n));
  uint32_t s = seed;
  for (auto& id : ids) {
    s = s * 1664525u + 1013904223u;
    id = static_cast<int32_t>((s >> 8) % static_cast<uint32_t>(vocab));
  }
  return ids;
}

// |got - want| <= 1e-5 * (|want| + max |logit| of the position) over the first
// `valid` of every Vp logits: fp32 relative accuracy of a sum of terms as large
// as the largest logit. Returns the largest |got - want| / max |logit| seen.
inline double require_logits_close(const std::vector<float>& got, const std::vector<float>& want, int64_t Vp,
                                   int64_t valid, const std::string& what) {
  REQUIRE(got.size() == want.size());
  double worst = 0.0;
  for (std::size_t p = 0; p < want.size() / static_cast<std::size_t>(Vp); ++p) {
    const float* w = want.data() + p * static_cast<std::size_t>(Vp);
    const float* g = got.data() + p * static_cast<std::size_t>(Vp);
    float scale = 0.0f;
    for (int64_t v = 0; v < valid; ++v) scale = std::max(scale, std::fabs(w[v]));
    REQUIRE(scale > 0.5f);  // the logits are not trivially small
    for (int64_t v = 0; v < valid; ++v) {
      worst = std::max(worst, static_cast<double>(std::fabs(g[v] - w[v]) / scale));
      const double tol = 1e-5 * (std::fabs(w[v]) + scale);
      if (!(std::fabs(g[v] - w[v]) <= tol)) {
        INFO(what << ": position " << p << " token " << v << " got " << g[v] << " want " << w[v]);
        REQUIRE(false);
      }
    }
  }
  return worst;
}

// Feeds ids [B, T] (row-major) to forward_decode(model, ., cache) one position
// at a time and returns the logits of every position, [B, T, Vp].
template <class Model, class Cache>
std::vector<float> decode_token_by_token(Model& model, Cache& cache, const std::vector<int32_t>& ids, int64_t B,
                                         int64_t T, int64_t Vp) {
  std::vector<float> got(static_cast<std::size_t>(B * T * Vp));
  for (int64_t t = 0; t < T; ++t) {
    std::vector<int32_t> step(static_cast<std::size_t>(B));
    for (int64_t b = 0; b < B; ++b) step[static_cast<std::size_t>(b)] = ids[static_cast<std::size_t>(b * T + t)];
    const pp3d::Tensor lg = forward_decode(model, pp3d::Tensor::from_vector_i32({B, 1}, step), cache);
    REQUIRE(lg.shape() == pp3d::Shape{B, 1, Vp});
    REQUIRE(cache.length() == t + 1);
    const std::vector<float> v = lg.to_vector();
    for (int64_t b = 0; b < B; ++b) std::copy_n(v.begin() + b * Vp, Vp, got.begin() + (b * T + t) * Vp);
  }
  return got;
}

// Feeds ids [B, T] in consecutive chunks of the given lengths and checks each
// chunk's last-position logits against want [B, T, Vp]. Returns the worst ratio.
template <class Model, class Cache>
double require_chunks_match(Model& model, Cache& cache, const std::vector<int32_t>& ids, int64_t B, int64_t T,
                            const std::vector<float>& want, int64_t Vp, int64_t valid,
                            std::initializer_list<int64_t> chunks) {
  double worst = 0.0;
  int64_t t0 = 0;
  for (const int64_t n : chunks) {
    std::vector<int32_t> chunk;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = t0; t < t0 + n; ++t) chunk.push_back(ids[static_cast<std::size_t>(b * T + t)]);
    const pp3d::Tensor lg = forward_decode(model, pp3d::Tensor::from_vector_i32({B, n}, chunk), cache);
    t0 += n;
    std::vector<float> want_last;
    for (int64_t b = 0; b < B; ++b)
      want_last.insert(want_last.end(), want.begin() + (b * T + t0 - 1) * Vp, want.begin() + (b * T + t0) * Vp);
    worst = std::max(
        worst, require_logits_close(lg.to_vector(), want_last, Vp, valid, "chunk ending at " + std::to_string(t0)));
  }
  return worst;
}

}  // namespace decode_test
