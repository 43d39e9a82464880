// The fused 16-bit Linear + GELU ops on the CPU backend (the emulation of cuBLASLt's
// GELU_AUX_BIAS and DGELU epilogues, Backend::linear16_gelu_forward / _dgelu_backward):
//  - forward: aux = round(pre), y = round(gelu(pre)) with pre = the f32 GEMM of the
//    16-bit operands + bias, GELU of the UNROUNDED pre; bitwise against gemm16 + an f32
//    bias add + the f32 gelu_forward op rounded here, and measurably not
//    round(gelu(round(pre))) (the unfused op sequence);
//  - backward: dx = round((dy . w)_f32 * gelu'(aux)), bitwise against gemm16 + the f32
//    gelu_backward op, and not round(round(dy . w) * gelu'(aux));
//  - the tensor-parallel plumbing (ColumnParallelLinear::forward_gelu,
//    RowParallelLinear::backward_dgelu, split backward) and the argument checks.
// The GELU itself (tanh form) is checked against a double-precision formula to one ulp.
#include <cmath>

#include "pp3d/backend/backend.h"
#include "pp3d/parallel/tensor_parallel.h"
#include "test_util.h"

using namespace pp3d;
using namespace pp3d::test;

namespace {

float round_to(DType dt, float x) {
  return static_cast<float>(dt == DType::BF16 ? round_bf16(x) : round_f16(x));
}

Tensor cast_to(Backend& be, const Tensor& t, DType dt) {
  Tensor out = Tensor::empty(t.shape(), dt);
  be.cast(t, out);
  return out;
}

std::vector<float> values(Backend& be, const Tensor& t) { return cast_to(be, t, DType::F32).to_vector(); }

// Elementwise f32 GELU (or dy * GELU'(x)) by the backend's own f32 op, so that the
// reference differs from the fused op only in where it rounds.
std::vector<float> gelu_f32(Backend& be, const std::vector<float>& x) {
  const int64_t n = static_cast<int64_t>(x.size());
  const Tensor tx = Tensor::from_vector({n}, x);
  Tensor y = Tensor::zeros({n}, DType::F32);
  be.gelu_forward(tx, y);
  return y.to_vector();
}
std::vector<float> dgelu_f32(Backend& be, const std::vector<float>& x, const std::vector<float>& dy) {
  const int64_t n = static_cast<int64_t>(x.size());
  const Tensor tx = Tensor::from_vector({n}, x), tdy = Tensor::from_vector({n}, dy);
  Tensor dx = Tensor::zeros({n}, DType::F32);
  be.gelu_backward(tx, tdy, dx);
  return dx.to_vector();
}

std::vector<float> rounded(DType dt, std::vector<float> v) {
  for (float& x : v) x = round_to(dt, x);
  return v;
}

double gelu_tanh(double x) { return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x))); }

}  // namespace

TEST_CASE("linear16_gelu_forward (cpu): y = round(gelu(x W^T + b)) of the f32 sum, aux = round(x W^T + b)",
          "[cpu_backend][gemm16][gelu16]") {
  auto be = make_cpu_backend();
  const int64_t rows = 19, out = 24, in = 70;
  uint32_t seed = 700;
  for (DType dt : {DType::BF16, DType::F16})
    for (int bias_kind = 0; bias_kind < 3; ++bias_kind) {  // none, f32, dt
      CAPTURE(dtype_name(dt), bias_kind);
      const Tensor x = random_tensor({rows, in}, seed++);  // f32: rounded inside
      const Tensor w = cast_to(*be, random_tensor({out, in}, seed++), dt);
      const Tensor b32 = random_tensor({out}, seed++, -2.0f, 2.0f);
      const Tensor bias = bias_kind == 0 ? Tensor() : bias_kind == 1 ? b32 : cast_to(*be, b32, dt);
      Tensor aux = Tensor::zeros({rows, out}, dt), y = Tensor::zeros({rows, out}, dt);
      be->linear16_gelu_forward(dt, rows, out, in, x, w, bias, aux, y);
      // Reference: the f32 GEMM of the rounded operands (gemm16, checked in
      // cpu_backend_gemm16_test), + bias in f32.
      Tensor g = Tensor::zeros({rows, out}, DType::F32);
      be->gemm16(dt, false, true, rows, out, in, 1.0f, x, w, 0.0f, g);
      std::vector<float> pre = g.to_vector();
      const std::vector<float> bv = bias.defined() ? values(*be, bias) : std::vector<float>(out, 0.0f);
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < out; ++j) pre[i * out + j] += bv[j];
      const std::vector<float> got_aux = values(*be, aux), got_y = values(*be, y);
      CHECK(got_aux == rounded(dt, pre));
      CHECK(got_y == rounded(dt, gelu_f32(*be, pre)));
      // GELU of the rounded pre-activation (the unfused gelu_forward on aux) is another op.
      CHECK(got_y != rounded(dt, gelu_f32(*be, got_aux)));
      // The GELU is the tanh form: within one 16-bit ulp of the double formula.
      double worst = 0.0;
      for (std::size_t i = 0; i < pre.size(); ++i) {
        const double want = gelu_tanh(pre[i]);
        worst = std::max(worst, std::fabs(got_y[i] - want) / std::max(std::fabs(want), 1e-2));
      }
      CHECK(worst <= (dt == DType::BF16 ? 1.0 / 128 : 1.0 / 1024));
    }
}

