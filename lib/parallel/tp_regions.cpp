// Sequence-parallel region conversions, block permutations and TP parameter helpers.
#include "parallel/tp_detail.h"
#include "pp3d/core/error.h"
#include "pp3d/parallel/tensor_parallel.h"

namespace pp3d {
namespace detail {

Tensor swap_leading_dims(Backend& be, const Tensor& src, int64_t X, int64_t Y, int64_t Z, const Shape& out_shape,
                         MemCategory cat) {
  PP3D_CHECK(src.numel() == X * Y * Z, "swap_leading_dims: {} is not [{}, {}, {}]", src.str(), X, Y, Z);
  Tensor dst = Tensor::empty(out_shape, src.dtype(), be.device(), cat);
  PP3D_CHECK(dst.numel() == src.numel(), "swap_leading_dims: output shape {} does not hold {} elements",
             shape_str(out_shape), src.numel());
  if (X == 1 || Y == 1) {
    be.copy(src, dst);
    return dst;
  }
  const Tensor s = src.reshape({X * Y, Z});
  const Tensor d = dst.reshape({Y * X, Z});
  for (int64_t x = 0; x < X; ++x) {
    for (int64_t y = 0; y < Y; ++y) {
      Tensor out = d.slice(y * X + x, y * X + x + 1);
      be.copy(s.slice(x * Y + y, x * Y + y + 1), out);
    }
  }
  return dst;
}

Tensor take_middle_block(Backend& be, const Tensor& src, int64_t X, int64_t Y, int64_t Z, int64_t y) {
  PP3D_CHECK(src.numel() == X * Y * Z && y >= 0 && y < Y, "take_middle_block: {} is not [{}, {}, {}] or y={}",
             src.str(), X, Y, Z, y);
  Tensor dst = Tensor::empty({X, Z}, src.dtype(), be.device(), MemCategory::Activations);
  const Tensor s = src.reshape({X * Y, Z});
  for (int64_t x = 0; x < X; ++x) {
    Tensor out = dst.slice(x, x + 1);
    be.copy(s.slice(x * Y + y, x * Y + y + 1), out);
  }
  return dst;
}

Shape with_last_dim(Shape shape, int64_t last) {
  PP3D_CHECK(!shape.empty(), "with_last_dim: scalar shape");
  shape.back() = last;
  return shape;
}

}  // namespace detail

namespace {

void check_btc(const Tensor& t, const char* what) {
  PP3D_CHECK(t.defined() && t.dim() == 3, "{}: expects a [B, T, C] tensor, got {}", what,
             t.defined() ? t.str() : std::string("undefined"));
}

int64_t local_seq(const Tensor& y, int tp, const char* what) {
  check_btc(y, what);
  const int64_t T = y.size(1);
  PP3D_CHECK(T % tp == 0,
             "{}: sequence length {} is not divisible by the tensor-parallel size {} (sequence parallelism "
             "needs T % tp == 0)",
             what, T, tp);
  return T / tp;
}

}  // namespace

Tensor sequence_all_gather(Backend& be, Communicator* tp, const Tensor& x_local) {
  check_btc(x_local, "sequence_all_gather");
  const int n = tp_world(tp);
  if (n == 1) return x_local;
  const int64_t B = x_local.size(0), Tl = x_local.size(1), C = x_local.size(2);
  // Rank-ordered chunks: [tp, B, T/tp, C] -> [B, tp, T/tp, C] = [B, T, C].
  Tensor buf = Tensor::empty({n, B, Tl, C}, x_local.dtype(), be.device(),
                             B == 1 ? MemCategory::Activations : MemCategory::Comm);
  tp->all_gather(x_local, buf);
  if (B == 1) return buf.reshape({1, n * Tl, C});
  return detail::swap_leading_dims(be, buf, n, B, Tl * C, {B, n * Tl, C});
}

Tensor sequence_reduce_scatter(Backend& be, Communicator* tp, const Tensor& y) {
  const int n = tp_world(tp);
  const int64_t Tl = local_seq(y, n, "sequence_reduce_scatter");
  if (n == 1) return y;
  const int64_t B = y.size(0), C = y.size(2);
  Tensor out = Tensor::empty({B, Tl, C}, y.dtype(), be.device(), MemCategory::Activations);
  if (B == 1) {
    tp->reduce_scatter(y, out);
  } else {
    // [B, tp, T/tp, C] -> rank-ordered [tp, B, T/tp, C].
    Tensor perm = detail::swap_leading_dims(be, y, B, n, Tl * C, {n, B, Tl, C}, MemCategory::Comm);
    tp->reduce_scatter(perm, out);
  }
  return out;
}

Tensor sequence_split(Backend& be, Communicator* tp, const Tensor& x) {
  const int n = tp_world(tp);
  const int64_t Tl = local_seq(x, n, "sequence_split");
  if (n == 1) return x;
  const int64_t B = x.size(0), C = x.size(2);
  Tensor part = detail::take_middle_block(be, x, B, n, Tl * C, tp->rank());
  return part.reshape({B, Tl, C});
}

ShardSpec column_parallel_shard(int64_t out_features, int tp_rank, int tp_size, int64_t segments) {
  PP3D_CHECK(tp_size >= 1 && tp_rank >= 0 && tp_rank < tp_size, "tp_rank {} out of range for tp_size {}", tp_rank,
             tp_size);
  PP3D_CHECK(segments >= 1 && out_features % (segments * tp_size) == 0,
             "column-parallel: {} output features do not split into {} segment(s) x tp_size {}", out_features,
             segments, tp_size);
  const int64_t len = out_features / segments / tp_size;
  return ShardSpec{0, tp_rank * len, len, segments};
}

ShardSpec row_parallel_shard(int64_t in_features, int tp_rank, int tp_size) {
  PP3D_CHECK(tp_size >= 1 && tp_rank >= 0 && tp_rank < tp_size, "tp_rank {} out of range for tp_size {}", tp_rank,
             tp_size);
  PP3D_CHECK(in_features % tp_size == 0, "row-parallel: {} input features are not divisible by tp_size {}",
             in_features, tp_size);
  const int64_t len = in_features / tp_size;
  return ShardSpec{1, tp_rank * len, len, 1};
}

Parameter make_sharded_parameter(const std::string& name, const Shape& global, const ShardSpec& shard,
                                 const InitSpec& init, uint64_t seed, Device device) {
  Parameter p;
  p.name = name;
  p.global_shape = global;
  p.shard = shard;
  p.init = init;
  p.weight_decay = global.size() >= 2;
  p.replicated_in_tp = !shard.sharded();
  const Shape local = shard_local_shape(global, shard);
  p.value = Tensor::empty(local, DType::F32, device, MemCategory::Params);
  p.grad = Tensor::zeros(local, DType::F32, device, MemCategory::Grads);
  init_parameter(p, seed);
  return p;
}

}  // namespace pp3d
