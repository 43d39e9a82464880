// CpuBackend causal attention: forward (out and lse) against a double loop,
// backward against central finite differences of that reference, causal
// masking, and bitwise independence of the thread count.
#include <cmath>

#include "pp3d/backend/backend.h"
#include "test_util.h"

using namespace pp3d;
using namespace pp3d::test;

namespace {

struct Dims {
  int64_t B, T, H, D;
  std::size_t qkv(int64_t b, int64_t t, int64_t s, int64_t h, int64_t d) const {
    return static_cast<std::size_t>((((b * T + t) * 3 + s) * H + h) * D + d);
  }
  std::size_t out(int64_t b, int64_t t, int64_t h, int64_t d) const {
    return static_cast<std::size_t>(((b * T + t) * H + h) * D + d);
  }
};

// Causal softmax attention in double; fills out [B,T,H,D] and lse [B,H,T].
void ref_attention(const Dims& g, const std::vector<double>& qkv, double scale, std::vector<double>& out,
                   std::vector<double>* lse = nullptr) {
  out.assign(static_cast<std::size_t>(g.B * g.T * g.H * g.D), 0.0);
  if (lse) lse->assign(static_cast<std::size_t>(g.B * g.H * g.T), 0.0);
  std::vector<double> s(static_cast<std::size_t>(g.T));
  for (int64_t b = 0; b < g.B; ++b)
    for (int64_t h = 0; h < g.H; ++h)
      for (int64_t i = 0; i < g.T; ++i) {
        double mx = -INFINITY;
        for (int64_t j = 0; j <= i; ++j) {
          double dot = 0.0;
          for (int64_t d = 0; d < g.D; ++d) dot += qkv[g.qkv(b, i, 0, h, d)] * qkv[g.qkv(b, j, 1, h, d)];
          s[static_cast<std::size_t>(j)] = scale * dot;
          mx = std::max(mx, scale * dot);
        }
        double sum = 0.0;
        for (int64_t j = 0; j <= i; ++j) sum += std::exp(s[static_cast<std::size_t>(j)] - mx);
        for (int64_t j = 0; j <= i; ++j) {
          const double p = std::exp(s[static_cast<std::size_t>(j)] - mx) / sum;
          for (int64_t d = 0; d < g.D; ++d) out[g.out(b, i, h, d)] += p * qkv[g.qkv(b, j, 2, h, d)];
        }
        if (lse) (*lse)[static_cast<std::size_t>((b * g.H + h) * g.T + i)] = mx + std::log(sum);
      }
}

}  // namespace

TEST_CASE("cpu attention forward/backward vs double reference and finite differences",
          "[cpu_backend][attention]") {
  auto be = make_cpu_backend();
  const Dims cases[] = {{1, 1, 1, 1}, {2, 13, 3, 5}, {1, 130, 2, 4}};
  uint32_t seed = 1;
  for (const Dims& g : cases) {
    CAPTURE(g.B, g.T, g.H, g.D);
    const double scale = 1.0 / std::sqrt(static_cast<double>(g.D));
    Tensor qkv = random_tensor({g.B, g.T, 3, g.H, g.D}, seed++, -1.5f, 1.5f);
    Tensor out = Tensor::empty({g.B, g.T, g.H, g.D}), lse = Tensor::empty({g.B, g.H, g.T});
    be->attention_forward(qkv, out, lse, static_cast<float>(scale));
    const auto q = to_double(qkv);
    std::vector<double> want_out, want_lse;
    ref_attention(g, q, scale, want_out, &want_lse);
    require_close(out, want_out, 1e-5, 1e-5, "attention out");
    require_close(lse, want_lse, 1e-5, 1e-5, "attention lse");

    Tensor r = random_tensor(out.shape(), seed++);
    Tensor dqkv = random_tensor(qkv.shape(), seed++, 10.0f, 20.0f);  // overwritten
    be->attention_backward(r, qkv, out, lse, dqkv, static_cast<float>(scale));
    const auto rd = to_double(r);
    auto loss = [&](const std::vector<double>& x) {
      std::vector<double> o;
      ref_attention(g, x, scale, o);
      return dot(o, rd);
    };
    std::vector<std::size_t> which;
    std::vector<float> got = dqkv.to_vector();
    if (q.size() > 2000) {  // sample the large case, every kind (q/k/v) and both ends of T
      for (std::size_t i = 0; i < q.size(); i += 13) which.push_back(i);
      std::vector<float> masked(got.size(), 0.0f);
      for (std::size_t i : which) masked[i] = got[i];
      got = masked;
    }
    require_close(got, fd_grad(loss, q, 1e-6, which), 1e-4, 1e-4, "attention dqkv vs finite differences");
  }
}

