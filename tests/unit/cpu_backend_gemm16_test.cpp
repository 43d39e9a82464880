// Backend::gemm16 on the CPU backend (the emulation of the CUDA tensor-core path):
// the f32 GEMM of the operands rounded to bf16 / f16, C rounded once when it is
// 16-bit. Checked against a double loop over operands rounded here, element by
// element; every case also proves the rounding happened (the unrounded product
// is measurably farther away). Backend::linear16_forward (GEMM + bias, one
// rounding), the ColumnParallelLinear gemm_dtype plumbing and the argument checks
// are at the end.
#include <cmath>
#include <functional>

#include "pp3d/backend/backend.h"
#include "pp3d/parallel/tensor_parallel.h"
#include "test_util.h"

using namespace pp3d;
using namespace pp3d::test;

namespace {

double round_to(DType dt, float x) { return dt == DType::BF16 ? round_bf16(x) : round_f16(x); }

std::vector<double> rounded(const Tensor& t, DType dt) {
  std::vector<double> out;
  for (float x : t.to_vector()) out.push_back(round_to(dt, x));
  return out;
}

// Row-major batched C = alpha op(A) op(B) + beta C in double.
void ref_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const std::vector<double>& a,
              const std::vector<double>& b, double beta, std::vector<double>& c, int64_t batch, int64_t sa,
              int64_t sb, int64_t sc) {
  for (int64_t q = 0; q < batch; ++q)
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double s = 0.0;
        for (int64_t p = 0; p < k; ++p) {
          const double av = ta ? a[q * sa + p * m + i] : a[q * sa + i * k + p];
          const double bv = tb ? b[q * sb + j * k + p] : b[q * sb + p * n + j];
          s += av * bv;
        }
        double& cv = c[q * sc + i * n + j];
        cv = alpha * s + (beta == 0.0 ? 0.0 : beta * cv);
      }
}

double max_abs_diff(const std::vector<float>& got, const std::vector<double>& want) {
  double worst = 0.0;
  for (std::size_t i = 0; i < want.size(); ++i) worst = std::max(worst, std::fabs(got[i] - want[i]));
  return worst;
}

Tensor cast_to(Backend& be, const Tensor& t, DType dt) {
  Tensor out = Tensor::empty(t.shape(), dt);
  be.cast(t, out);
  return out;
}

}  // namespace

TEST_CASE("gemm16 (cpu): f32 GEMM of the rounded operands, odd sizes, batches, both 16-bit dtypes",
          "[cpu_backend][gemm][gemm16]") {
  auto be = make_cpu_backend();
  struct Case {
    int64_t m, n, k, batch, sa, sb, sc;
  };
  const Case cases[] = {{1, 1, 1, 1, 0, 0, 0},       {7, 13, 257, 1, 0, 0, 0},  {257, 7, 13, 1, 0, 0, 0},
                        {33, 17, 64, 1, 0, 0, 0},    {5, 11, 31, 3, 5 * 31, 31 * 11, 5 * 11},
                        {4, 6, 9, 3, 0, 9 * 6, 4 * 6}};  // the last: A broadcast to every product
  uint32_t seed = 11;
  for (DType dt : {DType::BF16, DType::F16})
    for (const Case& cs : cases)
      for (int ta = 0; ta < 2; ++ta)
        for (int tb = 0; tb < 2; ++tb) {
          const int64_t span_a = (cs.batch - 1) * cs.sa + cs.m * cs.k;
          const int64_t span_b = (cs.batch - 1) * cs.sb + cs.k * cs.n;
          const int64_t span_c = (cs.batch - 1) * cs.sc + cs.m * cs.n;
          CAPTURE(dtype_name(dt), cs.m, cs.n, cs.k, cs.batch, ta, tb);
          // a f32 (rounded inside gemm16), b already 16-bit: the mixed case of a Linear layer.
          const Tensor a = random_tensor({span_a}, seed++);
          const Tensor b = cast_to(*be, random_tensor({span_b}, seed++), dt);
          Tensor c = random_tensor({span_c}, seed++);
          std::vector<double> want = to_double(c), unrounded = to_double(c);
          ref_gemm(ta, tb, cs.m, cs.n, cs.k, 0.75, rounded(a, dt), to_double(b), 0.5, want, cs.batch, cs.sa, cs.sb,
                   cs.sc);
          ref_gemm(ta, tb, cs.m, cs.n, cs.k, 0.75, to_double(a), to_double(b), 0.5, unrounded, cs.batch, cs.sa,
                   cs.sb, cs.sc);
          be->gemm16(dt, ta, tb, cs.m, cs.n, cs.k, 0.75f, a, b, 0.5f, c, cs.batch, cs.sa, cs.sb, cs.sc);
          const double tol = 2e-6 * static_cast<double>(cs.k) + 1e-6;
          const std::vector<float> got = c.to_vector();
          CHECK(max_abs_diff(got, want) <= tol);
          // The rounding of a is visible: the f32-operand product is > 2x the tolerance away (measured
          // 3x-9x for f16, more for bf16; a 1x1x1 product can round exactly, so only k >= 9 must show it).
          if (cs.k >= 9) CHECK(max_abs_diff(got, unrounded) > 2 * tol);

          // 16-bit C: exactly the rounding of the f32-C result (bitwise), same beta input.
          Tensor c16 = cast_to(*be, random_tensor({span_c}, seed++), dt);
          Tensor c32 = cast_to(*be, c16, DType::F32);
          be->gemm16(dt, ta, tb, cs.m, cs.n, cs.k, 0.75f, a, b, 0.5f, c16, cs.batch, cs.sa, cs.sb, cs.sc);
          be->gemm16(dt, ta, tb, cs.m, cs.n, cs.k, 0.75f, a, b, 0.5f, c32, cs.batch, cs.sa, cs.sb, cs.sc);
          const Tensor c32_rounded = cast_to(*be, c32, dt);
          // Gaps between strided batch matrices keep their old value in both: compare the matrices only.
          bool same = true;
          for (int64_t q = 0; q < cs.batch; ++q)
            for (int64_t e = 0; e < cs.m * cs.n; ++e) {
              const int64_t at = q * (cs.batch > 1 ? cs.sc : 0) + e;
              same = same && c16.data<uint16_t>()[at] == c32_rounded.data<uint16_t>()[at];
            }
          CHECK(same);
        }
}