TEST_CASE("linear16_dgelu_backward (cpu): dx = round((dy . W)_f32 * gelu'(aux)), the GEMM result unrounded",
          "[cpu_backend][gemm16][gelu16]") {
  auto be = make_cpu_backend();
  const int64_t rows = 17, out = 30, in = 40;  // dx [rows, in] = dy [rows, out] . W [out, in]
  uint32_t seed = 800;
  for (DType dt : {DType::BF16, DType::F16})
    for (DType dy_dt : {DType::F32, dt}) {
      CAPTURE(dtype_name(dt), dtype_name(dy_dt));
      const Tensor dy = cast_to(*be, random_tensor({rows, out}, seed++), dy_dt);
      const Tensor w = cast_to(*be, random_tensor({out, in}, seed++, -0.5f, 0.5f), dt);
      const Tensor aux = cast_to(*be, random_tensor({rows, in}, seed++, -3.0f, 3.0f), dt);
      Tensor dx = Tensor::zeros({rows, in}, dt);
      be->linear16_dgelu_backward(dt, rows, out, in, dy, w, aux, dx);
      Tensor g = Tensor::zeros({rows, in}, DType::F32);
      be->gemm16(dt, false, false, rows, in, out, 1.0f, dy, w, 0.0f, g);
      const std::vector<float> a = values(*be, aux), got = values(*be, dx);
      CHECK(got == rounded(dt, dgelu_f32(*be, a, g.to_vector())));
      // Rounding the GEMM result before the multiply (the unfused 16-bit dgelu) is another op.
      CHECK(got != rounded(dt, dgelu_f32(*be, a, rounded(dt, g.to_vector()))));
    }
}

TEST_CASE("linear16 GELU ops (cpu): argument checks", "[cpu_backend][gemm16][gelu16]") {
  auto be = make_cpu_backend();
  const Tensor x = random_tensor({2, 4}, 1), w = random_tensor({3, 4}, 2);
  Tensor a16 = Tensor::zeros({2, 3}, DType::BF16), y16 = Tensor::zeros({2, 3}, DType::BF16);
  Tensor a32 = Tensor::zeros({2, 3}, DType::F32), a_short = Tensor::zeros({2, 2}, DType::BF16);
  CHECK_THROWS_WITH(be->linear16_gelu_forward(DType::BF16, 2, 3, 4, x, w, Tensor(), a32, y16),
                    Catch::Contains("linear16_gelu_forward: aux must hold [2, 3] in bf16"));
  CHECK_THROWS_WITH(be->linear16_gelu_forward(DType::BF16, 2, 3, 4, x, w, Tensor(), a16, a_short),
                    Catch::Contains("linear16_gelu_forward: y must hold [2, 3] in bf16"));
  CHECK_THROWS_WITH(be->linear16_gelu_forward(DType::BF16, 2, 3, 4, x, w, random_tensor({4}, 3), a16, y16),
                    Catch::Contains("linear16_gelu_forward: bias must hold 3 elements"));
  // dx [2, 4] = dy [2, 3] . w [3, 4]
  const Tensor dy = random_tensor({2, 3}, 4);
  Tensor aux = Tensor::zeros({2, 4}, DType::BF16), dx = Tensor::zeros({2, 4}, DType::BF16);
  Tensor aux_f16 = Tensor::zeros({2, 4}, DType::F16), dx32 = Tensor::zeros({2, 4}, DType::F32);
  CHECK_THROWS_WITH(be->linear16_dgelu_backward(DType::BF16, 2, 3, 4, dy, w, aux_f16, dx),
                    Catch::Contains("linear16_dgelu_backward: aux must hold [2, 4] in bf16"));
  CHECK_THROWS_WITH(be->linear16_dgelu_backward(DType::BF16, 2, 3, 4, dy, w, aux, dx32),
                    Catch::Contains("linear16_dgelu_backward: dx must hold [2, 4] in bf16"));
}

