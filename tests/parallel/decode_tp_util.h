// Shared checks of the tensor-parallel decoding tests (generate_tp_test.cpp for
// GPT, llama_generate_tp_test.cpp for Llama): a fixed batch of token ids, the
// decoded logits of every position through any model's forward_decode, their
// comparison with the serial full forward, and generation equal to the serial
// model's. Failures are recorded with TP_EXPECT (tp_test_util.h).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "parallel/tp_test_util.h"
#include "pp3d/model/sampling.h"

namespace pp3d::tptest {

// ids [B, T] row-major: id i = (37 i + 11) mod vocab.
inline std::vector<int32_t> decode_ids(int64_t B, int64_t T, int64_t vocab) {
  std::vector<int32_t> ids(static_cast<std::size_t>(B * T));
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>((i * 37 + 11) % vocab);
  return ids;
}

// Feeds ids [B, T] in consecutive chunks of the given lengths (all positions)
// and returns the decoded logits [B, T, Vp].
template <class Model, class Cache>
std::vector<float> decode_in_chunks(Model& model, Cache& cache, const std::vector<int32_t>& ids, int64_t B, int64_t T,
                                    int64_t Vp, std::initializer_list<int64_t> chunks) {
  std::vector<float> got(static_cast<std::size_t>(B * T * Vp));
  int64_t t0 = 0;
  for (const int64_t n : chunks) {
    std::vector<int32_t> chunk;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = t0; t < t0 + n; ++t) chunk.push_back(ids[static_cast<std::size_t>(b * T + t)]);
    const std::vector<float> lg =
        forward_decode(model, Tensor::from_vector_i32({B, n}, chunk), cache, true).to_vector();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t j = 0; j < n; ++j)
        std::copy_n(lg.begin() + (b * n + j) * Vp, Vp, got.begin() + (b * T + t0 + j) * Vp);
    t0 += n;
  }
  return got;
}

// |got - want| <= 1e-5 * (|want| + max |logit| of the position) over the first
// `valid` of every Vp logits; records the first mismatch.
inline void expect_logits_match(const std::vector<float>& got, const std::vector<float>& want, int64_t Vp,
                                int64_t valid, const std::string& what) {
  TP_EXPECT(got.size() == want.size(), "{}: {} logits, want {}", what, got.size(), want.size());
  for (int64_t p = 0; p < static_cast<int64_t>(want.size()) / Vp; ++p) {
    double scale = 0.0;
    for (int64_t v = 0; v < valid; ++v) scale = std::max(scale, std::fabs(static_cast<double>(want[p * Vp + v])));
    for (int64_t v = 0; v < valid; ++v) {
      const double w = want[p * Vp + v], g = got[p * Vp + v];
      if (!(std::fabs(g - w) <= 1e-5 * (std::fabs(w) + scale))) {
        TP_EXPECT(false, "{}: position {} token {}: decoded {} full forward {}", what, p, v, g, w);
        return;
      }
    }
  }
}

// Greedy and sampled (temperature 1, top_p `sampled_top_p`) generation of 12
// tokens: the tensor-parallel model's tokens equal the serial model's.
template <class Model>
void expect_same_generation(Model& serial, Model& model, float sampled_top_p, const std::string& what) {
  GenerateOptions g;
  g.max_new_tokens = 12;
  for (float temp : {0.0f, 1.0f}) {
    g.sampling.temperature = temp;
    g.sampling.top_p = temp > 0 ? sampled_top_p : 1.0f;
    const std::vector<int32_t> prompt = {3, 1, 4, 1, 5};
    const std::vector<int32_t> a = generate(serial, prompt, g), b = generate(model, prompt, g);
    TP_EXPECT(a == b, "{}: temperature {}: TP generation differs from the serial model's", what, temp);
  }
}

}  // namespace pp3d::tptest