TEST_CASE("gemm16 (cpu): two f32 operands are both rounded, two 16-bit ones equal plain gemm bitwise",
          "[cpu_backend][gemm][gemm16]") {
  auto be = make_cpu_backend();
  const int64_t m = 9, n = 10, k = 67;
  const Tensor a = random_tensor({m, k}, 3), b = random_tensor({n, k}, 4);
  Tensor c = Tensor::zeros({m, n}, DType::F32);
  be->gemm16(DType::BF16, false, true, m, n, k, 1.0f, a, b, 0.0f, c);
  const Tensor a16 = cast_to(*be, a, DType::BF16), b16 = cast_to(*be, b, DType::BF16);
  Tensor c_ref = Tensor::zeros({m, n}, DType::F32);
  be->gemm(false, true, m, n, k, 1.0f, a16, b16, 0.0f, c_ref);
  CHECK(bitwise_equal(c, c_ref));
  Tensor c_both16 = Tensor::zeros({m, n}, DType::F32);
  be->gemm16(DType::BF16, false, true, m, n, k, 1.0f, a16, b16, 0.0f, c_both16);
  CHECK(bitwise_equal(c_both16, c_ref));
  // ... and not the f32 product (the break this test would miss if gemm16 ignored its dtype).
  Tensor c_f32 = Tensor::zeros({m, n}, DType::F32);
  be->gemm(false, true, m, n, k, 1.0f, a, b, 0.0f, c_f32);
  CHECK(rel_l2(c_f32.to_vector(), c_ref.to_vector()) > 1e-4);
}

TEST_CASE("linear16_forward (cpu): x W^T + b in f32 rounded once (the CUDA bias epilogue's semantics)",
          "[cpu_backend][gemm][gemm16]") {
  auto be = make_cpu_backend();
  const int64_t rows = 19, out = 23, in = 70;
  uint32_t seed = 300;
  for (DType dt : {DType::BF16, DType::F16})
    for (int bias_kind = 0; bias_kind < 3; ++bias_kind) {  // none, f32, dt
      CAPTURE(dtype_name(dt), bias_kind);
      const Tensor x = random_tensor({rows, in}, seed++);  // f32: rounded inside
      const Tensor w = cast_to(*be, random_tensor({out, in}, seed++), dt);
      const Tensor b32 = random_tensor({out}, seed++, -4.0f, 4.0f);
      const Tensor bias = bias_kind == 0 ? Tensor() : bias_kind == 1 ? b32 : cast_to(*be, b32, dt);
      Tensor y = Tensor::zeros({rows, out}, dt);
      be->linear16_forward(dt, rows, out, in, x, w, bias, y);
      // Reference: the f32 GEMM of the rounded operands, + bias in f32, one rounding.
      Tensor y32 = Tensor::zeros({rows, out}, DType::F32);
      be->gemm16(dt, false, true, rows, out, in, 1.0f, x, w, 0.0f, y32);
      const std::vector<float> bv = bias.defined() ? cast_to(*be, bias, DType::F32).to_vector() : std::vector<float>();
      std::vector<float> once(static_cast<std::size_t>(rows * out)), twice(once.size());
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < out; ++j) {
          const float g = y32.data<float>()[i * out + j], bj = bias.defined() ? bv[j] : 0.0f;
          once[i * out + j] = static_cast<float>(round_to(dt, g + bj));
          twice[i * out + j] = static_cast<float>(round_to(dt, static_cast<float>(round_to(dt, g)) + bj));
        }
      const std::vector<float> got = cast_to(*be, y, DType::F32).to_vector();
      CHECK(got == once);
      // Rounding the GEMM before the bias add (two roundings) is a different op: some element shows it.
      if (bias.defined()) CHECK(got != twice);
    }
  // y must be the 16-bit dtype; bias length checked.
  Tensor y32 = Tensor::zeros({2, 3}, DType::F32), y16 = Tensor::zeros({2, 3}, DType::BF16);
  const Tensor x = random_tensor({2, 4}, 1), w = random_tensor({3, 4}, 2);
  CHECK_THROWS_WITH(be->linear16_forward(DType::BF16, 2, 3, 4, x, w, Tensor(), y32),
                    Catch::Contains("linear16_forward: y must hold [2, 3] in bf16"));
  CHECK_THROWS_WITH(be->linear16_forward(DType::BF16, 2, 3, 4, x, w, random_tensor({4}, 3), y16),
                    Catch::Contains("linear16_forward: bias must hold 3 elements"));
}

