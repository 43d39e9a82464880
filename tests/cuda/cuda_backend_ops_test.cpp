// GPU: CudaBackend against CpuBackend (the reference) on the same random inputs,
// odd sizes included (1, 7, 13, 257): GEMM (every transpose, f32/bf16/f16/mixed,
// alpha/beta, strided and broadcast batches), elementwise ops, fill/copy/cast
// (bitwise), sum_squares, bias add/grad, LayerNorm and GELU. Exits 77 without a GPU.
// The other ops are in cuda_backend_nn_test.cpp.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cuda_test_util.h"

using namespace pp3d;
using namespace pp3d::cudatest;

namespace {

void test_gemm_case(Ctx& c, bool ta, bool tb, int64_t m, int64_t n, int64_t k, DType da, DType db, DType dc,
                    int64_t batch, int64_t sa, int64_t sb, int64_t sc, uint32_t seed) {
  const int64_t span_a = batch == 1 ? m * k : (batch - 1) * sa + m * k;
  const int64_t span_b = batch == 1 ? k * n : (batch - 1) * sb + k * n;
  const int64_t span_c = batch == 1 ? m * n : (batch - 1) * sc + m * n;
  // (at least one element: k == 0 still passes real tensors)
  Tensor a = rand_host({std::max<int64_t>(span_a, 1)}, seed, da);
  Tensor b = rand_host({std::max<int64_t>(span_b, 1)}, seed + 1, db);
  Tensor c_cpu = rand_host({span_c}, seed + 2, dc);
  Tensor ad = to_gpu(a), bd = to_gpu(b), c_gpu = to_gpu(c_cpu);
  c.cpu->gemm(ta, tb, m, n, k, 0.7f, a, b, 0.3f, c_cpu, batch, sa, sb, sc);
  c.gpu->gemm(ta, tb, m, n, k, 0.7f, ad, bd, 0.3f, c_gpu, batch, sa, sb, sc);
  c.gpu->synchronize();
  std::string what = tag("gemm", {m, n, k, batch, sa, sb, sc});
  what += std::string(" ta=") + (ta ? "1" : "0") + " tb=" + (tb ? "1" : "0") + " " +
          std::string(dtype_name(da)) + "x" + std::string(dtype_name(db)) + "->" + std::string(dtype_name(dc));
  // fp32: summation order differs (k <= 257 terms of size ~1): 1e-5 relative plus a small absolute floor.
  expect_close(c_gpu, c_cpu, tol_for(dc, {1e-5, 1e-5}), what);
}

void test_gemm(Ctx& c) {
  const int64_t sizes[][3] = {{1, 1, 1}, {7, 13, 257}, {257, 7, 13}, {13, 257, 7}, {64, 96, 128}};
  uint32_t seed = 100;
  for (auto& s : sizes)
    for (int t = 0; t < 4; ++t) {
      const bool ta = t & 1, tb = t & 2;
      test_gemm_case(c, ta, tb, s[0], s[1], s[2], DType::F32, DType::F32, DType::F32, 1, 0, 0, 0, seed += 3);
      test_gemm_case(c, ta, tb, s[0], s[1], s[2], DType::BF16, DType::BF16, DType::F32, 1, 0, 0, 0, seed += 3);
      test_gemm_case(c, ta, tb, s[0], s[1], s[2], DType::BF16, DType::BF16, DType::BF16, 1, 0, 0, 0, seed += 3);
      test_gemm_case(c, ta, tb, s[0], s[1], s[2], DType::F16, DType::F16, DType::F16, 1, 0, 0, 0, seed += 3);
      test_gemm_case(c, ta, tb, s[0], s[1], s[2], DType::F32, DType::BF16, DType::F16, 1, 0, 0, 0, seed += 3);
    }
  // Strided batches: contiguous, with gaps in C, and broadcast (0-stride) A or B.
  const int64_t m = 13, n = 7, k = 257;
  for (DType dt : {DType::F32, DType::BF16}) {
    test_gemm_case(c, false, true, m, n, k, dt, dt, DType::F32, 3, m * k, k * n, m * n, seed += 3);
    test_gemm_case(c, true, false, m, n, k, dt, dt, dt, 3, m * k + 1, k * n + 3, m * n + 5, seed += 3);
    test_gemm_case(c, false, false, m, n, k, dt, dt, DType::F32, 3, 0, k * n, m * n, seed += 3);
    test_gemm_case(c, false, false, m, n, k, dt, dt, DType::F32, 3, m * k, 0, m * n, seed += 3);
  }
  test_gemm_case(c, false, false, 7, 13, 0, DType::F32, DType::F32, DType::F32, 1, 0, 0, 0, seed += 3);  // k = 0
}

void test_elementwise(Ctx& c) {
  for (int64_t n : {1, 7, 13, 257, 4099}) {
    Tensor a = rand_host({n}, 1), b = rand_host({n}, 2), y = rand_host({n}, 3);
    Tensor ad = to_gpu(a), bd = to_gpu(b), yd = to_gpu(y);
    Tensor out = Tensor::empty({n}), outd = Tensor::empty({n}, DType::F32, Device::cuda(0));
    c.cpu->add(a, b, out);
    c.gpu->add(ad, bd, outd);
    expect_close(outd, out, {0, 0}, tag("add", {n}));
    c.cpu->axpy(-1.5f, a, y);
    c.gpu->axpy(-1.5f, ad, yd);
    expect_close(yd, y, {1e-6, 1e-6}, tag("axpy", {n}));  // a fused multiply-add may differ by 1 ulp
    c.cpu->scale(y, 0.37f);
    c.gpu->scale(yd, 0.37f);
    expect_close(yd, y, {1e-6, 1e-6}, tag("scale", {n}));
  }
  // Unaligned views (rows of 7 floats: 28-byte offsets) take the scalar paths.
  Tensor a = rand_host({9, 7}, 4), b = rand_host({9, 7}, 5);
  Tensor ad = to_gpu(a), bd = to_gpu(b);
  Tensor av = a.slice(1, 9), bv = b.slice(1, 9), adv = ad.slice(1, 9), bdv = bd.slice(1, 9);
  c.cpu->add(av, bv, av);  // out aliases a
  c.gpu->add(adv, bdv, adv);
  expect_close(ad, a, {0, 0}, "add unaligned view, out aliasing a");
}

void test_fill_copy_cast(Ctx& c) {
  for (DType dt : {DType::F32, DType::BF16, DType::F16, DType::I32}) {
    Tensor h = Tensor::empty({13}, dt), d = Tensor::empty({13}, dt, Device::cuda(0));
    const float v = dt == DType::I32 ? -7.0f : 0.1f;
    c.cpu->fill(h, v);
    c.gpu->fill(d, v);
    expect_bitwise(d, h, std::string("fill ") + std::string(dtype_name(dt)));
  }
  // Overlapping copy (memmove semantics) within one tensor.
  Tensor h = rand_host({8, 3}, 6), d = to_gpu(h);
  Tensor hs = h.slice(0, 5), hd = h.slice(2, 7), ds = d.slice(0, 5), dd = d.slice(2, 7);
  c.cpu->copy(hs, hd);
  c.gpu->copy(ds, dd);
  expect_bitwise(d, h, "copy overlapping");
  // Casts: random values at several scales plus specials (inf, NaN, f16 overflow, subnormals, ties).
  std::vector<float> vals;
  for (float s : {1e-7f, 1e-3f, 1.0f, 300.0f, 7e4f}) {
    Tensor r = rand_host({257}, 7 + static_cast<uint32_t>(s), DType::F32, -s, s);
    for (float x : r.to_vector()) vals.push_back(x);
  }
  const float inf = std::numeric_limits<float>::infinity();
  for (float x : {0.0f, -0.0f, inf, -inf, std::numeric_limits<float>::quiet_NaN(), 65504.0f, 65520.0f, 1e-8f,
                  5.9604645e-8f, 2.9802322e-8f, 1.00390625f, 1.01171875f, 3.4e38f, 1.1754944e-38f})
    vals.push_back(x);
  const int64_t n = static_cast<int64_t>(vals.size());
  const DType types[] = {DType::F32, DType::BF16, DType::F16};
  for (DType from : types)
    for (DType to : types) {
      Tensor src = Tensor::empty({n}, from);
      src.fill_from(vals);
      Tensor dst = Tensor::empty({n}, to), dstd = Tensor::empty({n}, to, Device::cuda(0));
      c.cpu->cast(src, dst);
      c.gpu->cast(to_gpu(src), dstd);
      expect_bitwise(dstd, dst, std::string("cast ") + std::string(dtype_name(from)) + "->" +
                                    std::string(dtype_name(to)));
    }
}

void test_sum_squares(Ctx& c) {
  for (DType dt : {DType::F32, DType::BF16, DType::F16})
    for (int64_t n : {1, 7, 257, (1 << 20) + 3}) {
      Tensor h = rand_host({n}, 8, dt), d = to_gpu(h);
      const double want = c.cpu->sum_squares(h);
      const double got = c.gpu->sum_squares(d), again = c.gpu->sum_squares(d);
      // Products are exact in double; only the summation order differs.
      const bool ok = std::fabs(got - want) <= 1e-10 * std::fabs(want) && got == again;
      std::printf("%s sum_squares %s [%lld]: got %.17g want %.17g (repeat %s)\n", ok ? "ok  " : "FAIL",
                  std::string(dtype_name(dt)).c_str(), static_cast<long long>(n), got, want,
                  got == again ? "bitwise equal" : "DIFFERS");
      if (!ok) ++failures();
    }
}

void test_bias(Ctx& c) {
  for (int64_t rows : {1, 7, 257, 1000})
    for (int64_t n : {1, 7, 13, 768}) {
      Tensor x = rand_host({rows, n}, 9), bias = rand_host({n}, 10), db = rand_host({n}, 11);
      Tensor xd = to_gpu(x), biasd = to_gpu(bias), dbd = to_gpu(db), dbd2 = to_gpu(db);
      c.cpu->bias_add(x, bias);
      c.gpu->bias_add(xd, biasd);
      expect_close(xd, x, {0, 0}, tag("bias_add", {rows, n}));
      c.cpu->bias_grad(x, db);  // accumulates onto the random initial dbias
      c.gpu->bias_grad(xd, dbd);
      c.gpu->bias_grad(xd, dbd2);
      expect_close(dbd, db, {1e-5 * std::sqrt(double(rows)), 1e-5}, tag("bias_grad", {rows, n}));
      expect_bitwise(dbd2, dbd, tag("bias_grad deterministic", {rows, n}));
    }
}

void test_layernorm(Ctx& c) {
  for (int64_t rows : {1, 7, 257})
    for (int64_t n : {1, 7, 13, 768}) {
      Tensor x = rand_host({rows, n}, 12, DType::F32, -2.0f, 2.0f), w = rand_host({n}, 13), b = rand_host({n}, 14);
      Tensor dy = rand_host({rows, n}, 15), dw = rand_host({n}, 16), db = rand_host({n}, 17);
      Tensor y = Tensor::empty({rows, n}), mean = Tensor::empty({rows}), rstd = Tensor::empty({rows});
      Tensor dx = Tensor::empty({rows, n});
      Tensor xd = to_gpu(x), wd = to_gpu(w), bd = to_gpu(b), dyd = to_gpu(dy), dwd = to_gpu(dw), dbd = to_gpu(db);
      Tensor yd = to_gpu(y), meand = to_gpu(mean), rstdd = to_gpu(rstd), dxd = to_gpu(dx);
      c.cpu->layernorm_forward(x, w, b, y, mean, rstd, 1e-5f);
      c.gpu->layernorm_forward(xd, wd, bd, yd, meand, rstdd, 1e-5f);
      expect_close(yd, y, {1e-5, 1e-5}, tag("layernorm_forward y", {rows, n}));
      expect_close(meand, mean, {1e-6, 1e-5}, tag("layernorm_forward mean", {rows, n}));
      expect_close(rstdd, rstd, {1e-6, 1e-5}, tag("layernorm_forward rstd", {rows, n}));
      // Backward from the same saved statistics on both sides.
      Tensor dwd2 = to_gpu(dw), dbd2 = to_gpu(db);
      c.cpu->layernorm_backward(dy, x, w, mean, rstd, dx, dw, db);
      c.gpu->layernorm_backward(dyd, xd, wd, to_gpu(mean), to_gpu(rstd), dxd, dwd, dbd);
      c.gpu->layernorm_backward(dyd, xd, wd, to_gpu(mean), to_gpu(rstd), dxd, dwd2, dbd2);
      // n == 1: rstd = 1/sqrt(eps) amplifies rounding; dx is then 0 up to that amplification.
      const double amp = n == 1 ? 1e3 : 1.0;
      expect_close(dxd, dx, {1e-5 * amp, 1e-4}, tag("layernorm_backward dx", {rows, n}));
      expect_close(dwd, dw, {1e-5 * std::sqrt(double(rows)), 1e-5}, tag("layernorm_backward dweight", {rows, n}));
      expect_close(dbd, db, {1e-5 * std::sqrt(double(rows)), 1e-5}, tag("layernorm_backward dbias", {rows, n}));
      expect_bitwise(dwd2, dwd, tag("layernorm_backward deterministic", {rows, n}));
    }
}

void test_gelu(Ctx& c) {
  for (int64_t n : {1, 7, 13, 257, 4099}) {
    Tensor x = rand_host({n}, 18, DType::F32, -4.0f, 4.0f), dy = rand_host({n}, 19);
    Tensor y = Tensor::empty({n}), dx = Tensor::empty({n});
    Tensor yd = to_gpu(y), dxd = to_gpu(dx);
    c.cpu->gelu_forward(x, y);
    c.cpu->gelu_backward(x, dy, dx);
    c.gpu->gelu_forward(to_gpu(x), yd);
    c.gpu->gelu_backward(to_gpu(x), to_gpu(dy), dxd);
    expect_close(yd, y, {1e-6, 5e-6}, tag("gelu_forward", {n}));
    expect_close(dxd, dx, {1e-6, 5e-6}, tag("gelu_backward", {n}));
  }
  Tensor x = rand_host({9, 7}, 20), y = Tensor::zeros({9, 7});
  Tensor xd = to_gpu(x), yd = to_gpu(y);
  Tensor xv = x.slice(1, 9), yv = y.slice(1, 9), xdv = xd.slice(1, 9), ydv = yd.slice(1, 9);
  c.cpu->gelu_forward(xv, yv);
  c.gpu->gelu_forward(xdv, ydv);
  expect_close(yd, y, {1e-6, 5e-6}, "gelu_forward unaligned view");
}

}  // namespace

int main() {
  if (skip_without_gpu()) return 77;
  Ctx c;
  std::printf("backend %s\n", c.gpu->name().c_str());
  test_gemm(c);
  test_elementwise(c);
  test_fill_copy_cast(c);
  test_sum_squares(c);
  test_bias(c);
  test_layernorm(c);
  test_gelu(c);
  return finish();
}
