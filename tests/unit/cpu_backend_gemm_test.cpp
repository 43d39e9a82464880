// CpuBackend::gemm against a naive double-precision loop: the four transpose
// combinations, alpha/beta, odd sizes, strided batches with a broadcast operand,
// 16-bit operands, and the argument checks.
#include <cmath>
#include <limits>

#include "backend/cpu/cpu_gemm_kernel.h"
#include "pp3d/backend/backend.h"
#include "test_util.h"

using namespace pp3d;
using namespace pp3d::test;

namespace {

// C[m, n] = alpha op(A) op(B) + beta C, row-major, in double.
void ref_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const double* a, const double* b,
              double beta, double* c) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0.0;
      for (int64_t p = 0; p < k; ++p) {
        const double av = ta ? a[p * m + i] : a[i * k + p];
        const double bv = tb ? b[j * k + p] : b[p * n + j];
        s += av * bv;
      }
      c[i * n + j] = alpha * s + (beta == 0.0 ? 0.0 : beta * c[i * n + j]);
    }
}

Tensor as_dtype(Backend& be, const Tensor& f32, DType dt) {
  Tensor t = Tensor::empty(f32.shape(), dt);
  be.cast(f32, t);
  return t;
}

}  // namespace

TEST_CASE("cpu gemm: transposes, alpha/beta and odd sizes match a double loop", "[cpu_backend][gemm]") {
  auto be = make_cpu_backend();
  const int64_t sizes[][3] = {{1, 1, 1}, {7, 13, 5}, {13, 1, 7}, {1, 7, 13}, {33, 17, 64}, {96, 200, 300}};
  uint32_t seed = 1;
  for (auto& s : sizes) {
    const int64_t m = s[0], n = s[1], k = s[2];
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb)
        for (float beta : {0.0f, 1.0f, -0.5f}) {
          CAPTURE(m, n, k, ta, tb, beta);
          Tensor a = random_tensor({m * k}, seed++);
          Tensor b = random_tensor({k * n}, seed++);
          Tensor c = random_tensor({m, n}, seed++);
          std::vector<double> want = to_double(c);
          const float alpha = 1.25f;
          ref_gemm(ta, tb, m, n, k, alpha, to_double(a).data(), to_double(b).data(), beta, want.data());
          be->gemm(ta, tb, m, n, k, alpha, a, b, beta, c);
          require_close(c, want, 2e-6 * k + 1e-6, 1e-5, "gemm");
        }
  }
}

TEST_CASE("cpu gemm: beta = 0 ignores NaN in c, k = 0 scales c", "[cpu_backend][gemm]") {
  auto be = make_cpu_backend();
  Tensor a = random_tensor({3, 4}, 11), b = random_tensor({4, 5}, 12);
  Tensor c = Tensor::from_vector({3, 5}, std::vector<float>(15, std::numeric_limits<float>::quiet_NaN()));
  std::vector<double> want(15, 0.0);
  ref_gemm(false, false, 3, 5, 4, 1.0, to_double(a).data(), to_double(b).data(), 0.0, want.data());
  be->gemm(false, false, 3, 5, 4, 1.0f, a, b, 0.0f, c);
  require_close(c, want, 1e-6, 1e-6, "beta=0");

  Tensor c2 = random_tensor({3, 5}, 13);
  std::vector<double> want2 = to_double(c2);
  for (auto& w : want2) w *= 0.5;
  be->gemm(false, false, 3, 5, 0, 1.0f, a, b, 0.5f, c2);
  require_close(c2, want2, 0.0, 1e-7, "k=0");
}

TEST_CASE("cpu gemm: strided batch with a broadcast operand leaves the gaps alone", "[cpu_backend][gemm]") {
  auto be = make_cpu_backend();
  const int64_t m = 5, n = 7, k = 3, batch = 4;
  for (int64_t batch_count : {int64_t{4}, int64_t{1}}) {
    for (int bcast = 0; bcast < 2; ++bcast) {
      CAPTURE(batch_count, bcast);
      const int64_t sa = bcast ? 0 : m * k + 2, sb = bcast ? k * n + 1 : 0, sc = m * n + 3;
      Tensor a = random_tensor({(batch - 1) * sa + m * k}, 21);
      Tensor b = random_tensor({(batch - 1) * sb + k * n}, 22);
      Tensor c = random_tensor({(batch - 1) * sc + m * n}, 23);
      std::vector<double> want = to_double(c);
      const auto da = to_double(a), db = to_double(b);
      for (int64_t i = 0; i < batch_count; ++i)
        ref_gemm(true, false, m, n, k, 0.5, da.data() + i * sa, db.data() + i * sb, 2.0, want.data() + i * sc);
      be->gemm(true, false, m, n, k, 0.5f, a, b, 2.0f, c, batch_count, sa, sb, sc);
      require_close(c, want, 1e-6, 1e-6, "batched");
    }
  }
}

TEST_CASE("cpu gemm: bf16/f16 operands and outputs", "[cpu_backend][gemm]") {
  auto be = make_cpu_backend();
  const int64_t m = 13, n = 7, k = 29;
  const DType dts[] = {DType::F32, DType::BF16, DType::F16};
  uint32_t seed = 100;
  for (DType da : dts)
    for (DType db : dts)
      for (DType dc : dts) {
        if (da == DType::F32 && db == DType::F32 && dc == DType::F32) continue;
        CAPTURE(dtype_name(da), dtype_name(db), dtype_name(dc));
        Tensor a = as_dtype(*be, random_tensor({k, m}, seed++), da);
        Tensor b = as_dtype(*be, random_tensor({n, k}, seed++), db);
        Tensor c = as_dtype(*be, random_tensor({m, n}, seed++), dc);
        // Reference on the values the 16-bit tensors actually hold.
        std::vector<double> want = to_double(c);
        ref_gemm(true, true, m, n, k, 1.0, to_double(a).data(), to_double(b).data(), 0.75, want.data());
        be->gemm(true, true, m, n, k, 1.0f, a, b, 0.75f, c);
        REQUIRE(c.dtype() == dc);
        const double rtol = dc == DType::BF16 ? 1.0 / 256 : dc == DType::F16 ? 1.0 / 2048 : 1e-5;
        require_close(c, want, 1e-4, rtol, "16-bit gemm");
      }
}

