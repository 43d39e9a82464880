// Shared helpers for unit tests: random data, tolerant comparisons against
// double-precision references, central finite differences and a thread-count
// switch. Header-only; tests use them from the main thread only.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "pp3d/core/tensor.h"

namespace pp3d::test {

// n values uniform in [lo, hi), reproducible from `seed`.
inline std::vector<float> random_floats(std::size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

inline Tensor random_tensor(const Shape& shape, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  return Tensor::from_vector(shape, random_floats(static_cast<std::size_t>(shape_numel(shape)), seed, lo, hi));
}

// Same dtype, size and bytes.
inline bool bits_equal(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.numel() == b.numel() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

// ||a - b|| / ||b|| (L2, in double).
inline double rel_l2(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    num += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    den += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

inline std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }
inline std::vector<double> to_double(const Tensor& t) { return to_double(t.to_vector()); }

// Checks every element of `got` against `want` within atol + rtol * |want|,
// reporting the first offending index.
inline void require_close(const std::vector<float>& got, const std::vector<double>& want, double atol, double rtol,
                          const std::string& what) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double tol = atol + rtol * std::fabs(want[i]);
    if (!(std::fabs(static_cast<double>(got[i]) - want[i]) <= tol)) {
      INFO(what << ": element " << i << " got " << got[i] << " want " << want[i] << " (tol " << tol << ")");
      REQUIRE(false);
    }
  }
}
inline void require_close(const Tensor& got, const std::vector<double>& want, double atol, double rtol,
                          const std::string& what) {
  require_close(got.to_vector(), want, atol, rtol, what);
}

// Central finite differences of a scalar double function at x (step eps).
// `which` (optional) restricts the evaluation to some indices; others are 0.
inline std::vector<double> fd_grad(const std::function<double(const std::vector<double>&)>& f,
                                   std::vector<double> x, double eps = 1e-6,
                                   const std::vector<std::size_t>& which = {}) {
  std::vector<double> g(x.size(), 0.0);
  auto one = [&](std::size_t i) {
    const double x0 = x[i];
    x[i] = x0 + eps;
    const double fp = f(x);
    x[i] = x0 - eps;
    const double fm = f(x);
    x[i] = x0;
    g[i] = (fp - fm) / (2.0 * eps);
  };
  if (which.empty())
    for (std::size_t i = 0; i < x.size(); ++i) one(i);
  else
    for (std::size_t i : which) one(i);
  return g;
}

// sum_i y_i * r_i: the scalar loss whose gradient w.r.t. y is r.
inline double dot(const std::vector<double>& y, const std::vector<double>& r) {
  double s = 0.0;
  for (std::size_t i = 0; i < y.size(); ++i) s += y[i] * r[i];
  return s;
}

inline bool bitwise_equal(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

// Runs f with the OpenMP thread count set to n, restoring the previous value.
template <typename F>
void with_threads(int n, F&& f) {
  const int before = omp_get_max_threads();
  omp_set_num_threads(n);
  try {
    f();
  } catch (...) {
    omp_set_num_threads(before);
    throw;
  }
  omp_set_num_threads(before);
}

// bf16 / f16 round trips of an f32 value (what storage in that dtype keeps).
inline double round_bf16(float x) { return bf16_to_f32(f32_to_bf16(x)); }
inline double round_f16(float x) { return f16_to_f32(f32_to_f16(x)); }

}  // namespace pp3d::test
