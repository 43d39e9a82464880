// The embedded synthetic corpus: templated English sentences whose content
// (sums, differences, products, recalled places) has to be learned.
#include <algorithm>
#include <array>
#include <cmath>
#include <string>

#include "pp3d/core/error.h"
#include "pp3d/core/rng.h"
#include "pp3d/train/data.h"

namespace pp3d {

namespace {

constexpr std::array<const char*, 16> kNames = {"alice", "bob",     "carol", "dave",  "erin",  "frank",
                                                "grace", "heidi",   "ivan",  "judy",  "karl",  "laura",
                                                "oscar", "peggy",   "trent", "wendy"};
// All take a plain "s" plural.
constexpr std::array<const char*, 16> kObjects = {"apple", "pear", "book",  "ball", "coin",  "cup",
                                                  "hat",   "key",  "kite",  "shell", "stone", "card",
                                                  "plum",  "egg",  "pen",   "lamp"};
constexpr std::array<const char*, 8> kColors = {"red", "blue", "green", "yellow", "black", "white", "orange",
                                                "purple"};
constexpr std::array<const char*, 8> kPlaces = {"kitchen", "garden", "drawer", "basket",
                                                "closet",  "car",    "garage", "attic"};

// Random words for sentence `index`: a Philox stream with counter (index, j).
class SentenceRng {
 public:
  SentenceRng(uint64_t key, uint64_t index) : key_(key), index_(index) {}
  uint32_t next() {
    if (pos_ == 4) {
      buf_ = philox4x32({static_cast<uint32_t>(index_), static_cast<uint32_t>(index_ >> 32), block_++, 0x5eedu},
                        {static_cast<uint32_t>(key_), static_cast<uint32_t>(key_ >> 32)});
      pos_ = 0;
    }
    return buf_[pos_++];
  }
  // Uniform integer in [lo, hi].
  int range(int lo, int hi) { return lo + static_cast<int>(next() % static_cast<uint32_t>(hi - lo + 1)); }
  template <typename A>
  const char* pick(const A& a) { return a[next() % a.size()]; }

