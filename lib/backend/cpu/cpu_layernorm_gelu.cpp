// CpuBackend: LayerNorm and GELU (tanh approximation), forward and backward.
//
// LayerNorm over the last dim n of x[rows, n]:
//   mean = sum(x)/n, var = sum((x-mean)^2)/n (two passes), rstd = 1/sqrt(var+eps)
//   xhat = (x-mean)*rstd, y = xhat*w + b
// Backward with g = dy*w: dx = rstd * (g - mean(g) - xhat * mean(g*xhat)),
//   dw += sum_rows dy*xhat, db += sum_rows dy.
// The parameter gradients are summed over fixed row blocks (their count depends
// only on `rows`), the block sums then added in block order: the result does
// not depend on the thread count.
//
// GELU: y = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3);
//   dy/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2), t = tanh(u).
// Element chunks go through Eigen array expressions (vectorised tanh).
// 16-bit activation operands (x, y, dy, dx of bf16/f16) are widened to f32,
// the f32 code runs, and the output is rounded once (detail::as_f32/round_out):
// the emulation of a kernel with 16-bit I/O and f32 math inside.
#include <cmath>
#include <vector>

#include <Eigen/Core>

#include "backend/cpu/cpu_backend.h"
#include "backend/op_checks.h"
#include "pp3d/core/error.h"

namespace pp3d {

using detail::cpu_check;

using detail::check_len;
using detail::ln_rows;

void CpuBackend::layernorm_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& y,
                                   Tensor& mean, Tensor& rstd, float eps) {
  const int64_t rows = detail::check_layernorm_forward(cpu_check, x, weight, bias, y, mean, rstd, eps);
  if (detail::any_16bit({&x, &y})) {  // 16-bit activations: f32 math, y rounded once
    Tensor y32 = detail::f32_out(y);
    layernorm_forward(detail::as_f32(*this, x), weight, bias, y32, mean, rstd, eps);
    detail::round_out(*this, y32, y);
    return;
  }
  const int64_t n = weight.numel();
  const float* px = x.data<float>();
  const float* pw = weight.data<float>();
  const float* pb = bias.data<float>();
  float* py = y.data<float>();
  float* pm = mean.data<float>();
  float* pr = rstd.data<float>();
  detail::parallel_for(rows, detail::row_grain(n), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = px + r * n;
      float* yr = py + r * n;
      float s = 0.0f;
#pragma omp simd reduction(+ : s)
      for (int64_t j = 0; j < n; ++j) s += xr[j];
      const float mu = s / static_cast<float>(n);
      float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
      for (int64_t j = 0; j < n; ++j) ss += (xr[j] - mu) * (xr[j] - mu);
      const float rs = 1.0f / std::sqrt(ss / static_cast<float>(n) + eps);
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) yr[j] = (xr[j] - mu) * rs * pw[j] + pb[j];
      pm[r] = mu;
      pr[r] = rs;
    }
  });
}

void CpuBackend::layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& mean,
                                    const Tensor& rstd, Tensor& dx, Tensor& dweight_out, Tensor& dbias_out) {
  detail::with_f32_grad(*this, dweight_out, "layernorm_backward: dweight", [&](Tensor& dweight) {
    detail::with_f32_grad(*this, dbias_out, "layernorm_backward: dbias", [&](Tensor& dbias) {
      layernorm_backward_f32(dy, x, weight, mean, rstd, dx, dweight, dbias);
    });
  });
}

