// Counter-based RNG: known-answer Philox values, slice property, distribution.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "pp3d/core/rng.h"

using namespace pp3d;

TEST_CASE("philox4x32-10 matches the Random123 known-answer vectors", "[core][rng]") {
  // Random123 kat_vectors: philox4x32 10 rounds.
  auto r = philox4x32({0, 0, 0, 0}, {0, 0});
  REQUIRE(r == std::array<uint32_t, 4>{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u});
  r = philox4x32({0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}, {0xffffffffu, 0xffffffffu});
  REQUIRE(r == std::array<uint32_t, 4>{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu});
}

TEST_CASE("any row or column block equals that block of the full draw", "[core][rng]") {
  const int64_t M = 13, N = 7;
  const uint64_t key = rng_key(1234, "h.0.attn.c_attn.weight");
  std::vector<float> full(M * N);
  rng_normal_block(full.data(), key, 0, M, 0, N, N, 0.0f, 0.02f);
  for (auto [r0, rows, c0, cols] : std::vector<std::array<int64_t, 4>>{{0, 5, 0, 7}, {5, 8, 0, 7}, {0, 13, 3, 4},
                                                                        {6, 1, 2, 1}, {12, 1, 0, 7}}) {
    std::vector<float> part(rows * cols);
    rng_normal_block(part.data(), key, r0, rows, c0, cols, N, 0.0f, 0.02f);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) REQUIRE(part[r * cols + c] == full[(r0 + r) * N + c0 + c]);
  }
  // Tensor form, bf16 storage: the slice is the rounded slice of the full draw.
  Tensor t = Tensor::empty({4, 3}, DType::BF16);
  rng_normal_fill(t, key, 2, 4, N, 0.0f, 0.02f);
  auto v = t.to_vector();
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 3; ++c) REQUIRE(v[r * 3 + c] == bf16_to_f32(f32_to_bf16(full[(2 + r) * N + 4 + c])));
}

TEST_CASE("keys differ by seed and name, normal draws have the right moments", "[core][rng]") {
  REQUIRE(rng_key(1, "wte") != rng_key(2, "wte"));
  REQUIRE(rng_key(1, "wte") != rng_key(1, "wpe"));
  const uint64_t key = rng_key(7, "x");
  const int n = 200000;
  double s = 0, s2 = 0, u = 0;
  for (int i = 0; i < n; ++i) {
    const double z = rng_normal(key, i);
    s += z;
    s2 += z * z;
    const double x = rng_uniform(key, i);
    REQUIRE(x >= 0.0);
    REQUIRE(x < 1.0);
    u += x;
  }
  REQUIRE(std::fabs(s / n) < 0.01);
  REQUIRE(std::fabs(s2 / n - 1.0) < 0.02);
  REQUIRE(std::fabs(u / n - 0.5) < 0.005);
}
