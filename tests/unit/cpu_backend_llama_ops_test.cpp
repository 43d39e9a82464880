// CpuBackend Llama-family ops: RMSNorm, SwiGLU, RoPE (HF rotate_half) and
// causal grouped-query attention. Forward against double loops written from
// the math (not from the kernels), backward against central finite
// differences of those references, odd sizes, and thread-count independence.
#include <cmath>

#include "pp3d/backend/backend.h"
#include "test_util.h"

using namespace pp3d;
using namespace pp3d::test;

namespace {

// ---- RMSNorm -------------------------------------------------------------------------

std::vector<double> ref_rmsnorm(const std::vector<double>& x, const std::vector<double>& w, int64_t n, double eps) {
  std::vector<double> y(x.size());
  for (std::size_t r = 0; r < x.size() / n; ++r) {
    double ss = 0;
    for (int64_t j = 0; j < n; ++j) ss += x[r * n + j] * x[r * n + j];
    const double rs = 1.0 / std::sqrt(ss / n + eps);
    for (int64_t j = 0; j < n; ++j) y[r * n + j] = x[r * n + j] * rs * w[j];
  }
  return y;
}

// ---- RoPE: HF's rotate_half written out: q*cos + rotate_half(q)*sin ------------------

std::vector<double> ref_rope(const std::vector<double>& x, int64_t B, int64_t T, int64_t H, int64_t D, int64_t pos0,
                             double theta) {
  std::vector<double> y(x.size());
  const int64_t half = D / 2;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < H; ++h) {
        const std::size_t o = static_cast<std::size_t>(((b * T + t) * H + h) * D);
        for (int64_t d = 0; d < D; ++d) {
          const int64_t i = d % half;  // emb = cat(freqs, freqs)
          const double inv_freq = 1.0 / std::pow(theta, static_cast<double>(2 * i) / D);
          const double a = static_cast<double>(pos0 + t) * inv_freq;
          const double rot = d < half ? -x[o + d + half] : x[o + d - half];  // cat(-x2, x1)
          y[o + d] = x[o + d] * std::cos(a) + rot * std::sin(a);
        }
      }
  return y;
}

// ---- grouped-query attention with repeat_kv ------------------------------------------

struct Gqa {
  int64_t B, T, Hq, Hkv, D;
  std::size_t q(int64_t b, int64_t t, int64_t h, int64_t d) const {
    return static_cast<std::size_t>(((b * T + t) * Hq + h) * D + d);
  }
  std::size_t kv(int64_t b, int64_t t, int64_t h, int64_t d) const {
    return static_cast<std::size_t>(((b * T + t) * Hkv + h) * D + d);
  }
};

// x = q ++ k ++ v (flattened); fills out [B, T, Hq, D] and lse [B, Hq, T].
void ref_gqa(const Gqa& g, const std::vector<double>& x, double scale, std::vector<double>& out,
             std::vector<double>* lse = nullptr) {
  const std::size_t nq = static_cast<std::size_t>(g.B * g.T * g.Hq * g.D), nk = static_cast<std::size_t>(g.B * g.T * g.Hkv * g.D);
  const double* q = x.data();
  const double* k = q + nq;
  const double* v = k + nk;
  out.assign(nq, 0.0);
  if (lse) lse->assign(static_cast<std::size_t>(g.B * g.Hq * g.T), 0.0);
  const int64_t rep = g.Hq / g.Hkv;
  std::vector<double> s(static_cast<std::size_t>(g.T));
  for (int64_t b = 0; b < g.B; ++b)
    for (int64_t h = 0; h < g.Hq; ++h) {
      const int64_t hk = h / rep;  // repeat_kv: kv head j serves query heads [j*rep, (j+1)*rep)
      for (int64_t i = 0; i < g.T; ++i) {
        double mx = -INFINITY;
        for (int64_t j = 0; j <= i; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < g.D; ++d) dot += q[g.q(b, i, h, d)] * k[g.kv(b, j, hk, d)];
          s[static_cast<std::size_t>(j)] = scale * dot;
          mx = std::max(mx, scale * dot);
        }
        double sum = 0;
        for (int64_t j = 0; j <= i; ++j) sum += std::exp(s[static_cast<std::size_t>(j)] - mx);
        for (int64_t j = 0; j <= i; ++j) {
          const double p = std::exp(s[static_cast<std::size_t>(j)] - mx) / sum;
          for (int64_t d = 0; d < g.D; ++d) out[g.q(b, i, h, d)] += p * v[g.kv(b, j, hk, d)];
        }
        if (lse) (*lse)[static_cast<std::size_t>((b * g.Hq + h) * g.T + i)] = mx + std::log(sum);
      }
    }
}

