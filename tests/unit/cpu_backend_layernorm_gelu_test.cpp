// CpuBackend LayerNorm and GELU: forwards against double-precision loops,
// backwards against central finite differences of those double references
// (loss L = sum(y * R) for a random R), accumulation and overwrite semantics,
// and thread-count independence of the LayerNorm parameter gradients.
#include <cmath>

#include "pp3d/backend/backend.h"
#include "test_util.h"

using namespace pp3d;
using namespace pp3d::test;

namespace {

constexpr double kEps = 1e-5;

// y = (x - mean) / sqrt(var + eps) * w + b per row, in double.
std::vector<double> ref_layernorm(const std::vector<double>& x, const std::vector<double>& w,
                                  const std::vector<double>& b, int64_t rows, int64_t n,
                                  std::vector<double>* mean = nullptr, std::vector<double>* rstd = nullptr) {
  std::vector<double> y(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    const double* xr = x.data() + r * n;
    double mu = 0.0, var = 0.0;
    for (int64_t j = 0; j < n; ++j) mu += xr[j];
    mu /= static_cast<double>(n);
    for (int64_t j = 0; j < n; ++j) var += (xr[j] - mu) * (xr[j] - mu);
    const double rs = 1.0 / std::sqrt(var / static_cast<double>(n) + kEps);
    for (int64_t j = 0; j < n; ++j)
      y[static_cast<std::size_t>(r * n + j)] = (xr[j] - mu) * rs * w[static_cast<std::size_t>(j)] + b[static_cast<std::size_t>(j)];
    if (mean) mean->push_back(mu);
    if (rstd) rstd->push_back(rs);
  }
  return y;
}

double ref_gelu(double x) {
  const double c = std::sqrt(2.0 / M_PI);
  return 0.5 * x * (1.0 + std::tanh(c * (x + 0.044715 * x * x * x)));
}

std::vector<std::size_t> sample_indices(std::size_t n, std::size_t count, uint32_t seed) {
  std::vector<std::size_t> idx;
  std::mt19937 gen(seed);
  for (std::size_t i = 0; i < count; ++i) idx.push_back(gen() % n);
  return idx;
}

}  // namespace

TEST_CASE("cpu layernorm forward/backward vs double reference and finite differences",
          "[cpu_backend][layernorm]") {
  auto be = make_cpu_backend();
  for (auto [rows, n] : {std::pair<int64_t, int64_t>{3, 1}, {1, 13}, {7, 13}, {300, 77}}) {
    CAPTURE(rows, n);
    Tensor x = random_tensor({rows, n}, 1, -2.0f, 3.0f), w = random_tensor({n}, 2, 0.5f, 1.5f);
    Tensor b = random_tensor({n}, 3), r = random_tensor({rows, n}, 4);
    Tensor y = Tensor::empty({rows, n}), mean = Tensor::empty({rows}), rstd = Tensor::empty({rows});
    be->layernorm_forward(x, w, b, y, mean, rstd, static_cast<float>(kEps));
    std::vector<double> want_mean, want_rstd;
    const auto dx0 = to_double(x), dw0 = to_double(w), db0 = to_double(b), dr = to_double(r);
    require_close(y, ref_layernorm(dx0, dw0, db0, rows, n, &want_mean, &want_rstd), 1e-5, 1e-5, "ln y");
    require_close(mean, want_mean, 1e-6, 1e-6, "ln mean");
    require_close(rstd, want_rstd, 1e-6, 1e-5, "ln rstd");

    // Backward: dx is overwritten (start from garbage), dweight/dbias accumulate.
    Tensor dx = random_tensor({rows, n}, 5, 100.0f, 200.0f);
    Tensor dw = random_tensor({n}, 6), dbias = random_tensor({n}, 7);
    const auto dw_before = to_double(dw), db_before = to_double(dbias);
    be->layernorm_backward(r, x, w, mean, rstd, dx, dw, dbias);

    // One parameter vector [x | w | b] for the finite differences.
    std::vector<double> params = dx0;
    params.insert(params.end(), dw0.begin(), dw0.end());
    params.insert(params.end(), db0.begin(), db0.end());
    const std::size_t nx = dx0.size(), nn = static_cast<std::size_t>(n);
    auto loss = [&](const std::vector<double>& p) {
      std::vector<double> xs(p.begin(), p.begin() + nx), ws(p.begin() + nx, p.begin() + nx + nn),
          bs(p.begin() + nx + nn, p.end());
      return dot(ref_layernorm(xs, ws, bs, rows, n), dr);
    };
    const bool full = rows * n < 1000;
    std::vector<std::size_t> which;
    if (!full) {
      which = sample_indices(nx, 150, 8);
      for (std::size_t j = 0; j < 2 * nn; ++j) which.push_back(nx + j);
    }
    const auto g = fd_grad(loss, params, 1e-6, which);
    std::vector<float> got = dx.to_vector();
    const auto gw = dw.to_vector(), gb = dbias.to_vector();
    for (std::size_t j = 0; j < nn; ++j) got.push_back(static_cast<float>(gw[j] - dw_before[j]));
    for (std::size_t j = 0; j < nn; ++j) got.push_back(static_cast<float>(gb[j] - db_before[j]));
    if (!full) {
      // Only the sampled entries of dx were differenced.
      for (std::size_t i = 0; i < nx; ++i)
        if (std::find(which.begin(), which.end(), i) == which.end()) got[i] = 0.0f;
    }
    require_close(got, g, 1e-4, 1e-4, "ln backward vs finite differences");
  }
  Tensor x = Tensor::zeros({4, 5}), w = Tensor::zeros({5}), bad = Tensor::zeros({6}), m = Tensor::zeros({4});
  Tensor y = Tensor::zeros({4, 5});
  CHECK_THROWS_WITH(be->layernorm_forward(x, w, bad, y, m, m, 1e-5f), Catch::Contains("bias"));
  CHECK_THROWS_WITH(be->layernorm_forward(x, w, w, y, bad, m, 1e-5f), Catch::Contains("mean"));
}