 private:
  uint64_t key_, index_;
  uint32_t block_ = 0;
  std::array<uint32_t, 4> buf_{};
  int pos_ = 4;
};

// A name different from `n` (the next one in the list when the draw repeats it).
std::string other_name(SentenceRng& r, const std::string& n) {
  const uint32_t i = r.next() % kNames.size();
  return kNames[i] == n ? kNames[(i + 1) % kNames.size()] : kNames[i];
}

std::string sentence(uint64_t key, uint64_t index) {
  SentenceRng r(key, index);
  const int kind = r.range(0, 7);
  const std::string n = r.pick(kNames);
  switch (kind) {
    case 0: {
      const int a = r.range(2, 9), b = r.range(1, 9);
      const std::string o = r.pick(kObjects);
      return fmt::format("{} has {} {}s and gets {} more, so {} has {} {}s.", n, a, o, b, n, a + b, o);
    }
    case 1: {
      const int a = r.range(4, 15), b = r.range(1, a - 2);
      const std::string o = r.pick(kObjects);
      const std::string m = other_name(r, n);
      return fmt::format("{} had {} {}s and gave {} to {}, so {} has {} {}s left.", n, a, o, b, m, n, a - b, o);
    }
    case 2: {
      const int a = r.range(0, 20), b = r.range(0, 20);
      return fmt::format("{} plus {} is {}.", a, b, a + b);
    }
    case 3: {
      const int a = r.range(0, 9), b = r.range(0, 9);
      return fmt::format("{} times {} is {}.", a, b, a * b);
    }
    case 4: {
      const int a = r.range(0, 20), b = r.range(0, a);
      return fmt::format("{} minus {} is {}.", a, b, a - b);
    }
    case 5: {
      const std::string c = r.pick(kColors), o = r.pick(kObjects), p = r.pick(kPlaces);
      const std::string m = other_name(r, n);
      return fmt::format("{} puts the {} {} in the {}. {} asks where the {} {} is. it is in the {}.", n, c, o, p,
                         m, c, o, p);
    }
    case 6: {
      const std::string c = r.pick(kColors), o = r.pick(kObjects);
      const std::string c2 = r.pick(kColors), o2 = r.pick(kObjects);
      return fmt::format("the {} {} is next to the {} {}.", c, o, c2, o2);
    }
    default: {
      const std::string c = r.pick(kColors), o = r.pick(kObjects);
      const std::string m = other_name(r, n);
      const std::string c2 = r.pick(kColors);
      return fmt::format("{} likes {} {}s, but {} likes {} ones.", n, c, o, m, c2);
    }
  }
}

std::vector<uint16_t> to_tokens(const std::string& s) {
  std::vector<uint16_t> t(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) t[i] = static_cast<unsigned char>(s[i]);
  return t;
}

std::string generate_split(uint64_t seed, int64_t min_bytes, const char* split) {
  PP3D_CHECK(min_bytes >= 0, "synthetic corpus size must be >= 0, got {}", min_bytes);
  const uint64_t key = rng_key(seed, std::string("corpus/") + split);
  std::string out;
  out.reserve(static_cast<std::size_t>(min_bytes) + 256);
  for (uint64_t i = 0; static_cast<int64_t>(out.size()) < min_bytes; ++i) {
    out += sentence(key, i);
    out += '\n';
  }
  return out;
}

}  // namespace

std::string generate_synthetic_text(uint64_t seed, int64_t min_bytes) {
  return generate_split(seed, min_bytes, "train");
}

TokenDataset make_synthetic_dataset(const SyntheticCorpusOptions& opt) {
  TokenDataset d;
  d.train = TokenSplit(to_tokens(generate_split(opt.seed, opt.train_bytes, "train")), "synthetic corpus (train)");
  d.val = TokenSplit(to_tokens(generate_split(opt.seed, opt.val_bytes, "val")), "synthetic corpus (val)");
  d.vocab_size = 256;
  d.synthetic = true;
  d.tokenizer = "bytes";
  d.description = fmt::format("embedded synthetic corpus (seed {}): {} train bytes, {} val bytes", opt.seed,
                              d.train.size(), d.val.size());
  return d;
}

namespace {

double entropy_bits(const std::vector<double>& probs) {
  double h = 0.0;
  for (double p : probs) {
    if (p > 0.0) h -= p * std::log2(p);
  }
  return h;
}

}  // namespace

double unigram_entropy_bits(const std::vector<uint16_t>& tokens, int64_t vocab_size) {
  PP3D_CHECK(vocab_size >= 1 && vocab_size <= 65536, "vocab_size must be in [1, 65536], got {}", vocab_size);
  if (tokens.empty()) return 0.0;
  std::vector<double> probs(static_cast<std::size_t>(vocab_size), 0.0);
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    PP3D_CHECK(tokens[i] < vocab_size, "token {} at index {} is >= vocab_size {}", tokens[i], i, vocab_size);
    probs[tokens[i]] += 1.0;
  }
  for (double& p : probs) p /= static_cast<double>(tokens.size());
  return entropy_bits(probs);
}

double unigram_entropy_bits(const TokenDataset& data, int64_t max_tokens) {
  PP3D_CHECK(data.vocab_size >= 1, "vocab_size must be >= 1, got {}", data.vocab_size);
  std::vector<double> probs(static_cast<std::size_t>(data.vocab_size), 0.0);
  auto add = [&](const TokenDataset& d, double weight) {
    const int64_t n = std::min(max_tokens, d.train.size());
    if (n == 0) return;
    std::vector<int32_t> ids(static_cast<std::size_t>(n));
    d.train.read(0, n, ids.data(), data.vocab_size);
    std::vector<int64_t> counts(probs.size(), 0);
    for (int32_t t : ids) ++counts[static_cast<std::size_t>(t)];
    for (std::size_t v = 0; v < probs.size(); ++v)
      probs[v] += weight * static_cast<double>(counts[v]) / static_cast<double>(n);
  };
  if (data.blend.empty()) add(data, 1.0);
  for (const BlendPart& part : data.blend) add(*part.data, part.weight);
  return entropy_bits(probs);
}

}  // namespace pp3d
