// CpuBackend::adamw_step against a double-precision AdamW over several steps,
// for an f32 param and for 16-bit params with an f32 master copy.
#include <cmath>

#include "pp3d/backend/backend.h"
#include "test_util.h"

using namespace pp3d;
using namespace pp3d::test;

namespace {

struct RefAdam {
  std::vector<double> p, m, v;
  void step(const std::vector<double>& grad, const AdamWParams& a) {
    const double bc1 = 1.0 - std::pow(a.beta1, static_cast<double>(a.step));
    const double bc2 = 1.0 - std::pow(a.beta2, static_cast<double>(a.step));
    for (std::size_t i = 0; i < p.size(); ++i) {
      const double g = grad[i] * a.grad_scale;
      m[i] = a.beta1 * m[i] + (1.0 - a.beta1) * g;
      v[i] = a.beta2 * v[i] + (1.0 - a.beta2) * g * g;
      const double mhat = m[i] / bc1, vhat = v[i] / bc2;
      p[i] -= a.lr * (mhat / (std::sqrt(vhat) + a.eps) + a.weight_decay * p[i]);
    }
  }
};

}  // namespace

TEST_CASE("cpu adamw matches a double reference over several steps", "[cpu_backend][adamw]") {
  auto be = make_cpu_backend();
  for (int64_t n : {int64_t{1}, int64_t{13}, int64_t{40000}}) {
    for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
      for (bool use_master : {false, true}) {
        if (dt != DType::F32 && !use_master) continue;
        CAPTURE(n, dtype_name(dt), use_master);
        Tensor p32 = random_tensor({n}, 1);
        Tensor m = Tensor::zeros({n}), v = Tensor::zeros({n});
        Tensor param = Tensor::empty({n}, dt);
        be->cast(p32, param);
        Tensor master;
        if (use_master) master = p32.clone();
        RefAdam ref{to_double(use_master ? master : param), std::vector<double>(static_cast<std::size_t>(n), 0.0),
                    std::vector<double>(static_cast<std::size_t>(n), 0.0)};
        AdamWParams a;
        a.lr = 1e-2f;
        a.weight_decay = 0.1f;
        a.grad_scale = 0.5f;
        for (int64_t s = 1; s <= 3; ++s) {
          a.step = s;
          Tensor g = random_tensor({n}, static_cast<uint32_t>(10 + s), -2.0f, 2.0f);
          be->adamw_step(param, g, m, v, master, a);
          ref.step(to_double(g), a);
        }
        require_close(m, ref.m, 1e-6, 1e-5, "adamw m");
        require_close(v, ref.v, 1e-6, 1e-5, "adamw v");
        require_close(use_master ? master : param, ref.p, 1e-6, 1e-5, "adamw p");
        if (use_master) {
          // The param holds the master's values rounded to its dtype.
          Tensor expect = Tensor::empty({n}, dt);
          be->cast(master, expect);
          REQUIRE(bitwise_equal(param, expect));
        }
      }
    }
  }
}

TEST_CASE("cpu adamw checks its arguments", "[cpu_backend][adamw]") {
  auto be = make_cpu_backend();
  Tensor p = Tensor::zeros({4}), g = Tensor::zeros({4}), m = Tensor::zeros({4}), v = Tensor::zeros({4});
  Tensor h = Tensor::zeros({4}, DType::BF16), none, small = Tensor::zeros({3});
  AdamWParams a;
  CHECK_THROWS_WITH(be->adamw_step(h, g, m, v, none, a), Catch::Contains("master"));
  CHECK_THROWS_WITH(be->adamw_step(p, g, small, v, none, a), Catch::Contains("adamw_step: m"));
  // A 16-bit grad is read through f32 (cpu_backend_grad16_test); a non-float one is rejected.
  Tensor gi = Tensor::zeros({4}, DType::I32);
  CHECK_THROWS_WITH(be->adamw_step(p, gi, m, v, none, a), Catch::Contains("adamw_step: grad"));
  CHECK_THROWS_WITH(be->adamw_step(h, g, m, v, small, a), Catch::Contains("master"));
  a.step = 0;
  CHECK_THROWS_WITH(be->adamw_step(p, g, m, v, none, a), Catch::Contains("step"));
}