std::vector<double> concat(const std::vector<std::vector<double>>& parts) {
  std::vector<double> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

}  // namespace

TEST_CASE("cpu rmsnorm forward/backward vs double reference and finite differences", "[cpu_backend][llama]") {
  auto be = make_cpu_backend();
  struct Case { int64_t rows, n; float eps; };
  uint32_t seed = 100;
  for (const Case c : {Case{1, 1, 1e-6f}, Case{7, 13, 1e-5f}, Case{300, 96, 1e-6f}}) {
    CAPTURE(c.rows, c.n, c.eps);
    Tensor x = random_tensor({c.rows, c.n}, seed++, -2.0f, 2.0f), w = random_tensor({c.n}, seed++, 0.5f, 1.5f);
    Tensor y = Tensor::empty(x.shape()), rstd = Tensor::empty({c.rows});
    be->rmsnorm_forward(x, w, y, rstd, c.eps);
    const auto xd = to_double(x), wd = to_double(w);
    require_close(y, ref_rmsnorm(xd, wd, c.n, c.eps), 1e-6, 1e-5, "rmsnorm y");

    Tensor r = random_tensor(x.shape(), seed++);
    Tensor dx = random_tensor(x.shape(), seed++, 5.0f, 6.0f);  // overwritten
    Tensor dw = Tensor::from_vector({c.n}, std::vector<float>(static_cast<std::size_t>(c.n), 0.25f));  // accumulated
    be->rmsnorm_backward(r, x, w, rstd, dx, dw);
    const auto rd = to_double(r);
    std::vector<std::size_t> which;
    for (std::size_t i = 0; i < xd.size(); i += xd.size() > 2000 ? 37 : 1) which.push_back(i);
    auto gx = fd_grad([&](const std::vector<double>& xx) { return dot(ref_rmsnorm(xx, wd, c.n, c.eps), rd); }, xd,
                      1e-6, which);
    std::vector<float> got = dx.to_vector(), masked(got.size(), 0.0f);
    for (std::size_t i : which) masked[i] = got[i];
    require_close(masked, gx, 1e-4, 1e-4, "rmsnorm dx vs finite differences");
    auto gw = fd_grad([&](const std::vector<double>& ww) { return dot(ref_rmsnorm(xd, ww, c.n, c.eps), rd); }, wd);
    for (auto& v : gw) v += 0.25;
    require_close(dw, gw, 1e-4, 1e-4, "rmsnorm dweight (+= 0.25) vs finite differences");
  }
}

