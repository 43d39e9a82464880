// TokenSplit: token ids in pieces (owned vectors or shard mappings), read with id checks.
#include <algorithm>
#include <cstring>

#include "pp3d/core/error.h"
#include "pp3d/train/data.h"

namespace pp3d {

TokenSplit::TokenSplit(std::vector<uint16_t> tokens, std::string name) {
  auto owned = std::make_shared<const std::vector<uint16_t>>(std::move(tokens));
  Piece p;
  p.data = reinterpret_cast<const unsigned char*>(owned->data());
  p.tokens = static_cast<int64_t>(owned->size());
  p.bytes_per_token = 2;
  p.file = std::move(name);
  p.owner = owned;
  append(std::move(p));
}

void TokenSplit::append(Piece piece) {
  PP3D_CHECK(piece.bytes_per_token == 2 || piece.bytes_per_token == 4, "token width must be 2 or 4 bytes, got {}",
             piece.bytes_per_token);
  if (starts_.empty()) starts_.push_back(0);
  if (piece.tokens == 0) return;  // empty shards hold no windows
  starts_.push_back(starts_.back() + piece.tokens);
  pieces_.push_back(std::move(piece));
}

namespace {

uint32_t token_at(const TokenSplit::Piece& p, int64_t i) {
  if (p.bytes_per_token == 2) {
    uint16_t v;
    std::memcpy(&v, p.data + 2 * i, 2);
    return v;
  }
  uint32_t v;
  std::memcpy(&v, p.data + 4 * i, 4);
  return v;
}

}  // namespace

uint32_t TokenSplit::operator[](int64_t i) const {
  PP3D_CHECK(i >= 0 && i < size(), "token index {} is outside the split [0, {})", i, size());
  const auto it = std::upper_bound(starts_.begin(), starts_.end(), i) - 1;
  const auto k = static_cast<std::size_t>(it - starts_.begin());
  return token_at(pieces_[k], i - *it);
}

void TokenSplit::read(int64_t start, int64_t n, int32_t* out, int64_t vocab) const {
  PP3D_CHECK(start >= 0 && n >= 0 && start + n <= size(), "tokens [{}, {}) are outside the split [0, {})", start,
             start + n, size());
  auto k = static_cast<std::size_t>(std::upper_bound(starts_.begin(), starts_.end(), start) - starts_.begin() - 1);
  while (n > 0) {
    const Piece& p = pieces_[k];
    const int64_t off = start - starts_[k];
    const int64_t take = std::min(n, p.tokens - off);
    for (int64_t i = 0; i < take; ++i) {
      const uint32_t v = token_at(p, off + i);
      PP3D_CHECK(v < static_cast<uint64_t>(vocab),
                 "'{}': token {} at byte offset {} is >= the vocabulary size {}; use a model with a larger "
                 "--vocab-size or the tokenizer the model expects", p.file, v,
                 p.file_offset + (off + i) * p.bytes_per_token, vocab);
      out[i] = static_cast<int32_t>(v);
    }
    out += take;
    start += take;
    n -= take;
    ++k;
  }
}

TokenSplit TokenSplit::slice(int64_t begin, int64_t end) const {
  PP3D_CHECK(0 <= begin && begin <= end && end <= size(), "slice [{}, {}) is outside the split [0, {})", begin, end,
             size());
  TokenSplit s;
  s.starts_.push_back(0);
  for (std::size_t k = 0; k < pieces_.size(); ++k) {
    const int64_t lo = std::max(begin, starts_[k]), hi = std::min(end, starts_[k + 1]);
    if (lo >= hi) continue;
    Piece p = pieces_[k];
    const int64_t skip = lo - starts_[k];
    p.data += skip * p.bytes_per_token;
    p.file_offset += skip * p.bytes_per_token;
    p.tokens = hi - lo;
    s.append(std::move(p));
  }
  return s;
}

std::vector<uint32_t> TokenSplit::to_vector() const {
  std::vector<uint32_t> v;
  v.reserve(static_cast<std::size_t>(size()));
  for (const Piece& p : pieces_) {
    for (int64_t i = 0; i < p.tokens; ++i) v.push_back(token_at(p, i));
  }
  return v;
}

}  // namespace pp3d
