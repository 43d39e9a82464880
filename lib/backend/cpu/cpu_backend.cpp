// CpuBackend: factory, argument checks, dtype conversions, elementwise ops,
// fill/copy/cast, sum_squares and the bias ops.
//
// Reductions use a fixed split: sum_squares sums fixed chunks in double and
// adds the chunk sums in order; bias_grad gives each column block to one
// thread, which sums the rows in order. Both are thread-count independent.
#include "backend/cpu/cpu_backend.h"
#include "backend/op_checks.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "pp3d/core/error.h"

namespace pp3d {

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

namespace detail {

void cpu_check_tensor(const Tensor& t, const char* what) {
  PP3D_CHECK(t.defined(), "{} is undefined", what);
  PP3D_CHECK(t.device().is_cpu(), "{} lives on {}, the CPU backend needs host tensors", what, t.device().str());
}

void cpu_check(const Tensor& t, DType dt, const char* what) {
  cpu_check_tensor(t, what);
  check_dtype(t, dt, what);
}

void cpu_check_float(const Tensor& t, const char* what) {
  cpu_check_tensor(t, what);
  PP3D_CHECK(is_floating(t.dtype()), "{} must be a float tensor (f32/bf16/f16), got {}", what,
             dtype_name(t.dtype()));
}

Tensor as_f32(Backend& be, const Tensor& t) {
  if (!t.defined() || t.dtype() == DType::F32) return t;
  Tensor out = Tensor::empty(t.shape(), DType::F32, t.device(), MemCategory::Workspace);
  be.cast(t, out);
  return out;
}

Tensor f32_out(const Tensor& out) {
  if (!out.defined() || out.dtype() == DType::F32) return out;
  return Tensor::empty(out.shape(), DType::F32, out.device(), MemCategory::Workspace);
}

void round_out(Backend& be, const Tensor& out32, Tensor& out) {
  if (out.defined() && out.dtype() != DType::F32) be.cast(out32, out);
}

bool any_16bit(std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts)
    if (t->defined() && (t->dtype() == DType::BF16 || t->dtype() == DType::F16)) return true;
  return false;
}

void load_f32(const Tensor& t, int64_t offset, int64_t count, float* out) {
  PP3D_CHECK(offset >= 0 && count >= 0 && offset + count <= t.numel(), "range [{}, {}) outside {}", offset,
             offset + count, t.str());
  switch (t.dtype()) {
    case DType::F32:
      std::memcpy(out, t.data<float>() + offset, static_cast<std::size_t>(count) * 4);
      return;
    case DType::BF16: {
      const uint16_t* in = t.data<uint16_t>() + offset;
      for (int64_t i = 0; i < count; ++i) out[i] = bits_f32(static_cast<uint32_t>(in[i]) << 16);
      return;
    }
    case DType::F16: {
      const uint16_t* in = t.data<uint16_t>() + offset;
      for (int64_t i = 0; i < count; ++i) out[i] = f16_to_f32(in[i]);
      return;
    }
    case DType::I32: break;
  }
  PP3D_FAIL("cannot read {} as f32", t.str());
}

void store_f32(const float* in, Tensor& t, int64_t offset, int64_t count) {
  PP3D_CHECK(offset >= 0 && count >= 0 && offset + count <= t.numel(), "range [{}, {}) outside {}", offset,
             offset + count, t.str());
  switch (t.dtype()) {
    case DType::F32:
      std::memcpy(t.data<float>() + offset, in, static_cast<std::size_t>(count) * 4);
      return;
    case DType::BF16: {
      uint16_t* out = t.data<uint16_t>() + offset;
      for (int64_t i = 0; i < count; ++i) out[i] = f32_to_bf16(in[i]);
      return;
    }
    case DType::F16: {
      uint16_t* out = t.data<uint16_t>() + offset;
      for (int64_t i = 0; i < count; ++i) out[i] = f32_to_f16(in[i]);
      return;
    }
    case DType::I32: break;
  }
  PP3D_FAIL("cannot write f32 into {}", t.str());
}

}  // namespace detail

using detail::cpu_check;
using detail::kCpuChunk;
using detail::parallel_for;

// ---- elementwise ------------------------------------------------------------

void CpuBackend::add(const Tensor& a, const Tensor& b, Tensor& out) {
  cpu_check(a, DType::F32, "add: a");
  cpu_check(b, DType::F32, "add: b");
  cpu_check(out, DType::F32, "add: out");
  check_same_numel(a, b, "add: b");
  check_same_numel(a, out, "add: out");
  const float* pa = a.data<float>();
  const float* pb = b.data<float>();
  float* po = out.data<float>();
  parallel_for(a.numel(), kCpuChunk, [&](int64_t i0, int64_t i1) {
#pragma omp simd
    for (int64_t i = i0; i < i1; ++i) po[i] = pa[i] + pb[i];
  });
}

