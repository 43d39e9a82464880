// CpuBackend: the Llama-family elementwise ops — RMSNorm, SwiGLU's gate and
// rotary position embedding — forward and backward.
//
// RMSNorm over the last dim n of x[rows, n]:
//   rstd = 1/sqrt(sum(x^2)/n + eps), xhat = x * rstd, y = xhat * w
// Backward with g = dy * w: dx = rstd * (g - xhat * mean(g * xhat)),
//   dw += sum_rows dy * xhat, summed over fixed row blocks then in block order
//   (as LayerNorm), so the result does not depend on the thread count.
//
// SwiGLU: out = silu(g) * u with silu(g) = g * s, s = 1/(1 + e^-g);
//   dg = dout * u * s * (1 + g (1 - s)), du = dout * silu(g).
//
// RoPE (HF rotate_half): per head, pairs (i, i + D/2) are rotated by the angle
//   a = pos * theta^(-2i/D). Angles and their cos/sin are computed in double
//   and rounded once, so long positions lose no precision; backward rotates by -a.
//
// 16-bit activations (bf16/f16 operands, 16-bit compute): each op widens its
// 16-bit inputs, runs the f32 code and rounds each output once (as LayerNorm;
// RMSNorm's rstd and a parameter gradient stay f32).
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/op_checks.h"
#include "pp3d/core/error.h"

namespace pp3d {

using detail::cpu_check;

namespace {

void rmsnorm_backward_f32(const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& rstd, Tensor& dx,
                          Tensor& dweight) {
  const int64_t rows = detail::check_rmsnorm_backward(cpu_check, dy, x, weight, rstd, dx, dweight);
  const int64_t n = weight.numel();
  const float* pdy = dy.data<float>();
  const float* px = x.data<float>();
  const float* pw = weight.data<float>();
  const float* pr = rstd.data<float>();
  float* pdx = dx.data<float>();
  const int64_t block_rows = std::max<int64_t>(32, (rows + 255) / 256);
  const int64_t blocks = (rows + block_rows - 1) / block_rows;
  std::vector<float> partial(static_cast<std::size_t>(blocks * n), 0.0f);
  const bool par = rows * n >= detail::kCpuChunk && blocks > 1;
#pragma omp parallel for schedule(static) if (par)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    float* pdw = partial.data() + blk * n;
    const int64_t r1 = std::min(rows, (blk + 1) * block_rows);
    for (int64_t r = blk * block_rows; r < r1; ++r) {
      const float* dyr = pdy + r * n;
      const float* xr = px + r * n;
      float* dxr = pdx + r * n;
      const float rs = pr[r];
      float sgx = 0.0f;
#pragma omp simd reduction(+ : sgx)
      for (int64_t j = 0; j < n; ++j) sgx += dyr[j] * pw[j] * xr[j] * rs;
      const float mgx = sgx / static_cast<float>(n);
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) {
        const float xhat = xr[j] * rs;
        const float d = dyr[j];
        pdw[j] += d * xhat;
        dxr[j] = rs * (d * pw[j] - xhat * mgx);
      }
    }
  }
  float* pg = dweight.data<float>();
  detail::parallel_for(n, 256, [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) {
      float s = 0.0f;
      for (int64_t blk = 0; blk < blocks; ++blk) s += partial[static_cast<std::size_t>(blk * n + j)];
      pg[j] += s;
    }
  });
}

}  // namespace

void CpuBackend::rmsnorm_forward(const Tensor& x, const Tensor& weight, Tensor& y, Tensor& rstd, float eps) {
  const int64_t rows = detail::check_rmsnorm_forward(cpu_check, x, weight, y, rstd, eps);
  if (detail::any_16bit({&x, &y})) {  // 16-bit activations: f32 math, y rounded once
    Tensor y32 = detail::f32_out(y);
    rmsnorm_forward(detail::as_f32(*this, x), weight, y32, rstd, eps);
    detail::round_out(*this, y32, y);
    return;
  }
  const int64_t n = weight.numel();
  const float* px = x.data<float>();
  const float* pw = weight.data<float>();
  float* py = y.data<float>();
  float* pr = rstd.data<float>();
  detail::parallel_for(rows, detail::row_grain(n), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = px + r * n;
      float* yr = py + r * n;
      float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
      for (int64_t j = 0; j < n; ++j) ss += xr[j] * xr[j];
      const float rs = 1.0f / std::sqrt(ss / static_cast<float>(n) + eps);
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) yr[j] = xr[j] * rs * pw[j];
      pr[r] = rs;
    }
  });
}

void CpuBackend::rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& rstd,
                                  Tensor& dx, Tensor& dweight_out) {
  if (detail::any_16bit({&dy, &x, &dx})) {  // 16-bit activations: f32 math, dx rounded once (checked inside)
    Tensor dx32 = detail::f32_out(dx);
    rmsnorm_backward(detail::as_f32(*this, dy), detail::as_f32(*this, x), weight, rstd, dx32, dweight_out);
    detail::round_out(*this, dx32, dx);
    return;
  }
  detail::with_f32_grad(*this, dweight_out, "rmsnorm_backward: dweight",
                        [&](Tensor& dweight) { rmsnorm_backward_f32(dy, x, weight, rstd, dx, dweight); });
}

