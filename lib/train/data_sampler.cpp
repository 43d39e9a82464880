// Sampling building blocks: the lazy epoch permutation and the blend schedule.
#include <cmath>

#include "pp3d/core/error.h"
#include "pp3d/core/rng.h"
#include "pp3d/train/data.h"

namespace pp3d {

Sampler parse_sampler(const std::string& name) {
  if (name == "auto") return Sampler::Auto;
  if (name == "epoch") return Sampler::Epoch;
  if (name == "random") return Sampler::Random;
  PP3D_FAIL("unknown --sampler '{}': use epoch (shuffled epochs, without replacement), random (independent random "
            "windows, with replacement) or auto (random for the embedded corpus, epoch otherwise)", name);
}

const char* sampler_name(Sampler s) {
  switch (s) {
    case Sampler::Auto: return "auto";
    case Sampler::Epoch: return "epoch";
    case Sampler::Random: return "random";
  }
  return "?";
}

uint64_t permute_index(uint64_t i, uint64_t n, uint64_t key) {
  PP3D_CHECK(i < n, "permute_index: index {} is outside [0, {})", i, n);
  // A balanced Feistel network is a bijection of [0, 2^bits); walking the cycle
  // until the value falls below n makes it one of [0, n). 2^bits < 4n, so the
  // walk is short on average.
  int bits = 2;
  while (bits < 64 && (uint64_t{1} << bits) < n) bits += 2;
  const int half = bits / 2;
  const uint64_t mask = (uint64_t{1} << half) - 1;
  const std::array<uint32_t, 2> k{static_cast<uint32_t>(key), static_cast<uint32_t>(key >> 32)};
  uint64_t x = i;
  do {
    uint64_t left = x >> half, right = x & mask;
    for (uint32_t round = 0; round < 6; ++round) {
      const auto f = philox4x32({static_cast<uint32_t>(right), static_cast<uint32_t>(right >> 32), round, 0x5eed}, k);
      const uint64_t next = left ^ (((static_cast<uint64_t>(f[0]) << 32) | f[1]) & mask);
      left = right;
      right = next;
    }
    x = (left << half) | right;
  } while (x >= n);
  return x;
}

std::vector<uint64_t> blend_fractions(const std::vector<BlendPart>& parts) {
  PP3D_CHECK(!parts.empty(), "a blend needs at least one dataset");
  std::vector<uint64_t> f;
  double rest = 0.0;
  for (const BlendPart& p : parts) rest += p.weight;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    const double q = i + 1 == parts.size() ? 1.0 : parts[i].weight / rest;
    const auto num = static_cast<uint64_t>(std::llround(q * 4294967296.0));
    PP3D_CHECK(num >= 1, "blend weight {} of '{}' is too small (below 2^-32 of the rest)", parts[i].weight,
               parts[i].spec);
    f.push_back(std::min<uint64_t>(num, uint64_t{1} << 32));
    rest -= parts[i].weight;
  }
  return f;
}

namespace {

uint64_t scaled_floor(uint64_t fraction, uint64_t x) {
  return static_cast<uint64_t>((static_cast<unsigned __int128>(fraction) * x) >> 32);
}

}  // namespace

BlendSlot blend_slot(const std::vector<uint64_t>& fractions, uint64_t g) {
  uint64_t x = g;  // index in the stream the parts before this one left
  for (std::size_t i = 0; i < fractions.size(); ++i) {
    const uint64_t before = scaled_floor(fractions[i], x);
    if (scaled_floor(fractions[i], x + 1) > before) return {static_cast<int>(i), static_cast<int64_t>(before)};
    x -= before;
  }
  PP3D_FAIL("blend_slot: the last blend fraction must be 2^32");
}

std::vector<int64_t> blend_counts(const std::vector<uint64_t>& fractions, uint64_t g) {
  std::vector<int64_t> counts;
  uint64_t x = g;
  for (uint64_t f : fractions) {
    const uint64_t c = scaled_floor(f, x);
    counts.push_back(static_cast<int64_t>(c));
    x -= c;
  }
  return counts;
}

}  // namespace pp3d
