// Checkpoint geometry: a rank's local shard (ShardSpec with segments) as runs
// of global slabs, a CheckpointTensor's parts, the overlap copy between a
// wanted part and a stored piece, and CRC-32.
#include <algorithm>
#include <array>

#include <fmt/format.h>

#include "pp3d/core/error.h"
#include "train/checkpoint_internal.h"

namespace pp3d::detail {

namespace {

std::array<std::array<uint32_t, 256>, 8> make_crc_tables() {
  std::array<std::array<uint32_t, 256>, 8> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    t[0][i] = c;
  }
  for (uint32_t i = 0; i < 256; ++i)
    for (int s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xFFu];
  return t;
}

}  // namespace

uint32_t crc32(const void* data, std::size_t n, uint32_t crc) {
  static const auto T = make_crc_tables();
  const auto* p = static_cast<const unsigned char*>(data);
  uint32_t c = ~crc;
  while (n >= 8) {  // slicing-by-8
    const uint32_t lo = c ^ (uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24);
    c = T[7][lo & 0xFF] ^ T[6][(lo >> 8) & 0xFF] ^ T[5][(lo >> 16) & 0xFF] ^ T[4][lo >> 24] ^ T[3][p[4]] ^
        T[2][p[5]] ^ T[1][p[6]] ^ T[0][p[7]];
    p += 8;
    n -= 8;
  }
  while (n--) c = T[0][(c ^ *p++) & 0xFFu] ^ (c >> 8);
  return ~c;
}

int64_t Slab::numel() const {
  int64_t n = 1;
  for (std::size_t d = 0; d < begin.size(); ++d) n *= std::max<int64_t>(end[d] - begin[d], 0);
  return n;
}

std::string Slab::str() const {
  std::string s = "[";
  for (std::size_t d = 0; d < begin.size(); ++d) s += fmt::format("{}{}:{}", d ? ", " : "", begin[d], end[d]);
  return s + "]";
}

std::vector<LocalRun> local_runs(const Shape& global_in, const ShardSpec& shard) {
  const Shape global = global_in.empty() ? Shape{1} : global_in;
  Slab full;
  for (int64_t e : global) {
    full.begin.push_back(0);
    full.end.push_back(e);
  }
  if (!shard.sharded()) return {{full, 0}};
  shard_local_shape(global, shard);  // validates
  const auto d = static_cast<std::size_t>(shard.dim);
  const int64_t seg_len = global[d] / shard.segments;
  std::vector<LocalRun> out;
  if (shard.segments == 1 || d == 0) {
    // Segment k is a contiguous block of the local tensor.
    int64_t start = 0;
    for (int64_t k = 0; k < shard.segments; ++k) {
      Slab s = full;
      s.begin[d] = k * seg_len + shard.offset;
      s.end[d] = s.begin[d] + shard.length;
      out.push_back({s, start});
      start += s.numel();
    }
    return out;
  }
  // Segments along an inner dim: one run per (outer index, segment).
  int64_t outer = 1;
  for (std::size_t i = 0; i < d; ++i) outer *= global[i];
  int64_t start = 0;
  for (int64_t o = 0; o < outer; ++o) {
    Slab s = full;
    int64_t rem = o;
    for (std::size_t i = d; i-- > 0;) {
      s.begin[i] = rem % global[i];
      s.end[i] = s.begin[i] + 1;
      rem /= global[i];
    }
    for (int64_t k = 0; k < shard.segments; ++k) {
      s.begin[d] = k * seg_len + shard.offset;
      s.end[d] = s.begin[d] + shard.length;
      out.push_back({s, start});
      start += s.numel();
    }
  }
  return out;
}

std::vector<Part> tensor_parts(const CheckpointTensor& t) {
  const Shape local = shard_local_shape(t.global_shape, t.shard);
  const int64_t n = shape_numel(local);
  const int64_t b = t.begin, e = t.end < 0 ? n : t.end;
  PP3D_CHECK(b >= 0 && b <= e && e <= n, "checkpoint tensor '{}': element range [{}, {}) outside its local shard "
             "of {} elements", t.name, b, e, n);
  PP3D_CHECK(t.data.defined() && t.data.numel() == e - b, "checkpoint tensor '{}': data holds {} elements, the "
             "range [{}, {}) needs {}", t.name, t.data.defined() ? t.data.numel() : 0, b, e, e - b);
  std::vector<Part> parts;
  for (const LocalRun& r : local_runs(t.global_shape, t.shard)) {
    const int64_t rs = r.local_start, re = rs + r.slab.numel();
    const int64_t s = std::max(rs, b), f = std::min(re, e);
    if (s < f) parts.push_back({r.slab, s - rs, f - rs, s - b});
  }
  return parts;
}

int64_t copy_overlap(const Want& want, const Piece& p, const float* src) {
  const std::size_t nd = want.slab.begin.size();
  if (p.slab.begin.size() != nd) return 0;
  for (std::size_t d = 0; d < nd; ++d)  // bounding boxes
    if (std::max(want.slab.begin[d], p.slab.begin[d]) >= std::min(want.slab.end[d], p.slab.end[d])) return 0;
  const int64_t W = want.slab.end[nd - 1] - want.slab.begin[nd - 1];
  const int64_t PW = p.slab.end[nd - 1] - p.slab.begin[nd - 1];
  const int64_t wc0 = want.slab.begin[nd - 1], pc0 = p.slab.begin[nd - 1];
  int64_t copied = 0;
  const int64_t row_first = want.flat_begin / W, row_last = (want.flat_end - 1) / W;
  for (int64_t r = row_first; r <= row_last && want.flat_end > want.flat_begin; ++r) {
    // Global prefix of row r of the wanted slab; its row index inside the piece's slab.
    int64_t rem = r, prow = 0, pstride = 1;
    bool inside = true;
    for (std::size_t i = nd - 1; i-- > 0;) {
      const int64_t ext = want.slab.end[i] - want.slab.begin[i];
      const int64_t g = want.slab.begin[i] + rem % ext;
      rem /= ext;
      if (g < p.slab.begin[i] || g >= p.slab.end[i]) {
        inside = false;
        break;
      }
      prow += (g - p.slab.begin[i]) * pstride;
      pstride *= p.slab.end[i] - p.slab.begin[i];
    }
    if (!inside) continue;
    // Global column interval of this row that both hold.
    int64_t c0 = wc0 + std::max<int64_t>(want.flat_begin - r * W, 0);
    int64_t c1 = wc0 + std::min<int64_t>(want.flat_end - r * W, W);
    c0 = std::max({c0, pc0, pc0 + p.flat_begin - prow * PW});
    c1 = std::min({c1, pc0 + PW, pc0 + p.flat_end - prow * PW});
    if (c0 >= c1) continue;
    const int64_t src_pos = prow * PW + (c0 - pc0) - p.flat_begin;
    const int64_t dst_pos = r * W + (c0 - wc0) - want.flat_begin;
    if (src != nullptr) std::copy(src + src_pos, src + src_pos + (c1 - c0), want.dst + dst_pos);
    copied += c1 - c0;
  }
  return copied;
}

}  // namespace pp3d::detail
