// Double-precision scalar collectives (raw bit patterns, summed in rank order).
#include "pp3d/comm/collectives_util.h"

#include <cstdint>
#include <cstring>

#include "pp3d/core/error.h"

namespace pp3d {

std::vector<double> all_reduce_sum_doubles(Communicator& c, const std::vector<double>& x) {
  const int n = c.size();
  if (n == 1 || x.empty()) return x;
  const auto words = static_cast<int64_t>(2 * x.size());
  std::vector<int32_t> w(static_cast<std::size_t>(words));
  std::memcpy(w.data(), x.data(), x.size() * sizeof(double));
  Tensor all = Tensor::zeros({words * n}, DType::I32);
  c.all_gather(Tensor::from_vector_i32({words}, w), all);
  std::vector<double> sum(x.size(), 0.0);
  for (int r = 0; r < n; ++r) {
    const int32_t* src = all.data<int32_t>() + r * words;
    for (std::size_t i = 0; i < x.size(); ++i) {
      double v = 0;
      std::memcpy(&v, src + 2 * i, sizeof v);
      sum[i] += v;
    }
  }
  return sum;
}

std::vector<double> all_gather_double(Communicator& c, double x) {
  const int n = c.size();
  if (n == 1) return {x};
  std::vector<int32_t> w(2);
  std::memcpy(w.data(), &x, sizeof x);
  Tensor all = Tensor::zeros({2 * static_cast<int64_t>(n)}, DType::I32);
  c.all_gather(Tensor::from_vector_i32({2}, w), all);
  std::vector<double> out(static_cast<std::size_t>(n));
  for (int r = 0; r < n; ++r) std::memcpy(&out[static_cast<std::size_t>(r)], all.data<int32_t>() + 2 * r, sizeof x);
  return out;
}

double all_reduce_sum_double(Communicator& c, double x) { return all_reduce_sum_doubles(c, {x})[0]; }

double broadcast_double(Communicator& c, double x, int root) {
  PP3D_CHECK(root >= 0 && root < c.size(), "broadcast_double: root {} outside group '{}' of size {}", root, c.name(),
             c.size());
  if (c.size() == 1) return x;
  std::vector<int32_t> w(2);
  std::memcpy(w.data(), &x, sizeof x);
  Tensor t = Tensor::from_vector_i32({2}, w);
  c.broadcast(t, root);
  double out = 0;
  std::memcpy(&out, t.data<int32_t>(), sizeof out);
  return out;
}

}  // namespace pp3d