void CpuBackend::scale(Tensor& x, float alpha) {
  detail::cpu_check_float(x, "scale: x");
  if (x.dtype() != DType::F32) {  // 16-bit gradients: x = round(x * alpha)
    parallel_for(x.numel(), kCpuChunk, [&](int64_t i0, int64_t i1) {
      std::vector<float> tmp(static_cast<std::size_t>(i1 - i0));
      detail::load_f32(x, i0, i1 - i0, tmp.data());
      for (float& t : tmp) t *= alpha;
      detail::store_f32(tmp.data(), x, i0, i1 - i0);
    });
    return;
  }
  float* px = x.data<float>();
  parallel_for(x.numel(), kCpuChunk, [&](int64_t i0, int64_t i1) {
#pragma omp simd
    for (int64_t i = i0; i < i1; ++i) px[i] *= alpha;
  });
}

void CpuBackend::axpy(float alpha, const Tensor& x, Tensor& y) {
  detail::cpu_check_float(x, "axpy: x");
  detail::cpu_check_float(y, "axpy: y");
  check_same_numel(x, y, "axpy: y");
  if (x.dtype() != DType::F32 || y.dtype() != DType::F32) {  // 16-bit gradients, through f32
    parallel_for(x.numel(), kCpuChunk, [&](int64_t i0, int64_t i1) {
      const int64_t len = i1 - i0;
      std::vector<float> tx(static_cast<std::size_t>(len)), ty(static_cast<std::size_t>(len));
      detail::load_f32(x, i0, len, tx.data());
      detail::load_f32(y, i0, len, ty.data());
      for (int64_t i = 0; i < len; ++i) ty[i] += alpha * tx[i];
      detail::store_f32(ty.data(), y, i0, len);
    });
    return;
  }
  const float* px = x.data<float>();
  float* py = y.data<float>();
  parallel_for(x.numel(), kCpuChunk, [&](int64_t i0, int64_t i1) {
#pragma omp simd
    for (int64_t i = i0; i < i1; ++i) py[i] += alpha * px[i];
  });
}

namespace {
template <typename T>
void fill_as(Tensor& x, T value) {
  T* p = x.data<T>();
  parallel_for(x.numel(), kCpuChunk, [&](int64_t i0, int64_t i1) { std::fill(p + i0, p + i1, value); });
}
}  // namespace

void CpuBackend::fill(Tensor& x, float value) {
  detail::cpu_check_tensor(x, "fill: x");
  switch (x.dtype()) {
    case DType::F32: fill_as<float>(x, value); return;
    case DType::BF16: fill_as<uint16_t>(x, f32_to_bf16(value)); return;
    case DType::F16: fill_as<uint16_t>(x, f32_to_f16(value)); return;
    case DType::I32:
      PP3D_CHECK(std::trunc(value) == value && std::fabs(value) < 2147483648.0f,
                 "fill: value {} is not representable in the i32 tensor x", value);
      fill_as<int32_t>(x, static_cast<int32_t>(value));
      return;
  }
}

void CpuBackend::copy(const Tensor& src, Tensor& dst) {
  detail::cpu_check_tensor(src, "copy: src");
  detail::cpu_check_tensor(dst, "copy: dst");
  PP3D_CHECK(src.dtype() == dst.dtype(), "copy: dst has dtype {} but src has {} (use cast)",
             dtype_name(dst.dtype()), dtype_name(src.dtype()));
  check_same_numel(src, dst, "copy: dst");
  const char* ps = static_cast<const char*>(src.raw());
  char* pd = static_cast<char*>(dst.raw());
  if (ps == pd) return;
  const int64_t es = static_cast<int64_t>(dtype_size(src.dtype()));
  parallel_for(src.numel(), kCpuChunk * 4, [&](int64_t i0, int64_t i1) {
    std::memmove(pd + i0 * es, ps + i0 * es, static_cast<std::size_t>((i1 - i0) * es));
  });
}

