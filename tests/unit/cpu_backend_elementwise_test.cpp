// CpuBackend elementwise ops, fill/copy/cast, sum_squares and the bias ops,
// each against a naive double-precision loop; bias_grad across thread counts.
#include <cmath>

#include "pp3d/backend/backend.h"
#include "test_util.h"

using namespace pp3d;
using namespace pp3d::test;

TEST_CASE("cpu add/scale/axpy match double loops", "[cpu_backend][elementwise]") {
  auto be = make_cpu_backend();
  for (int64_t n : {int64_t{1}, int64_t{13}, int64_t{40000}}) {
    CAPTURE(n);
    Tensor a = random_tensor({n}, 1), b = random_tensor({n}, 2), out = Tensor::zeros({n});
    const auto da = to_double(a), db = to_double(b);
    std::vector<double> want(da.size());
    for (std::size_t i = 0; i < da.size(); ++i) want[i] = da[i] + db[i];
    be->add(a, b, out);
    require_close(out, want, 1e-7, 1e-7, "add");
    be->add(a, b, a);  // out may alias an input
    require_close(a, want, 1e-7, 1e-7, "add aliased");

    for (auto& w : want) w *= -1.5;
    be->scale(a, -1.5f);
    require_close(a, want, 1e-7, 1e-7, "scale");

    for (std::size_t i = 0; i < want.size(); ++i) want[i] += 0.25 * db[i];
    be->axpy(0.25f, b, a);
    require_close(a, want, 1e-6, 1e-6, "axpy");
  }
  Tensor a = Tensor::zeros({3}), b = Tensor::zeros({4});
  CHECK_THROWS_AS(be->add(a, b, a), Error);
  CHECK_THROWS_AS(be->axpy(1.0f, a, b), Error);
  // 16-bit x is scaled through f32 (16-bit gradients, cpu_backend_grad16_test); i32 is rejected.
  Tensor xi = Tensor::zeros({3}, DType::I32);
  CHECK_THROWS_WITH(be->scale(xi, 2.0f), Catch::Contains("scale: x"));
  CHECK_THROWS_WITH(be->axpy(1.0f, a, xi), Catch::Contains("axpy: y"));
}

TEST_CASE("cpu fill/copy for every dtype", "[cpu_backend][elementwise]") {
  auto be = make_cpu_backend();
  for (DType dt : {DType::F32, DType::BF16, DType::F16, DType::I32}) {
    CAPTURE(dtype_name(dt));
    Tensor x = Tensor::empty({7, 3}, dt);
    be->fill(x, -3.0f);
    for (float v : x.to_vector()) REQUIRE(v == -3.0f);
    Tensor y = Tensor::zeros({21}, dt);
    be->copy(x, y);
    REQUIRE(bitwise_equal(x, y));
  }
  Tensor h = Tensor::empty({5}, DType::BF16);
  be->fill(h, 0.1f);
  REQUIRE(h.data<uint16_t>()[4] == f32_to_bf16(0.1f));
  Tensor i = Tensor::empty({5}, DType::I32);
  CHECK_THROWS_AS(be->fill(i, 0.5f), Error);
  Tensor f = Tensor::zeros({5}), g = Tensor::zeros({5}, DType::F16), s = Tensor::zeros({4});
  CHECK_THROWS_WITH(be->copy(f, g), Catch::Contains("cast"));
  CHECK_THROWS_AS(be->copy(f, s), Error);
}