TEST_CASE("cpu swiglu forward/backward vs double reference and finite differences", "[cpu_backend][llama]") {
  auto be = make_cpu_backend();
  for (const int64_t n : {int64_t{1}, int64_t{37}, int64_t{20000}}) {
    CAPTURE(n);
    Tensor g = random_tensor({n}, 11, -6.0f, 6.0f), u = random_tensor({n}, 12, -2.0f, 2.0f);
    Tensor out = Tensor::empty({n});
    be->swiglu_forward(g, u, out);
    const auto gd = to_double(g), ud = to_double(u);
    auto f = [](const std::vector<double>& gg, const std::vector<double>& uu) {
      std::vector<double> y(gg.size());
      for (std::size_t i = 0; i < gg.size(); ++i) y[i] = gg[i] / (1.0 + std::exp(-gg[i])) * uu[i];
      return y;
    };
    require_close(out, f(gd, ud), 1e-6, 1e-5, "swiglu out");
    Tensor r = random_tensor({n}, 13);
    Tensor dg = Tensor::empty({n}), du = Tensor::empty({n});
    be->swiglu_backward(g, u, r, dg, du);
    const auto rd = to_double(r);
    // Elementwise op: one perturbation of every element at once gives every partial.
    std::vector<double> fg(gd.size()), fu(gd.size());
    const double h = 1e-6;
    for (std::size_t i = 0; i < gd.size(); ++i) {
      const std::vector<double> gi{gd[i]}, ui{ud[i]}, gp{gd[i] + h}, gm{gd[i] - h}, up{ud[i] + h}, um{ud[i] - h};
      fg[i] = rd[i] * (f(gp, ui)[0] - f(gm, ui)[0]) / (2 * h);
      fu[i] = rd[i] * (f(gi, up)[0] - f(gi, um)[0]) / (2 * h);
    }
    require_close(dg, fg, 1e-5, 1e-4, "swiglu dgate vs finite differences");
    require_close(du, fu, 1e-5, 1e-4, "swiglu dup vs finite differences");
    // In place (outputs aliasing the inputs) gives the same bits.
    Tensor g2 = Tensor::from_vector({n}, g.to_vector()), u2 = Tensor::from_vector({n}, u.to_vector());
    be->swiglu_backward(g2, u2, r, g2, u2);
    CHECK(bitwise_equal(g2, dg));
    CHECK(bitwise_equal(u2, du));
  }
}

TEST_CASE("cpu rope forward/backward: HF rotate_half convention, offsets, theta", "[cpu_backend][llama]") {
  auto be = make_cpu_backend();
  struct Case { int64_t B, T, H, D, pos0; float theta; };
  for (const Case c : {Case{1, 1, 1, 2, 0, 10000.0f}, Case{2, 9, 3, 16, 0, 10000.0f}, Case{1, 5, 2, 8, 4093, 500000.0f}}) {
    CAPTURE(c.B, c.T, c.H, c.D, c.pos0, c.theta);
    Tensor x = random_tensor({c.B, c.T, c.H, c.D}, 21);
    Tensor y = Tensor::empty(x.shape());
    be->rope_forward(x, y, c.pos0, c.theta);
    const auto xd = to_double(x);
    require_close(y, ref_rope(xd, c.B, c.T, c.H, c.D, c.pos0, c.theta), 1e-6, 1e-6, "rope y");
    Tensor r = random_tensor(x.shape(), 22), dx = Tensor::empty(x.shape());
    be->rope_backward(r, dx, c.pos0, c.theta);
    const auto rd = to_double(r);
    auto want = fd_grad([&](const std::vector<double>& xx) { return dot(ref_rope(xx, c.B, c.T, c.H, c.D, c.pos0, c.theta), rd); }, xd);
    require_close(dx, want, 1e-6, 1e-5, "rope dx vs finite differences");
    // In place.
    be->rope_forward(x, x, c.pos0, c.theta);
    CHECK(bitwise_equal(x, y));
  }
  // The interleaved (GPT-J) convention rotates pairs (2i, 2i+1): it must differ.
  Tensor x = random_tensor({1, 3, 1, 4}, 23), y = Tensor::empty({1, 3, 1, 4});
  be->rope_forward(x, y, 0, 10000.0f);
  const auto xv = x.to_vector(), yv = y.to_vector();
  const float a = 2.0f;  // position 2, i = 0: angle 2
  CHECK(std::fabs(yv[8] - (xv[8] * std::cos(a) - xv[10] * std::sin(a))) < 1e-6f);
  CHECK(std::fabs(yv[8] - (xv[8] * std::cos(a) - xv[9] * std::sin(a))) > 1e-3f);
  Tensor odd = Tensor::zeros({1, 2, 1, 3});
  CHECK_THROWS_WITH(be->rope_forward(odd, odd, 0, 10000.0f), Catch::Contains("D even"));
}