TEST_CASE("ColumnParallelLinear::forward_gelu / RowParallelLinear::backward_dgelu: the fused ops, split backward",
          "[tensor_parallel][gemm16][gelu16]") {
  auto be = make_cpu_backend();
  const DType dt = DType::BF16;
  const int64_t rows = 6, C = 16, F = 32;
  auto param = [&](const std::string& name, const Shape& s, uint32_t seed) {
    Parameter p;
    p.name = name;
    p.value = cast_to(*be, random_tensor(s, seed, -0.5f, 0.5f), dt);
    p.grad = Tensor::zeros(s, DType::F32);
    return p;
  };
  Parameter fc_w = param("fc_w", {F, C}, 1), fc_b = param("fc_b", {F}, 2);
  Parameter pr_w = param("proj_w", {C, F}, 3), pr_b = param("proj_b", {C}, 4);
  const ColumnParallelLinear c_fc(fc_w, &fc_b, {false, false, dt, true, true});
  const RowParallelLinear proj(pr_w, &pr_b, {true, false, dt, true, true});
  const Tensor x = cast_to(*be, random_tensor({1, rows, C}, 5), dt), dy = random_tensor({1, rows, C}, 6);

  Tensor pre;
  const Tensor h = c_fc.forward_gelu(*be, nullptr, x, pre);
  Tensor aux_ref = Tensor::zeros({rows, F}, dt), h_ref = Tensor::zeros({rows, F}, dt);
  be->linear16_gelu_forward(dt, rows, F, C, x, fc_w.value, fc_b.value, aux_ref, h_ref);
  CHECK(h.shape() == Shape{1, rows, F});
  CHECK(bitwise_equal(h.reshape({rows, F}), h_ref));
  CHECK(bitwise_equal(pre.reshape({rows, F}), aux_ref));

  // Fused backward vs input part + deferred weight part: the same values, bitwise.
  const Tensor dpre = proj.backward_dgelu(*be, nullptr, dy, h, pre);
  Tensor dpre_ref = Tensor::zeros({rows, F}, dt);
  be->linear16_dgelu_backward(dt, rows, C, F, cast_to(*be, dy, dt), pr_w.value, pre, dpre_ref);
  CHECK(bitwise_equal(dpre.reshape({rows, F}), dpre_ref));
  const std::vector<float> gw = pr_w.grad.to_vector(), gb = pr_b.grad.to_vector();
  be->fill(pr_w.grad, 0.0f);
  be->fill(pr_b.grad, 0.0f);
  std::vector<LinearWeightGrad> deferred;
  const Tensor dpre2 = proj.backward_dgelu(*be, nullptr, dy, h, pre, &deferred);
  CHECK(bitwise_equal(dpre2, dpre));
  CHECK(deferred.size() == 1);
  for (LinearWeightGrad& job : deferred) job.run(*be);
  CHECK(pr_w.grad.to_vector() == gw);
  CHECK(pr_b.grad.to_vector() == gb);

  // The fused paths need the 16-bit flow.
  const ColumnParallelLinear c_fc32(fc_w, &fc_b, {false, false, dt, false, false});
  const RowParallelLinear proj32(pr_w, &pr_b, {true, false, dt, false, false});
  CHECK_THROWS_WITH(c_fc32.forward_gelu(*be, nullptr, x, pre), Catch::Contains("forward_gelu needs output16"));
  CHECK_THROWS_WITH(proj32.backward_dgelu(*be, nullptr, dy, h, pre), Catch::Contains("backward_dgelu needs grad16"));
  CHECK_THROWS_WITH(proj.backward_dgelu(*be, nullptr, dy, h, pre.reshape({rows, F})),
                    Catch::Contains("pre must have x's shape"));
}