// ---- SwiGLU ---------------------------------------------------------------------------

void CpuBackend::swiglu_forward(const Tensor& gate, const Tensor& up, Tensor& out) {
  detail::check_swiglu(cpu_check, "swiglu_forward", {&gate, &up, &out});
  if (detail::any_16bit({&gate, &up, &out})) {  // 16-bit activations: f32 math, out rounded once
    Tensor out32 = detail::f32_out(out);
    swiglu_forward(detail::as_f32(*this, gate), detail::as_f32(*this, up), out32);
    detail::round_out(*this, out32, out);
    return;
  }
  const float* pg = gate.data<float>();
  const float* pu = up.data<float>();
  float* po = out.data<float>();
  detail::parallel_for(gate.numel(), detail::kCpuChunk, [&](int64_t i0, int64_t i1) {
#pragma omp simd
    for (int64_t i = i0; i < i1; ++i) po[i] = pg[i] / (1.0f + std::exp(-pg[i])) * pu[i];
  });
}

void CpuBackend::swiglu_backward(const Tensor& gate, const Tensor& up, const Tensor& dout, Tensor& dgate,
                                 Tensor& dup) {
  detail::check_swiglu(cpu_check, "swiglu_backward", {&gate, &up, &dout, &dgate, &dup});
  if (detail::any_16bit({&gate, &up, &dout, &dgate, &dup})) {  // f32 math, dgate and dup rounded once
    const Tensor g32 = detail::as_f32(*this, gate), u32 = detail::as_f32(*this, up);
    Tensor dg32 = detail::f32_out(dgate), du32 = detail::f32_out(dup);
    swiglu_backward(g32, u32, detail::as_f32(*this, dout), dg32, du32);
    detail::round_out(*this, dg32, dgate);
    detail::round_out(*this, du32, dup);
    return;
  }
  const float* pg = gate.data<float>();
  const float* pu = up.data<float>();
  const float* pd = dout.data<float>();
  float* pdg = dgate.data<float>();
  float* pdu = dup.data<float>();
  detail::parallel_for(gate.numel(), detail::kCpuChunk, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const float g = pg[i], u = pu[i], d = pd[i];  // read all first: outputs may alias inputs
      const float s = 1.0f / (1.0f + std::exp(-g));
      pdg[i] = d * u * s * (1.0f + g * (1.0f - s));
      pdu[i] = d * g * s;
    }
  });
}

// ---- RoPE ----------------------------------------------------------------------------

void CpuBackend::rope_apply(const Tensor& x, Tensor& y, int64_t pos0, float theta, float sin_sign,
                            const char* what) {
  detail::check_rope(cpu_check, x, y, pos0, theta, what);
  if (detail::any_16bit({&x, &y})) {  // 16-bit activations: f32 math, y rounded once
    Tensor y32 = detail::f32_out(y);
    rope_apply(detail::as_f32(*this, x), y32, pos0, theta, sin_sign, what);
    detail::round_out(*this, y32, y);
    return;
  }
  const int64_t B = x.size(0), T = x.size(1), H = x.size(2), D = x.size(3), half = D / 2;
  std::vector<float> cs(static_cast<std::size_t>(T * half)), sn(cs.size());
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < half; ++i) {
      const double a = static_cast<double>(pos0 + t) * std::pow(static_cast<double>(theta), -2.0 * i / D);
      cs[static_cast<std::size_t>(t * half + i)] = static_cast<float>(std::cos(a));
      sn[static_cast<std::size_t>(t * half + i)] = sin_sign * static_cast<float>(std::sin(a));
    }
  const float* px = x.data<float>();
  float* py = y.data<float>();
  detail::parallel_for(B * T, detail::row_grain(H * D), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* c = cs.data() + (r % T) * half;
      const float* s = sn.data() + (r % T) * half;
      for (int64_t h = 0; h < H; ++h) {
        const float* xr = px + (r * H + h) * D;
        float* yr = py + (r * H + h) * D;
#pragma omp simd
        for (int64_t i = 0; i < half; ++i) {
          const float a = xr[i], b = xr[i + half];
          yr[i] = a * c[i] - b * s[i];
          yr[i + half] = b * c[i] + a * s[i];
        }
      }
    }
  });
}

void CpuBackend::rope_forward(const Tensor& x, Tensor& y, int64_t pos0, float theta) {
  rope_apply(x, y, pos0, theta, 1.0f, "rope_forward");
}

void CpuBackend::rope_backward(const Tensor& dy, Tensor& dx, int64_t pos0, float theta) {
  rope_apply(dy, dx, pos0, theta, -1.0f, "rope_backward");
}

}  // namespace pp3d