TEST_CASE("cpu gqa attention forward/backward vs double reference and finite differences",
          "[cpu_backend][llama][attention]") {
  auto be = make_cpu_backend();
  const Gqa cases[] = {{1, 1, 1, 1, 2}, {2, 11, 6, 2, 5}, {1, 9, 4, 1, 3}, {1, 70, 4, 2, 4}, {2, 7, 3, 3, 4}};
  uint32_t seed = 40;
  for (const Gqa& g : cases) {
    CAPTURE(g.B, g.T, g.Hq, g.Hkv, g.D);
    const double scale = 1.0 / std::sqrt(static_cast<double>(g.D));
    Tensor q = random_tensor({g.B, g.T, g.Hq, g.D}, seed++, -1.5f, 1.5f);
    Tensor k = random_tensor({g.B, g.T, g.Hkv, g.D}, seed++, -1.5f, 1.5f);
    Tensor v = random_tensor({g.B, g.T, g.Hkv, g.D}, seed++, -1.5f, 1.5f);
    Tensor out = Tensor::empty(q.shape()), lse = Tensor::empty({g.B, g.Hq, g.T});
    be->gqa_attention_forward(q, k, v, out, lse, static_cast<float>(scale));
    const auto x = concat({to_double(q), to_double(k), to_double(v)});
    std::vector<double> want_out, want_lse;
    ref_gqa(g, x, scale, want_out, &want_lse);
    require_close(out, want_out, 1e-5, 1e-5, "gqa out");
    require_close(lse, want_lse, 1e-5, 1e-5, "gqa lse");

    Tensor r = random_tensor(out.shape(), seed++);
    Tensor dq = random_tensor(q.shape(), seed++, 10.0f, 20.0f), dk = random_tensor(k.shape(), seed++, 10.0f, 20.0f),
           dv = random_tensor(v.shape(), seed++, 10.0f, 20.0f);  // overwritten
    be->gqa_attention_backward(r, q, k, v, out, lse, dq, dk, dv, static_cast<float>(scale));
    const auto rd = to_double(r);
    std::vector<std::size_t> which;
    for (std::size_t i = 0; i < x.size(); i += x.size() > 2000 ? 11 : 1) which.push_back(i);
    auto want = fd_grad(
        [&](const std::vector<double>& xx) {
          std::vector<double> o;
          ref_gqa(g, xx, scale, o);
          return dot(o, rd);
        },
        x, 1e-6, which);
    std::vector<float> got;
    for (const Tensor* t : {&dq, &dk, &dv})
      for (float f : t->to_vector()) got.push_back(f);
    std::vector<float> masked(got.size(), 0.0f);
    for (std::size_t i : which) masked[i] = got[i];
    require_close(masked, want, 1e-4, 1e-4, "gqa dq|dk|dv vs finite differences");
  }
}

