// Shared helpers of the tensor-parallel tests (run under mpirun): failure
// collection that never aborts a rank (so collectives stay matched),
// tolerant comparisons, double-precision references and shard gathering.
#pragma once

#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "pp3d/comm/communicator.h"
#include "pp3d/core/tensor.h"
#include "pp3d/core/parameter.h"

namespace pp3d::tptest {

inline std::vector<std::string>& failures() {
  static std::vector<std::string> f;
  return f;
}

#define TP_EXPECT(cond, ...)                                                                       \
  do {                                                                                             \
    if (!(cond))                                                                                   \
      ::pp3d::tptest::failures().push_back(fmt::format("{}:{}: {}: ", __FILE__, __LINE__, #cond) + \
                                           fmt::format(__VA_ARGS__));                              \
  } while (0)

// |got - want| <= atol + rtol * |want| element-wise; records the first offender.
inline bool expect_close(const std::vector<float>& got, const std::vector<double>& want, double atol, double rtol,
                         const std::string& what) {
  if (got.size() != want.size()) {
    failures().push_back(fmt::format("{}: {} values, want {}", what, got.size(), want.size()));
    return false;
  }
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double tol = atol + rtol * std::fabs(want[i]);
    if (!(std::fabs(static_cast<double>(got[i]) - want[i]) <= tol)) {
      failures().push_back(fmt::format("{}: element {} of {} is {} want {} (tol {:.3g})", what, i, got.size(), got[i],
                                       want[i], tol));
      return false;
    }
  }
  return true;
}
inline bool expect_close(const Tensor& got, const std::vector<double>& want, double atol, double rtol,
                         const std::string& what) {
  return expect_close(got.to_vector(), want, atol, rtol, what);
}
inline std::vector<double> to_double(const Tensor& t) {
  const std::vector<float> v = t.to_vector();
  return {v.begin(), v.end()};
}

inline std::vector<float> random_floats(std::size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}
inline Tensor random_tensor(const Shape& s, uint32_t seed) {
  return Tensor::from_vector(s, random_floats(static_cast<std::size_t>(shape_numel(s)), seed));
}

// The full tensor of a TP-sharded parameter (`values` = value or grad of p):
// all-gathers every rank's shard over `tp` and places it by p.shard (rank r
// holds offset r * length). Unsharded parameters are returned as they are.
inline Tensor gather_full(const Parameter& p, const Tensor& values, Communicator& tp) {
  if (!p.shard.sharded()) return values.clone();
  const int n = tp.size();
  const int64_t local = values.numel();
  Tensor all = Tensor::zeros({n * local});
  tp.all_gather(values, all);
  Tensor full = Tensor::zeros(p.global_shape);
  const Shape ls = values.shape();
  const int64_t grows = p.global_shape[0], gcols = p.global_shape.size() == 2 ? p.global_shape[1] : 1;
  const int64_t lrows = ls[0], lcols = ls.size() == 2 ? ls[1] : 1;
  const float* src = all.data<float>();
  float* dst = full.data<float>();
  for (int r = 0; r < n; ++r) {
    const int64_t off = r * p.shard.length;
    auto to_global = [&](int64_t l, int64_t extent) {
      return (l / p.shard.length) * (extent / p.shard.segments) + off + l % p.shard.length;
    };
    for (int64_t i = 0; i < lrows; ++i) {
      const int64_t gi = p.shard.dim == 0 ? to_global(i, grows) : i;
      for (int64_t j = 0; j < lcols; ++j) {
        const int64_t gj = p.shard.dim == 1 ? to_global(j, gcols) : j;
        dst[gi * gcols + gj] = src[r * local + i * lcols + j];
      }
    }
  }
  return full;
}

// Sums a double over the group to ~1e-14 relative precision with f32
// collectives (hi/lo split): the SumSquaresReducer of the TP tests.
inline double all_reduce_double(Communicator& c, double x) {
  const float hi = static_cast<float>(x);
  const float lo = static_cast<float>(x - static_cast<double>(hi));
  Tensor t = Tensor::from_vector({2}, {hi, lo});
  c.all_reduce(t);
  return static_cast<double>(t.data<float>()[0]) + static_cast<double>(t.data<float>()[1]);
}

// Gathers every rank's failure count; prints the failures (prefixed by rank);
// returns the process exit code (0 only when no rank failed).
inline int finish(Communicator& world, const char* name) {
  for (const auto& f : failures()) std::fprintf(stderr, "[rank %d] FAIL %s\n", world.rank(), f.c_str());
  Tensor n = Tensor::from_vector_i32({1}, {static_cast<int32_t>(failures().size())});
  world.all_reduce(n);
  const int total = n.data<int32_t>()[0];
  if (world.rank() == 0)
    std::printf("%s (%d ranks): %s (%d failure(s) over all ranks)\n", name, world.size(),
                total == 0 ? "PASSED" : "FAILED", total);
  return total == 0 ? 0 : 1;
}

}  // namespace pp3d::tptest