TEST_CASE("gemm16 (cpu): argument checks", "[cpu_backend][gemm][gemm16]") {
  auto be = make_cpu_backend();
  const Tensor a = random_tensor({4, 4}, 1), b = random_tensor({4, 4}, 2);
  const Tensor a_f16 = cast_to(*be, a, DType::F16);
  Tensor c = Tensor::zeros({4, 4}, DType::F32);
  Tensor c_f16 = Tensor::zeros({4, 4}, DType::F16);
  CHECK_THROWS_WITH(be->gemm16(DType::F32, false, false, 4, 4, 4, 1.0f, a, b, 0.0f, c),
                    Catch::Contains("bf16 or f16"));
  CHECK_THROWS_WITH(be->gemm16(DType::BF16, false, false, 4, 4, 4, 1.0f, a_f16, b, 0.0f, c),
                    Catch::Contains("a is f16"));
  CHECK_THROWS_WITH(be->gemm16(DType::BF16, false, false, 4, 4, 4, 1.0f, a, b, 0.0f, c_f16),
                    Catch::Contains("c must be f32 or the input dtype bf16"));
}

TEST_CASE("ColumnParallelLinear gemm_dtype bf16: y, dx and dW are the GEMMs of rounded operands",
          "[tensor_parallel][gemm16]") {
  auto be = make_cpu_backend();
  const int64_t rows = 6, in = 40, out = 24;
  Parameter w;
  w.name = "w";
  w.value = cast_to(*be, random_tensor({out, in}, 5, -0.2f, 0.2f), DType::BF16);
  w.grad = Tensor::zeros({out, in}, DType::F32);
  const Tensor x = random_tensor({rows, in}, 6), dy = random_tensor({rows, out}, 7);
  ColumnParallelLinear::Options o;
  o.gemm_dtype = DType::BF16;
  const ColumnParallelLinear lin(w, nullptr, o);
  const Tensor y = lin.forward(*be, nullptr, x);
  const Tensor dx = lin.backward(*be, nullptr, dy, x);
  const auto wv = to_double(cast_to(*be, w.value, DType::F32));
  std::vector<double> y_ref(rows * out, 0.0), dx_ref(rows * in, 0.0), dw_ref(out * in, 0.0);
  ref_gemm(false, true, rows, out, in, 1.0, rounded(x, DType::BF16), wv, 0.0, y_ref, 1, 0, 0, 0);
  ref_gemm(false, false, rows, in, out, 1.0, rounded(dy, DType::BF16), wv, 0.0, dx_ref, 1, 0, 0, 0);
  ref_gemm(true, false, out, in, rows, 1.0, rounded(dy, DType::BF16), rounded(x, DType::BF16), 0.0, dw_ref, 1, 0,
           0, 0);
  CHECK(max_abs_diff(y.to_vector(), y_ref) <= 1e-5);
  CHECK(max_abs_diff(dx.to_vector(), dx_ref) <= 1e-5);
  CHECK(max_abs_diff(w.grad.to_vector(), dw_ref) <= 1e-5);
  CHECK(y.dtype() == DType::F32);
  CHECK(dx.dtype() == DType::F32);
  // A bf16 layer must not accept an f16 weight.
  Parameter w16;
  w16.name = "w16";
  w16.value = cast_to(*be, random_tensor({out, in}, 8), DType::F16);
  CHECK_THROWS_WITH(ColumnParallelLinear(w16, nullptr, o), Catch::Contains("gemm_dtype"));
}