TEST_CASE("cpu gqa attention with Hkv = Hq equals the fused MHA op bitwise", "[cpu_backend][llama][attention]") {
  auto be = make_cpu_backend();
  const int64_t B = 2, T = 67, H = 3, D = 8;
  Tensor qkv = random_tensor({B, T, 3, H, D}, 5);
  const auto all = qkv.to_vector();
  std::vector<float> part[3];
  for (int64_t t = 0; t < B * T; ++t)
    for (int s = 0; s < 3; ++s)
      part[s].insert(part[s].end(), all.begin() + (t * 3 + s) * H * D, all.begin() + (t * 3 + s + 1) * H * D);
  Tensor q = Tensor::from_vector({B, T, H, D}, part[0]), k = Tensor::from_vector({B, T, H, D}, part[1]),
         v = Tensor::from_vector({B, T, H, D}, part[2]);
  Tensor o1 = Tensor::empty({B, T, H, D}), l1 = Tensor::empty({B, H, T}), o2 = Tensor::empty(o1.shape()),
         l2 = Tensor::empty(l1.shape());
  be->attention_forward(qkv, o1, l1, 0.3f);
  be->gqa_attention_forward(q, k, v, o2, l2, 0.3f);
  CHECK(bitwise_equal(o1, o2));
  CHECK(bitwise_equal(l1, l2));
  Tensor dout = random_tensor(o1.shape(), 6), dqkv = Tensor::empty(qkv.shape());
  Tensor dq = Tensor::empty(q.shape()), dk = Tensor::empty(k.shape()), dv = Tensor::empty(v.shape());
  be->attention_backward(dout, qkv, o1, l1, dqkv, 0.3f);
  be->gqa_attention_backward(dout, q, k, v, o2, l2, dq, dk, dv, 0.3f);
  const auto d = dqkv.to_vector(), dqv = dq.to_vector(), dkv = dk.to_vector(), dvv = dv.to_vector();
  for (int64_t t = 0; t < B * T; ++t)
    for (int64_t i = 0; i < H * D; ++i) {
      REQUIRE(d[(t * 3 + 0) * H * D + i] == dqv[t * H * D + i]);
      REQUIRE(d[(t * 3 + 1) * H * D + i] == dkv[t * H * D + i]);
      REQUIRE(d[(t * 3 + 2) * H * D + i] == dvv[t * H * D + i]);
    }
}

TEST_CASE("cpu llama ops are bitwise independent of the thread count and check their arguments",
          "[cpu_backend][llama][determinism]") {
  auto be = make_cpu_backend();
  const int64_t B = 2, T = 70, Hq = 4, Hkv = 2, D = 8, C = 96;
  Tensor q = random_tensor({B, T, Hq, D}, 1), k = random_tensor({B, T, Hkv, D}, 2), v = random_tensor({B, T, Hkv, D}, 3);
  Tensor dout = random_tensor(q.shape(), 4), x = random_tensor({B * T * 40, C}, 5), w = random_tensor({C}, 6);
  Tensor res[2][7];
  for (int t = 0; t < 2; ++t) {
    Tensor* o = res[t];
    o[0] = Tensor::empty(q.shape());
    o[1] = Tensor::empty({B, Hq, T});
    o[2] = Tensor::empty(q.shape());
    o[3] = Tensor::empty(k.shape());
    o[4] = Tensor::empty(v.shape());
    o[5] = Tensor::empty(x.shape());
    o[6] = Tensor::zeros({C});
    with_threads(t + 1, [&] {
      be->gqa_attention_forward(q, k, v, o[0], o[1], 0.35f);
      be->gqa_attention_backward(dout, q, k, v, o[0], o[1], o[2], o[3], o[4], 0.35f);
      Tensor y = Tensor::empty(x.shape()), rstd = Tensor::empty({x.size(0)});
      be->rmsnorm_forward(x, w, y, rstd, 1e-6f);
      be->rmsnorm_backward(x, x, w, rstd, o[5], o[6]);
    });
  }
  for (int i = 0; i < 7; ++i) CHECK(bitwise_equal(res[0][i], res[1][i]));
  Tensor k3 = Tensor::zeros({B, T, 3, D});
  Tensor out = Tensor::empty(q.shape()), lse = Tensor::empty({B, Hq, T});
  CHECK_THROWS_WITH(be->gqa_attention_forward(q, k3, k3, out, lse, 1.0f), Catch::Contains("kv heads must divide"));
  Tensor bad_w = Tensor::zeros({C + 1}), y = Tensor::empty(x.shape()), rstd = Tensor::empty({x.size(0)});
  CHECK_THROWS_WITH(be->rmsnorm_forward(x, bad_w, y, rstd, 1e-6f), Catch::Contains("normalised size"));
}