void CpuBackend::cast(const Tensor& src, Tensor& dst) {
  detail::cpu_check_float(src, "cast: src");
  detail::cpu_check_float(dst, "cast: dst");
  check_same_numel(src, dst, "cast: dst");
  if (src.dtype() == dst.dtype()) {
    copy(src, dst);
    return;
  }
  parallel_for(src.numel(), kCpuChunk, [&](int64_t i0, int64_t i1) {
    const int64_t n = i1 - i0;
    if (src.dtype() == DType::F32) {
      detail::store_f32(src.data<float>() + i0, dst, i0, n);
    } else if (dst.dtype() == DType::F32) {
      detail::load_f32(src, i0, n, dst.data<float>() + i0);
    } else {
      std::vector<float> tmp(static_cast<std::size_t>(n));
      detail::load_f32(src, i0, n, tmp.data());
      detail::store_f32(tmp.data(), dst, i0, n);
    }
  });
}

double CpuBackend::sum_squares(const Tensor& x) {
  detail::cpu_check_float(x, "sum_squares: x");
  const int64_t n = x.numel();
  const int64_t chunks = (n + kCpuChunk - 1) / kCpuChunk;
  std::vector<double> partial(static_cast<std::size_t>(chunks), 0.0);
  parallel_for(chunks, 1, [&](int64_t c0, int64_t c1) {
    std::vector<float> tmp;
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t i0 = c * kCpuChunk, len = std::min(n, i0 + kCpuChunk) - i0;
      const float* p;
      if (x.dtype() == DType::F32) {
        p = x.data<float>() + i0;
      } else {
        tmp.resize(static_cast<std::size_t>(len));
        detail::load_f32(x, i0, len, tmp.data());
        p = tmp.data();
      }
      double s = 0.0;
#pragma omp simd reduction(+ : s)
      for (int64_t i = 0; i < len; ++i) s += static_cast<double>(p[i]) * static_cast<double>(p[i]);
      partial[static_cast<std::size_t>(c)] = s;
    }
  });
  double total = 0.0;
  for (double s : partial) total += s;
  return total;
}

// ---- bias -------------------------------------------------------------------

namespace {
// Checks x[rows, n] against bias[n]; returns rows.
int64_t bias_rows(const Tensor& x, const Tensor& bias, const char* xname, const char* bname) {
  PP3D_CHECK(bias.dim() == 1, "{} must be 1-d, got shape {}", bname, shape_str(bias.shape()));
  PP3D_CHECK(x.dim() >= 1 && x.size(-1) == bias.numel(), "{} {} does not end in the bias size {} of {}", xname,
             shape_str(x.shape()), bias.numel(), bname);
  return bias.numel() == 0 ? 0 : x.numel() / bias.numel();
}
}  // namespace

void CpuBackend::bias_add(Tensor& x, const Tensor& bias) {
  cpu_check(x, DType::F32, "bias_add: x");
  cpu_check(bias, DType::F32, "bias_add: bias");
  const int64_t rows = bias_rows(x, bias, "bias_add: x", "bias_add: bias");
  const int64_t n = bias.numel();
  float* px = x.data<float>();
  const float* pb = bias.data<float>();
  parallel_for(rows, detail::row_grain(n), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float* row = px + r * n;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) row[j] += pb[j];
    }
  });
}

void CpuBackend::bias_grad(const Tensor& dy, Tensor& dbias_out) {
  detail::check_act(cpu_check, dy, "bias_grad: dy");  // 16-bit dy: summed in f32
  const Tensor dy32 = detail::as_f32(*this, dy);
  detail::with_f32_grad(*this, dbias_out, "bias_grad: dbias", [&](Tensor& dbias) { bias_grad_f32(dy32, dbias); });
}

void CpuBackend::bias_grad_f32(const Tensor& dy, Tensor& dbias) {
  const int64_t rows = bias_rows(dy, dbias, "bias_grad: dy", "bias_grad: dbias");
  const int64_t n = dbias.numel();
  const float* pd = dy.data<float>();
  float* pb = dbias.data<float>();
  // Column blocks: each column is summed over rows in order by one thread.
  constexpr int64_t kCols = 64;
  const int64_t col_blocks = (n + kCols - 1) / kCols;
  const bool par = rows * n >= kCpuChunk && col_blocks > 1;
#pragma omp parallel for schedule(static) if (par)
  for (int64_t blk = 0; blk < col_blocks; ++blk) {
    const int64_t c0 = blk * kCols, len = std::min(n, c0 + kCols) - c0;
    float acc[kCols];
    std::fill(acc, acc + len, 0.0f);
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = pd + r * n + c0;
#pragma omp simd
      for (int64_t j = 0; j < len; ++j) acc[j] += row[j];
    }
    for (int64_t j = 0; j < len; ++j) pb[c0 + j] += acc[j];
  }
}

}  // namespace pp3d