TEST_CASE("cpu cast rounds to nearest even and round-trips", "[cpu_backend][elementwise]") {
  auto be = make_cpu_backend();
  const int64_t n = 50001;  // several parallel chunks
  std::vector<float> vals = random_floats(static_cast<std::size_t>(n), 5, -70000.0f, 70000.0f);
  // Exact ties and edge values.
  vals[0] = bits_f32(0x3f808000u);  // 1 + 2^-8: bf16 tie, rounds to even (1.0)
  vals[1] = bits_f32(0x3f818000u);  // odd-mantissa tie, rounds up
  vals[2] = 1e-6f;                  // f16 subnormal
  vals[3] = 1e30f;                  // f16 overflow -> inf
  vals[4] = -0.0f;
  Tensor x = Tensor::from_vector({n}, vals);
  Tensor b = Tensor::empty({n}, DType::BF16), h = Tensor::empty({n}, DType::F16);
  be->cast(x, b);
  be->cast(x, h);
  for (int64_t i = 0; i < n; ++i) {
    REQUIRE(b.data<uint16_t>()[i] == f32_to_bf16(vals[static_cast<std::size_t>(i)]));
    REQUIRE(h.data<uint16_t>()[i] == f32_to_f16(vals[static_cast<std::size_t>(i)]));
  }
  REQUIRE(b.data<uint16_t>()[0] == 0x3f80u);
  REQUIRE(b.data<uint16_t>()[1] == 0x3f82u);
  // Widening is exact; narrowing again gives the same bits.
  Tensor back = Tensor::empty({n}), b2 = Tensor::empty({n}, DType::BF16);
  be->cast(b, back);
  be->cast(back, b2);
  REQUIRE(bitwise_equal(b, b2));
  for (int64_t i = 0; i < n; ++i) REQUIRE(back.data<float>()[i] == bf16_to_f32(b.data<uint16_t>()[i]));
  // 16-bit to 16-bit goes through f32.
  Tensor hb = Tensor::empty({n}, DType::F16);
  be->cast(b, hb);
  for (int64_t i = 0; i < n; i += 97)
    REQUIRE(hb.data<uint16_t>()[i] == f32_to_f16(bf16_to_f32(b.data<uint16_t>()[i])));
  Tensor ids = Tensor::zeros({n}, DType::I32);
  CHECK_THROWS_WITH(be->cast(ids, b), Catch::Contains("cast: src"));
}

TEST_CASE("cpu sum_squares accumulates in double for every float dtype", "[cpu_backend][elementwise]") {
  auto be = make_cpu_backend();
  for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{70001}}) {
    for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
      CAPTURE(n, dtype_name(dt));
      Tensor f = random_tensor({n}, 9, -3.0f, 3.0f);
      Tensor x = Tensor::empty({n}, dt);
      be->cast(f, x);
      double want = 0.0;
      for (float v : x.to_vector()) want += static_cast<double>(v) * v;
      REQUIRE(be->sum_squares(x) == Approx(want).epsilon(1e-12));
    }
  }
}

TEST_CASE("cpu bias_add and bias_grad match double loops", "[cpu_backend][bias]") {
  auto be = make_cpu_backend();
  for (auto [rows, n] : {std::pair<int64_t, int64_t>{1, 1}, {13, 7}, {257, 131}}) {
    CAPTURE(rows, n);
    Tensor x = random_tensor({rows, n}, 3), bias = random_tensor({n}, 4);
    std::vector<double> want = to_double(x);
    const auto db = to_double(bias);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < n; ++j) want[static_cast<std::size_t>(r * n + j)] += db[static_cast<std::size_t>(j)];
    be->bias_add(x, bias);
    require_close(x, want, 1e-7, 1e-7, "bias_add");

    // bias_grad accumulates: start from a non-zero dbias.
    Tensor dy = random_tensor({rows, n}, 5), dbias = random_tensor({n}, 6);
    std::vector<double> gwant = to_double(dbias);
    const auto ddy = to_double(dy);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < n; ++j) gwant[static_cast<std::size_t>(j)] += ddy[static_cast<std::size_t>(r * n + j)];
    be->bias_grad(dy, dbias);
    require_close(dbias, gwant, 1e-5, 1e-6, "bias_grad");
  }
  Tensor x = Tensor::zeros({4, 5}), bad = Tensor::zeros({4});
  CHECK_THROWS_WITH(be->bias_add(x, bad), Catch::Contains("bias_add: x"));
  CHECK_THROWS_AS(be->bias_grad(x, bad), Error);
}

TEST_CASE("cpu bias_grad is bitwise independent of the thread count", "[cpu_backend][bias][determinism]") {
  auto be = make_cpu_backend();
  Tensor dy = random_tensor({1031, 300}, 7, -10.0f, 10.0f);
  Tensor g1 = Tensor::zeros({300}), g2 = Tensor::zeros({300}), g3 = Tensor::zeros({300});
  with_threads(1, [&] { be->bias_grad(dy, g1); });
  with_threads(2, [&] { be->bias_grad(dy, g2); });
  with_threads(3, [&] { be->bias_grad(dy, g3); });
  REQUIRE(bitwise_equal(g1, g2));
  REQUIRE(bitwise_equal(g1, g3));
}