void CpuBackend::layernorm_backward_f32(const Tensor& dy, const Tensor& x, const Tensor& weight,
                                        const Tensor& mean, const Tensor& rstd, Tensor& dx, Tensor& dweight,
                                        Tensor& dbias) {
  const int64_t rows = detail::check_layernorm_backward(cpu_check, dy, x, weight, mean, rstd, dx, dweight, dbias);
  if (detail::any_16bit({&dy, &x, &dx})) {  // 16-bit activations: f32 math, dx rounded once
    Tensor dx32 = detail::f32_out(dx);
    layernorm_backward_f32(detail::as_f32(*this, dy), detail::as_f32(*this, x), weight, mean, rstd, dx32, dweight,
                           dbias);
    detail::round_out(*this, dx32, dx);
    return;
  }
  const int64_t n = weight.numel();
  const float* pdy = dy.data<float>();
  const float* px = x.data<float>();
  const float* pw = weight.data<float>();
  const float* pm = mean.data<float>();
  const float* pr = rstd.data<float>();
  float* pdx = dx.data<float>();

  // Fixed row blocks (at most 256 of them), each with its own dweight/dbias partial.
  const int64_t block_rows = std::max<int64_t>(32, (rows + 255) / 256);
  const int64_t blocks = (rows + block_rows - 1) / block_rows;
  std::vector<float> partial(static_cast<std::size_t>(blocks * 2 * n), 0.0f);
  const bool par = rows * n >= detail::kCpuChunk && blocks > 1;
#pragma omp parallel for schedule(static) if (par)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    float* pdw = partial.data() + blk * 2 * n;
    float* pdb = pdw + n;
    const int64_t r1 = std::min(rows, (blk + 1) * block_rows);
    for (int64_t r = blk * block_rows; r < r1; ++r) {
      const float* dyr = pdy + r * n;
      const float* xr = px + r * n;
      float* dxr = pdx + r * n;
      const float mu = pm[r], rs = pr[r];
      float sg = 0.0f, sgx = 0.0f;
#pragma omp simd reduction(+ : sg, sgx)
      for (int64_t j = 0; j < n; ++j) {
        const float g = dyr[j] * pw[j];
        sg += g;
        sgx += g * (xr[j] - mu) * rs;
      }
      const float mg = sg / static_cast<float>(n), mgx = sgx / static_cast<float>(n);
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) {
        const float xhat = (xr[j] - mu) * rs;
        const float d = dyr[j];
        pdw[j] += d * xhat;
        pdb[j] += d;
        dxr[j] = rs * (d * pw[j] - mg - xhat * mgx);
      }
    }
  }
  float* pgw = dweight.data<float>();
  float* pgb = dbias.data<float>();
  detail::parallel_for(n, 256, [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) {
      float sw = 0.0f, sb = 0.0f;
      for (int64_t blk = 0; blk < blocks; ++blk) {
        sw += partial[static_cast<std::size_t>(blk * 2 * n + j)];
        sb += partial[static_cast<std::size_t>(blk * 2 * n + n + j)];
      }
      pgw[j] += sw;
      pgb[j] += sb;
    }
  });
}

// ---- GELU -------------------------------------------------------------------------

namespace {
constexpr float kGeluC = 0.7978845608028654f;  // sqrt(2/pi)
constexpr float kGeluA = 0.044715f;
using ArrMap = Eigen::Map<Eigen::ArrayXf>;
using ConstArrMap = Eigen::Map<const Eigen::ArrayXf>;
}  // namespace

void CpuBackend::gelu_forward(const Tensor& x, Tensor& y) {
  detail::check_act(cpu_check, x, "gelu_forward: x");
  detail::check_act(cpu_check, y, "gelu_forward: y");
  check_same_numel(x, y, "gelu_forward: y");
  if (detail::any_16bit({&x, &y})) {  // 16-bit activations: f32 math, y rounded once
    Tensor y32 = detail::f32_out(y);
    gelu_forward(detail::as_f32(*this, x), y32);
    detail::round_out(*this, y32, y);
    return;
  }
  const float* px = x.data<float>();
  float* py = y.data<float>();
  detail::parallel_for(x.numel(), detail::kCpuChunk, [&](int64_t i0, int64_t i1) {
    ConstArrMap xa(px + i0, i1 - i0);
    ArrMap ya(py + i0, i1 - i0);
    ya = 0.5f * xa * (1.0f + (kGeluC * (xa + kGeluA * xa.cube())).tanh());
  });
}

void CpuBackend::gelu_backward(const Tensor& x, const Tensor& dy, Tensor& dx) {
  detail::check_act(cpu_check, x, "gelu_backward: x");
  detail::check_act(cpu_check, dy, "gelu_backward: dy");
  detail::check_act(cpu_check, dx, "gelu_backward: dx");
  check_same_numel(x, dy, "gelu_backward: dy");
  check_same_numel(x, dx, "gelu_backward: dx");
  if (detail::any_16bit({&x, &dy, &dx})) {  // 16-bit activations: f32 math, dx rounded once
    Tensor dx32 = detail::f32_out(dx);
    gelu_backward(detail::as_f32(*this, x), detail::as_f32(*this, dy), dx32);
    detail::round_out(*this, dx32, dx);
    return;
  }
  const float* px = x.data<float>();
  const float* pdy = dy.data<float>();
  float* pdx = dx.data<float>();
  // Sub-chunks of 512: tanh goes to a stack buffer first (dx may alias dy).
  detail::parallel_for(x.numel(), detail::kCpuChunk, [&](int64_t i0, int64_t i1) {
    alignas(64) float tbuf[512];
    for (int64_t s0 = i0; s0 < i1; s0 += 512) {
      const int64_t len = std::min<int64_t>(512, i1 - s0);
      ConstArrMap xa(px + s0, len);
      ConstArrMap dya(pdy + s0, len);
      ArrMap t(tbuf, len);
      t = (kGeluC * (xa + kGeluA * xa.cube())).tanh();
      ArrMap(pdx + s0, len) =
          dya * (0.5f * (1.0f + t) + 0.5f * xa * (1.0f - t.square()) * kGeluC * (1.0f + 3.0f * kGeluA * xa.square()));
    }
  });
}

}  // namespace pp3d
