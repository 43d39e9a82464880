// Checkpoint geometry against a naive element-by-element reference: a global
// tensor whose values are their global flat index is cut into pieces by one
// partition (TP shards with segments along dim 0 or 1, then flat ZeRO-like
// ranges of the local shards) and read back through another partition with
// the overlap copy; every wanted element must come back as its global index.
#include <random>

#include <catch2/catch.hpp>

#include "pp3d/train/checkpoint.h"
#include "train/checkpoint_internal.h"

using namespace pp3d;

namespace {

// Global flat index of local flat index `l` of the shard (naive: per element).
int64_t naive_global_index(const Shape& g, const ShardSpec& s, int64_t l) {
  const Shape local = shard_local_shape(g, s);
  std::vector<int64_t> idx(local.size());
  for (std::size_t d = local.size(); d-- > 0;) {
    idx[d] = l % local[d];
    l /= local[d];
  }
  if (s.sharded()) {
    const auto d = static_cast<std::size_t>(s.dim);
    const int64_t seg = g[d] / s.segments;
    idx[d] = (idx[d] / s.length) * seg + s.offset + idx[d] % s.length;
  }
  int64_t flat = 0;
  for (std::size_t d = 0; d < g.size(); ++d) flat = flat * g[d] + idx[d];
  return flat;
}

// A partition: `ways` shards along `dim` (segments `segs`), each local shard
// cut into `cuts` flat ranges.
std::vector<CheckpointTensor> partition(const Shape& g, int dim, int ways, int64_t segs, int cuts,
                                        std::vector<std::vector<float>>& storage) {
  std::vector<CheckpointTensor> out;
  for (int r = 0; r < ways; ++r) {
    ShardSpec s;
    if (ways > 1) {
      const int64_t len = g[static_cast<std::size_t>(dim)] / segs / ways;
      s = ShardSpec{dim, r * len, len, segs};
    }
    const int64_t n = shape_numel(shard_local_shape(g, s));
    for (int c = 0; c < cuts; ++c) {
      CheckpointTensor t;
      t.name = "x";
      t.global_shape = g;
      t.shard = s;
      t.begin = n * c / cuts;
      t.end = n * (c + 1) / cuts;
      storage.emplace_back(static_cast<std::size_t>(t.end - t.begin));
      t.data = Tensor::from_vector({t.end - t.begin}, storage.back());
      out.push_back(t);
    }
  }
  return out;
}

}  // namespace

TEST_CASE("checkpoint geometry: any partition reads back from any other (vs naive)", "[train][checkpoint]") {
  struct Case {
    Shape g;
    int dim_a, ways_a;
    int64_t segs_a;
    int cuts_a;
    int dim_b, ways_b;
    int64_t segs_b;
    int cuts_b;
  };
  const std::vector<Case> cases = {
      {{12, 10}, 0, 2, 3, 3, 0, 1, 1, 1},   // fused q|k|v rows tp2 + ZeRO cuts -> serial
      {{12, 10}, 0, 1, 1, 5, 0, 2, 3, 2},   // serial with flat cuts -> fused tp2
      {{12, 10}, 1, 2, 1, 3, 0, 3, 1, 4},   // column shards -> row shards
      {{6, 8}, 1, 2, 2, 1, 1, 4, 1, 3},     // column segments (one run per row) -> 4 column shards
      {{36}, 0, 3, 3, 4, 0, 4, 1, 2},       // 1-D fused bias
      {{4, 6, 5}, 1, 3, 1, 2, 2, 5, 1, 3},  // 3-D, inner dims
  };
  for (const Case& c : cases) {
    CAPTURE(shape_str(c.g), c.dim_a, c.ways_a, c.segs_a, c.cuts_a, c.dim_b, c.ways_b, c.segs_b, c.cuts_b);
    std::vector<std::vector<float>> sa, sb;
    const auto src = partition(c.g, c.dim_a, c.ways_a, c.segs_a, c.cuts_a, sa);
    // Pieces of the source partition, values = global index (naive).
    std::vector<detail::Piece> pieces;
    std::vector<std::vector<float>> piece_values;
    int64_t stored = 0;
    for (const CheckpointTensor& t : src) {
      for (const detail::Part& p : detail::tensor_parts(t)) {
        detail::Piece pc;
        pc.slab = p.slab;
        pc.flat_begin = p.flat_begin;
        pc.flat_end = p.flat_end;
        std::vector<float> v;
        for (int64_t i = 0; i < p.flat_end - p.flat_begin; ++i)
          v.push_back(static_cast<float>(naive_global_index(c.g, t.shard, t.begin + p.data_pos + i)));
        stored += pc.numel();
        pieces.push_back(pc);
        piece_values.push_back(v);
      }
    }
    REQUIRE(stored == shape_numel(c.g));
    const auto dst = partition(c.g, c.dim_b, c.ways_b, c.segs_b, c.cuts_b, sb);
    for (const CheckpointTensor& t : dst) {
      std::vector<float> got(static_cast<std::size_t>(t.end - t.begin), -1.0f);
      for (const detail::Part& p : detail::tensor_parts(t)) {
        detail::Want w{p.slab, p.flat_begin, p.flat_end, got.data() + p.data_pos};
        int64_t n = 0;
        for (std::size_t i = 0; i < pieces.size(); ++i) {
          const int64_t k = detail::copy_overlap(w, pieces[i], nullptr);
          REQUIRE(detail::copy_overlap(w, pieces[i], piece_values[i].data()) == k);
          n += k;
        }
        REQUIRE(n == p.flat_end - p.flat_begin);
      }
      for (int64_t i = 0; i < t.end - t.begin; ++i)
        REQUIRE(got[static_cast<std::size_t>(i)] == static_cast<float>(naive_global_index(c.g, t.shard, t.begin + i)));
    }
  }
}

TEST_CASE("checkpoint crc32 matches the IEEE check value", "[train][checkpoint]") {
  const char* s = "123456789";
  REQUIRE(detail::crc32(s, 9) == 0xCBF43926u);
  // Incremental == one shot, across the 8-byte fast path.
  std::vector<unsigned char> b(1000);
  std::mt19937 gen(3);
  for (auto& x : b) x = static_cast<unsigned char>(gen());
  REQUIRE(detail::crc32(b.data() + 13, 987, detail::crc32(b.data(), 13)) == detail::crc32(b.data(), 1000));
}