TEST_CASE("cpu layernorm parameter grads are bitwise independent of the thread count",
          "[cpu_backend][layernorm][determinism]") {
  auto be = make_cpu_backend();
  const int64_t rows = 517, n = 96;
  Tensor x = random_tensor({rows, n}, 11), w = random_tensor({n}, 12), b = random_tensor({n}, 13);
  Tensor dy = random_tensor({rows, n}, 14), y = Tensor::empty({rows, n});
  Tensor mean = Tensor::empty({rows}), rstd = Tensor::empty({rows});
  be->layernorm_forward(x, w, b, y, mean, rstd, 1e-5f);
  Tensor dx[2], dw[2], db[2];
  for (int t = 0; t < 2; ++t) {
    dx[t] = Tensor::empty({rows, n});
    dw[t] = Tensor::zeros({n});
    db[t] = Tensor::zeros({n});
    with_threads(t + 1, [&] { be->layernorm_backward(dy, x, w, mean, rstd, dx[t], dw[t], db[t]); });
  }
  REQUIRE(bitwise_equal(dx[0], dx[1]));
  REQUIRE(bitwise_equal(dw[0], dw[1]));
  REQUIRE(bitwise_equal(db[0], db[1]));
}

TEST_CASE("cpu gelu forward/backward vs double reference and finite differences", "[cpu_backend][gelu]") {
  auto be = make_cpu_backend();
  for (int64_t n : {int64_t{1}, int64_t{13}, int64_t{40000}}) {
    CAPTURE(n);
    Tensor x = random_tensor({n}, 21, -6.0f, 6.0f), dy = random_tensor({n}, 22);
    Tensor y = Tensor::empty({n}), dx = random_tensor({n}, 23, 50.0f, 60.0f);
    be->gelu_forward(x, y);
    const auto xd = to_double(x), dyd = to_double(dy);
    std::vector<double> want(xd.size()), gwant(xd.size());
    for (std::size_t i = 0; i < xd.size(); ++i) {
      want[i] = ref_gelu(xd[i]);
      const double h = 1e-6;
      gwant[i] = dyd[i] * (ref_gelu(xd[i] + h) - ref_gelu(xd[i] - h)) / (2 * h);
    }
    require_close(y, want, 1e-6, 1e-5, "gelu y");
    be->gelu_backward(x, dy, dx);
    require_close(dx, gwant, 1e-5, 1e-4, "gelu dx vs finite differences");
    be->gelu_backward(x, dy, dy);  // dx may alias dy
    require_close(dy, gwant, 1e-5, 1e-4, "gelu dx aliasing dy");
  }
  Tensor a = Tensor::zeros({4}), b = Tensor::zeros({5});
  CHECK_THROWS_WITH(be->gelu_forward(a, b), Catch::Contains("gelu_forward: y"));
}