TEST_CASE("cpu attention is causal", "[cpu_backend][attention]") {
  auto be = make_cpu_backend();
  const Dims g{2, 75, 2, 8};
  Tensor qkv = random_tensor({g.B, g.T, 3, g.H, g.D}, 7);
  Tensor out1 = Tensor::empty({g.B, g.T, g.H, g.D}), lse1 = Tensor::empty({g.B, g.H, g.T});
  Tensor out2 = Tensor::empty(out1.shape()), lse2 = Tensor::empty(lse1.shape());
  be->attention_forward(qkv, out1, lse1, 0.3f);
  const int64_t t_change = 70;  // in the second query block
  for (int64_t i = 0; i < 3 * g.H * g.D; ++i) qkv.data<float>()[(1 * g.T + t_change) * 3 * g.H * g.D + i] += 0.5f;
  be->attention_forward(qkv, out2, lse2, 0.3f);
  const std::size_t row = static_cast<std::size_t>(g.H * g.D);
  const auto o1 = out1.to_vector(), o2 = out2.to_vector();
  for (int64_t b = 0; b < g.B; ++b)
    for (int64_t t = 0; t < g.T; ++t) {
      const std::size_t off = static_cast<std::size_t>(b * g.T + t) * row;
      const bool same = std::equal(o1.begin() + off, o1.begin() + off + row, o2.begin() + off);
      CAPTURE(b, t);
      // Only batch 1 saw the change, and only from t_change on.
      REQUIRE(same == (b == 0 || t < t_change));
    }
}

TEST_CASE("cpu attention is bitwise independent of the thread count", "[cpu_backend][attention][determinism]") {
  auto be = make_cpu_backend();
  const Dims g{2, 70, 3, 8};
  Tensor qkv = random_tensor({g.B, g.T, 3, g.H, g.D}, 9), dout = random_tensor({g.B, g.T, g.H, g.D}, 10);
  Tensor out[2], lse[2], dqkv[2];
  for (int t = 0; t < 2; ++t) {
    out[t] = Tensor::empty(dout.shape());
    lse[t] = Tensor::empty({g.B, g.H, g.T});
    dqkv[t] = Tensor::empty(qkv.shape());
    with_threads(t + 1, [&] {
      be->attention_forward(qkv, out[t], lse[t], 0.35f);
      be->attention_backward(dout, qkv, out[t], lse[t], dqkv[t], 0.35f);
    });
  }
  REQUIRE(bitwise_equal(out[0], out[1]));
  REQUIRE(bitwise_equal(lse[0], lse[1]));
  REQUIRE(bitwise_equal(dqkv[0], dqkv[1]));
}

TEST_CASE("cpu attention checks its arguments", "[cpu_backend][attention]") {
  auto be = make_cpu_backend();
  Tensor qkv = Tensor::zeros({1, 4, 3, 2, 8}), out = Tensor::zeros({1, 4, 2, 8}), lse = Tensor::zeros({1, 2, 4});
  Tensor bad_qkv = Tensor::zeros({1, 4, 2, 2, 8}), bad_lse = Tensor::zeros({1, 4, 2});
  CHECK_THROWS_WITH(be->attention_forward(bad_qkv, out, lse, 1.0f), Catch::Contains("qkv"));
  CHECK_THROWS_WITH(be->attention_forward(qkv, out, bad_lse, 1.0f), Catch::Contains("lse"));
  Tensor dqkv = Tensor::zeros({1, 4, 3, 2, 7});
  CHECK_THROWS_WITH(be->attention_backward(out, qkv, out, lse, dqkv, 1.0f), Catch::Contains("dqkv"));
}
