#include "pp3d/core/rng.h"

#include <cmath>
#include <vector>

namespace pp3d {

namespace {
constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;

inline void mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t p = static_cast<uint64_t>(a) * b;
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
}
}  // namespace

std::array<uint32_t, 4> philox4x32(std::array<uint32_t, 4> c, std::array<uint32_t, 2> k) {
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo(kM0, c[0], hi0, lo0);
    mulhilo(kM1, c[2], hi1, lo1);
    c = {hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0};
    k[0] += kW0;
    k[1] += kW1;
  }
  return c;
}

uint64_t rng_key(uint64_t seed, std::string_view name) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char ch : name) {
    h ^= ch;
    h *= 1099511628211ull;
  }
  // splitmix64 finaliser of (hash ^ seed-mix) so nearby seeds give unrelated keys
  uint64_t z = h ^ (seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

namespace {
inline std::array<uint32_t, 4> block(uint64_t key, uint64_t index) {
  return philox4x32({static_cast<uint32_t>(index), static_cast<uint32_t>(index >> 32), 0u, 0u},
                    {static_cast<uint32_t>(key), static_cast<uint32_t>(key >> 32)});
}
}  // namespace

float rng_uniform(uint64_t key, uint64_t index) {
  const auto r = block(key, index);
  return static_cast<float>(static_cast<double>(r[0] >> 8) * (1.0 / 16777216.0));
}

float rng_normal(uint64_t key, uint64_t index) {
  const auto r = block(key, index);
  const double u1 = (static_cast<double>(r[0]) + 1.0) * (1.0 / 4294967296.0);  // (0, 1]
  const double u2 = static_cast<double>(r[1]) * (1.0 / 4294967296.0);          // [0, 1)
  return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
}

void rng_normal_block(float* out, uint64_t key, int64_t row0, int64_t rows, int64_t col0, int64_t cols,
                      int64_t full_cols, float mean, float std) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      out[r * cols + c] =
          mean + std * rng_normal(key, static_cast<uint64_t>((row0 + r) * full_cols + (col0 + c)));
}

void rng_uniform_block(float* out, uint64_t key, int64_t row0, int64_t rows, int64_t col0, int64_t cols,
                       int64_t full_cols, float lo, float hi) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      out[r * cols + c] =
          lo + (hi - lo) * rng_uniform(key, static_cast<uint64_t>((row0 + r) * full_cols + (col0 + c)));
}

void rng_normal_fill(Tensor& t, uint64_t key, int64_t row0, int64_t col0, int64_t full_cols, float mean,
                     float std) {
  PP3D_CHECK(t.device().is_cpu(), "rng_normal_fill on {}: generate on the host, then copy", t.str());
  const int64_t cols = t.dim() == 0 ? 1 : t.size(-1);
  const int64_t rows = cols == 0 ? 0 : t.numel() / cols;
  PP3D_CHECK(col0 + cols <= full_cols, "block cols [{}, {}) exceed full width {}", col0, col0 + cols, full_cols);
  std::vector<float> v(static_cast<std::size_t>(t.numel()));
  rng_normal_block(v.data(), key, row0, rows, col0, cols, full_cols, mean, std);
  t.fill_from(v);
}

}  // namespace pp3d
