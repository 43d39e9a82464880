#include "pp3d/core/parameter.h"

#include <cstring>
#include <vector>

#include "pp3d/core/error.h"
#include "pp3d/core/rng.h"

namespace pp3d {

Shape shard_local_shape(const Shape& global, const ShardSpec& shard) {
  if (!shard.sharded()) return global;
  const int nd = static_cast<int>(global.size());
  PP3D_CHECK(shard.dim < nd, "shard dim {} out of range for global shape {}", shard.dim, shape_str(global));
  PP3D_CHECK(shard.segments >= 1, "shard segments must be >= 1, got {}", shard.segments);
  const int64_t extent = global[static_cast<std::size_t>(shard.dim)];
  PP3D_CHECK(extent % shard.segments == 0, "global dim {} of {} is not divisible into {} segments", shard.dim,
             shape_str(global), shard.segments);
  const int64_t seg = extent / shard.segments;
  PP3D_CHECK(shard.offset >= 0 && shard.length >= 0 && shard.offset + shard.length <= seg,
             "shard [{}, {}) exceeds segment length {} of dim {} in {}", shard.offset, shard.offset + shard.length,
             seg, shard.dim, shape_str(global));
  Shape local = global;
  local[static_cast<std::size_t>(shard.dim)] = shard.length * shard.segments;
  return local;
}

Tensor make_initial_values(const Shape& global, const ShardSpec& shard, const InitSpec& init, uint64_t seed,
                           const std::string& name) {
  PP3D_CHECK(global.size() == 1 || global.size() == 2, "parameter '{}': only 1-D and 2-D tensors, got {}", name,
             shape_str(global));
  const Shape local = shard_local_shape(global, shard);
  Tensor out = Tensor::empty(local, DType::F32);
  const int64_t n = out.numel();
  float* p = out.data<float>();
  if (init.kind != InitKind::Normal) {
    const float v = init.kind == InitKind::Ones ? 1.0f : 0.0f;
    for (int64_t i = 0; i < n; ++i) p[i] = v;
    return out;
  }
  const uint64_t key = rng_key(seed, name);
  const int64_t grows = global[0];
  const int64_t gcols = global.size() == 2 ? global[1] : 1;
  const int64_t lrows = local[0];
  const int64_t lcols = local.size() == 2 ? local[1] : 1;
  // Local index along the sharded dim -> global index (segments of `length`).
  auto to_global = [&](int64_t l, int64_t extent) {
    const int64_t seg_len = extent / shard.segments;
    return (l / shard.length) * seg_len + shard.offset + l % shard.length;
  };
  for (int64_t r = 0; r < lrows; ++r) {
    const int64_t gr = shard.dim == 0 ? to_global(r, grows) : r;
    for (int64_t c = 0; c < lcols; ++c) {
      const int64_t gc = shard.dim == 1 ? to_global(c, gcols) : c;
      const uint64_t idx = static_cast<uint64_t>(gr * gcols + gc);
      p[r * lcols + c] = init.mean + init.std * rng_normal(key, idx);
    }
  }
  return out;
}

void init_parameter(Parameter& p, uint64_t seed) {
  PP3D_CHECK(p.value.defined(), "init_parameter('{}'): value not allocated", p.name);
  p.init_seed = seed;
  Tensor host = make_initial_values(p.global_shape, p.shard, p.init, seed, p.name);
  PP3D_CHECK(host.shape() == p.value.shape(), "parameter '{}': value {} does not match its shard shape {}", p.name,
             p.value.str(), shape_str(host.shape()));
  if (p.value.dtype() == DType::F32) {
    p.value.copy_from(host);
  } else {
    Tensor cast = Tensor::empty(host.shape(), p.value.dtype());
    cast.fill_from(host.to_vector());
    p.value.copy_from(cast);
  }
}

namespace {

// The 16-bit pattern `f` rounds to in `dt` (BF16 / F16).
uint16_t round_bits(float f, DType dt) { return dt == DType::BF16 ? f32_to_bf16(f) : f32_to_f16(f); }

}  // namespace

Tensor master_initial_values(const Parameter& p) {
  PP3D_CHECK(p.value.defined(), "master_initial_values('{}'): the value is not allocated (ZeRO-3 released?)", p.name);
  const Tensor host = p.value.device().is_cpu() ? p.value : p.value.to(Device::cpu());
  if (p.init_seed.has_value() && host.dtype() != DType::F32) {
    Tensor init = make_initial_values(p.global_shape, p.shard, p.init, *p.init_seed, p.name);
    if (init.shape() == host.shape()) {
      const float* f = init.data<float>();
      const uint16_t* h = host.data<uint16_t>();
      bool same = true;
      for (int64_t i = 0, n = init.numel(); i < n && same; ++i) same = round_bits(f[i], host.dtype()) == h[i];
      if (same) return init;
    }
  }
  Tensor out = Tensor::empty(host.shape(), DType::F32);
  if (host.dtype() == DType::F32) {
    std::memcpy(out.data<float>(), host.data<float>(), static_cast<std::size_t>(host.numel()) * 4);
  } else {
    out.fill_from(host.to_vector());
  }
  return out;
}


}  // namespace pp3d
