// Helpers for the GPU op tests: random host tensors, host<->device copies, and
// comparisons that count failures and print one line per check (plain main(),
// no test framework, so the binaries also run by hand on a GPU machine).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "pp3d/backend/backend.h"
#include "pp3d/core/device.h"
#include "pp3d/core/tensor.h"

namespace pp3d::cudatest {

inline int& failures() {
  static int n = 0;
  return n;
}

// Host tensor of `dt` holding values uniform in [lo, hi) (rounded to dt), reproducible from seed.
inline Tensor rand_host(const Shape& shape, uint32_t seed, DType dt = DType::F32, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(static_cast<std::size_t>(shape_numel(shape)));
  for (auto& x : v) x = dist(gen);
  Tensor t = Tensor::empty(shape, dt);
  t.fill_from(v);
  return t;
}

inline Tensor to_gpu(const Tensor& h) { return h.to(Device::cuda(0)); }
inline std::vector<float> to_host(const Tensor& d) { return d.to(Device::cpu()).to_vector(); }

// Raw bytes of a tensor (any device), for bitwise comparisons.
inline std::vector<uint8_t> bytes_of(const Tensor& t) {
  Tensor h = t.device().is_cpu() ? t : t.to(Device::cpu());
  const auto* p = static_cast<const uint8_t*>(h.raw());
  return {p, p + h.nbytes()};
}

struct Tol {
  double atol, rtol;
};
// Per-dtype tolerances for rounded outputs (TransformerEngine's: bf16 1e-5/1e-2, f16 1e-5/1e-3).
inline Tol tol_for(DType t, Tol f32) {
  if (t == DType::BF16) return {1e-5, 1e-2};
  if (t == DType::F16) return {1e-5, 1e-3};
  return f32;
}

// |got - want| <= atol + rtol |want| element by element; equal values (incl. inf) and NaN pairs pass.
inline void expect_close(const std::vector<float>& got, const std::vector<float>& want, Tol tol,
                         const std::string& what) {
  if (got.size() != want.size()) {
    std::printf("FAIL %s: %zu values, expected %zu\n", what.c_str(), got.size(), want.size());
    ++failures();
    return;
  }
  double worst = 0.0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    const double g = got[i], w = want[i];
    if (g == w || (std::isnan(g) && std::isnan(w))) continue;
    const double err = std::fabs(g - w);
    if (!(err <= tol.atol + tol.rtol * std::fabs(w))) {
      std::printf("FAIL %s at %zu: got %.9g want %.9g (atol %g rtol %g)\n", what.c_str(), i, g, w, tol.atol,
                  tol.rtol);
      ++failures();
      return;
    }
    worst = std::max(worst, err);
  }
  std::printf("ok   %s (%zu values, max abs err %.3g)\n", what.c_str(), want.size(), worst);
}

inline void expect_close(const Tensor& got, const Tensor& want, Tol tol, const std::string& what) {
  expect_close(to_host(got), want.device().is_cpu() ? want.to_vector() : to_host(want), tol, what);
}

inline void expect_bitwise(const Tensor& got, const Tensor& want, const std::string& what) {
  const auto g = bytes_of(got), w = bytes_of(want);
  if (g.size() != w.size() || std::memcmp(g.data(), w.data(), g.size()) != 0) {
    std::size_t i = 0;
    while (i < g.size() && i < w.size() && g[i] == w[i]) ++i;
    std::printf("FAIL %s: bytes differ (first at byte %zu of %zu)\n", what.c_str(), i, w.size());
    ++failures();
    return;
  }
  std::printf("ok   %s (%zu bytes, bitwise)\n", what.c_str(), w.size());
}

// Any float tensor (any device) as host f32 values.
inline std::vector<float> to_host_f32(const Tensor& t) {
  Tensor h = t.device().is_cpu() ? t : t.to(Device::cpu());
  if (h.dtype() == DType::F32) return h.to_vector();
  Tensor out = Tensor::empty(h.shape(), DType::F32);
  make_cpu_backend()->cast(h, out);
  return out.to_vector();
}

// One-ulp rounding flips of a 16-bit output allowed (the f32 sums' order differs between implementations).
inline Tol one_ulp_tol(DType dt) {
  if (dt == DType::BF16) return {1e-3, 1.6e-2};
  return dt == DType::F16 ? Tol{1e-4, 2e-3} : Tol{1e-5, 1e-5};
}

// Relative L2 error ||got - want|| / ||want|| (absolute when want is 0), for fused
// kernels whose elementwise differences are not bounded by one rounding.
inline double rel_l2(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    num += (static_cast<double>(got[i]) - want[i]) * (static_cast<double>(got[i]) - want[i]);
    den += static_cast<double>(want[i]) * want[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

inline void expect_rel_l2(const std::vector<float>& got, const std::vector<float>& want, double bound,
                   const std::string& what) {
  const double r = rel_l2(got, want);
  const bool ok = got.size() == want.size() && r <= bound;
  std::printf("%s %s (rel L2 %.3e, bound %.1e)\n", ok ? "ok  " : "FAIL", what.c_str(), r, bound);
  if (!ok) ++failures();
}

inline void expect_max_abs(const std::vector<float>& got, const std::vector<float>& want, double bound,
                    const std::string& what) {
  double worst = 0;
  for (std::size_t i = 0; i < want.size(); ++i) worst = std::max(worst, std::fabs(double(got[i]) - want[i]));
  const bool ok = worst <= bound;
  std::printf("%s %s (max abs %.3e, bound %.1e)\n", ok ? "ok  " : "FAIL", what.c_str(), worst, bound);
  if (!ok) ++failures();
}

inline std::string tag(const char* op, std::initializer_list<int64_t> dims, const char* extra = "") {
  std::string s = op;
  s += " [";
  bool first = true;
  for (int64_t d : dims) {
    s += (first ? "" : ",") + std::to_string(d);
    first = false;
  }
  return s + "]" + extra;
}

// The reference CPU backend and the GPU one, compared on the same inputs.
struct Ctx {
  std::unique_ptr<Backend> cpu = make_cpu_backend();
  std::unique_ptr<Backend> gpu = make_backend(Device::cuda(0));
};

// True (after printing why) when no GPU is visible: main() then returns 77 (ctest: skipped).
inline bool skip_without_gpu() {
  if (cuda_device_count() > 0) return false;
  std::printf("no GPU visible: skipping\n");
  return true;
}

inline int finish() {
  std::printf("%s\n", failures() ? "FAILED" : "all GPU checks passed");
  return failures() ? 1 : 0;
}

}  // namespace pp3d::cudatest