TEST_CASE("cpu gemm: bad arguments throw pp3d::Error", "[cpu_backend][gemm]") {
  auto be = make_cpu_backend();
  Tensor a = random_tensor({3, 4}, 1), b = random_tensor({4, 5}, 2), c = Tensor::zeros({3, 5});
  Tensor small = Tensor::zeros({3, 4});
  Tensor ids = Tensor::zeros({4, 5}, DType::I32);
  CHECK_THROWS_AS(be->gemm(false, false, 3, 5, 4, 1.0f, a, b, 0.0f, small), Error);
  CHECK_THROWS_AS(be->gemm(false, false, 3, 5, 5, 1.0f, a, b, 0.0f, c), Error);
  CHECK_THROWS_AS(be->gemm(false, false, 3, 5, 4, 1.0f, a, ids, 0.0f, c), Error);
  CHECK_THROWS_AS(be->gemm(false, false, 3, 5, 4, 1.0f, a, b, 0.0f, c, 2, 0, 0, 0), Error);
  CHECK_THROWS_AS(be->gemm(false, false, 3, 4, 4, 1.0f, a, b, 0.0f, a), Error);  // c aliases a
  CHECK_THROWS_WITH(be->gemm(false, false, 3, 5, 4, 1.0f, a, b, 0.0f, small),
                    Catch::Contains("gemm: c"));
}

TEST_CASE("cpu gemm kernels: generic and AVX2 builds with row strides", "[cpu_backend][gemm]") {
  // A, B, C embedded in wider rows (lda/ldb/ldc > row length), as attention uses them.
  const int64_t m = 37, n = 19, k = 70, pad = 5;
  uint32_t seed = 300;
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb)
      for (int build = 0; build < 2; ++build) {
        if (build == 1 && !detail::cpu_gemm_avx2_available()) continue;
        CAPTURE(ta, tb, build);
        const int64_t ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
        const int64_t lda = ac + pad, ldb = bc + pad, ldc = n + pad;
        const auto a = random_floats(static_cast<std::size_t>(ar * lda), seed++);
        const auto b = random_floats(static_cast<std::size_t>(br * ldb), seed++);
        auto c = random_floats(static_cast<std::size_t>(m * ldc), seed++);
        // Dense double copies for the reference.
        std::vector<double> da, db, want;
        for (int64_t i = 0; i < ar; ++i)
          for (int64_t j = 0; j < ac; ++j) da.push_back(a[static_cast<std::size_t>(i * lda + j)]);
        for (int64_t i = 0; i < br; ++i)
          for (int64_t j = 0; j < bc; ++j) db.push_back(b[static_cast<std::size_t>(i * ldb + j)]);
        for (int64_t i = 0; i < m; ++i)
          for (int64_t j = 0; j < n; ++j) want.push_back(c[static_cast<std::size_t>(i * ldc + j)]);
        ref_gemm(ta, tb, m, n, k, 0.5, da.data(), db.data(), 1.5, want.data());
        const auto before = c;
        auto kernel = build ? detail::gemm_f32_avx2 : detail::gemm_f32_generic;
        kernel(ta, tb, m, n, k, 0.5f, a.data(), lda, b.data(), ldb, 1.5f, c.data(), ldc);
        std::vector<float> got;
        for (int64_t i = 0; i < m; ++i)
          for (int64_t j = 0; j < ldc; ++j) {
            const std::size_t idx = static_cast<std::size_t>(i * ldc + j);
            if (j < n) got.push_back(c[idx]);
            else REQUIRE(c[idx] == before[idx]);  // the padding stays untouched
          }
        require_close(got, want, 1e-4, 1e-5, "strided kernel");
      }
}

TEST_CASE("cpu gemm: tiled long-side products are correct and thread-count independent", "[cpu_backend][gemm]") {
  auto be = make_cpu_backend();
  // A long n, a long m and a long k (each > 8192, the tiling threshold), small otherwise.
  const int64_t shapes[][3] = {{3, 8200, 5}, {8200, 3, 5}, {5, 7, 9000}};
  uint32_t seed = 500;
  for (auto& sh : shapes)
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb) {
        const int64_t m = sh[0], n = sh[1], k = sh[2];
        CAPTURE(m, n, k, ta, tb);
        Tensor a = random_tensor({m * k}, seed++), b = random_tensor({k * n}, seed++);
        Tensor c0 = random_tensor({m, n}, seed++);
        std::vector<double> want = to_double(c0);
        ref_gemm(ta, tb, m, n, k, 0.75, to_double(a).data(), to_double(b).data(), 0.5, want.data());
        Tensor c1 = c0.clone(), c2 = c0.clone();
        with_threads(1, [&] { be->gemm(ta, tb, m, n, k, 0.75f, a, b, 0.5f, c1); });
        with_threads(2, [&] { be->gemm(ta, tb, m, n, k, 0.75f, a, b, 0.5f, c2); });
        require_close(c1, want, 2e-6 * static_cast<double>(k) + 1e-5, 1e-5, "tiled gemm");
        REQUIRE(bitwise_equal(c1, c2));
      }
}
