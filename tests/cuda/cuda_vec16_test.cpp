// GPU: the vectorised memory-bound kernels (8 elements per 128-bit access when n and the
// pointers allow it, the scalar loop otherwise: kernels/common.cuh load_vec_as_f32 /
// map_typed) in bf16 and f16 against the CPU backend's emulation on the same inputs:
// LayerNorm forward / backward (dweight, dbias f32 or 16-bit), GELU forward / backward,
// bias_grad (16-bit dy, f32 or 16-bit dbias), cast, and scale / axpy on 16-bit arrays.
// Every op runs on shapes that take the vector path (n % 8 == 0, 16-byte aligned) and the
// scalar fallback (odd n, views at an odd element offset, n > 4096 in LayerNorm backward),
// and is repeated (bitwise: the kernels are deterministic). Where both paths compute each
// element with the same f32 operations in the same order (GELU, cast, scale, axpy, the
// bias_grad and LayerNorm parameter-gradient column sums) the vector result must equal the
// scalar one bitwise. Tolerances vs the CPU: one 16-bit ulp where the f32 reduction order
// differs (bf16 1e-3 + 1.6e-2 |x|, f16 1e-4 + 2e-3 |x|); cast, scale and axpy bitwise.
// Exits 77 without a GPU.
#include <cmath>
#include <cstdio>
#include <string>

#include "cuda_test_util.h"

using namespace pp3d;
using namespace pp3d::cudatest;

namespace {

Tol ulp_tol(DType dt) {
  if (dt == DType::BF16) return {1e-3, 1.6e-2};
  return dt == DType::F16 ? Tol{1e-4, 2e-3} : Tol{1e-5, 1e-4};
}
std::string name(DType dt) { return std::string(" ") + std::string(dtype_name(dt)); }
std::string at(int64_t off) { return off == 0 ? " aligned" : " offset " + std::to_string(off); }

// `t` (host) copied to the GPU at element `off` of a larger buffer: off 0 keeps the
// 16-byte alignment of the allocation, an odd off forces the scalar fallback.
Tensor gpu_at(const Tensor& t, int64_t off) {
  const Tensor buf = Tensor::zeros({t.numel() + off}, t.dtype(), Device::cuda(0));
  Tensor v = buf.slice(off, off + t.numel()).reshape(t.shape());
  v.copy_from(t);
  return v;
}

void test_layernorm(Ctx& c, DType dt, DType xdt, DType gdt, int64_t rows, int64_t n, int64_t off, uint32_t seed) {
  const Tensor x = rand_host({rows, n}, seed, xdt, -2.0f, 2.0f), dy = rand_host({rows, n}, seed + 1, dt);
  const Tensor w = rand_host({n}, seed + 2), b = rand_host({n}, seed + 3);
  const Tensor dw0 = rand_host({n}, seed + 4, gdt), db0 = rand_host({n}, seed + 5, gdt);
  Tensor y = Tensor::empty({rows, n}, dt), mean = Tensor::empty({rows}), rstd = Tensor::empty({rows});
  Tensor dx = Tensor::empty({rows, n}, xdt), dw = dw0.clone(), db = db0.clone();
  c.cpu->layernorm_forward(x, w, b, y, mean, rstd, 1e-5f);
  c.cpu->layernorm_backward(dy, x, w, mean, rstd, dx, dw, db);
  const Tensor gx = gpu_at(x, off), gdy = gpu_at(dy, off), gw = to_gpu(w), gb = to_gpu(b);
  const std::string what = tag("layernorm", {rows, n}, (name(dt) + " x" + name(xdt) + " grad" + name(gdt)).c_str()) +
                           at(off);
  Tensor gy[2], gdx[2], gdw[2], gdb[2];
  for (int rep = 0; rep < 2; ++rep) {
    gy[rep] = gpu_at(Tensor::zeros({rows, n}, dt), off);
    gdx[rep] = gpu_at(Tensor::zeros({rows, n}, xdt), off);
    gdw[rep] = to_gpu(dw0);
    gdb[rep] = to_gpu(db0);
    Tensor gm = to_gpu(Tensor::zeros({rows})), gr = to_gpu(Tensor::zeros({rows}));
    c.gpu->layernorm_forward(gx, gw, gb, gy[rep], gm, gr, 1e-5f);
    if (rep == 0) {
      expect_close(gm, mean, {1e-6, 1e-5}, what + " mean");
      expect_close(gr, rstd, {1e-6, 1e-5}, what + " rstd");
    }
    // Backward from the CPU's statistics: dx then differs only by the kernel's own math.
    c.gpu->layernorm_backward(gdy, gx, gw, to_gpu(mean), to_gpu(rstd), gdx[rep], gdw[rep], gdb[rep]);
  }
  const double sq = std::sqrt(static_cast<double>(rows));  // f32 sums in another order
  const Tol gtol = gdt == DType::F32 ? Tol{2e-5 * sq, 1e-5} : ulp_tol(gdt);
  expect_close(gy[0], y, ulp_tol(dt), what + " y");
  expect_close(gdx[0], dx, ulp_tol(xdt), what + " dx");
  expect_close(gdw[0], dw, gtol, what + " dweight");
  expect_close(gdb[0], db, gtol, what + " dbias");
  expect_bitwise(gy[1], gy[0], what + " y repeat");
  expect_bitwise(gdx[1], gdx[0], what + " dx repeat");
  expect_bitwise(gdw[1], gdw[0], what + " dweight repeat");
  expect_bitwise(gdb[1], gdb[0], what + " dbias repeat");
  if (off != 0 || n % 8 != 0 || n > 4096) return;
  // The parameter gradients sum each column over the same rows in the same order on
  // both paths: the scalar kernel (a misaligned view of the same values) must agree bitwise.
  Tensor sdw = to_gpu(dw0), sdb = to_gpu(db0), sdx = gpu_at(Tensor::zeros({rows, n}, xdt), 1);
  c.gpu->layernorm_backward(gpu_at(dy, 1), gpu_at(x, 1), gw, to_gpu(mean), to_gpu(rstd), sdx, sdw, sdb);
  expect_bitwise(sdw, gdw[0], what + " dweight vector == scalar");
  expect_bitwise(sdb, gdb[0], what + " dbias vector == scalar");
}

void test_gelu(Ctx& c, DType dt, DType ydt, int64_t n, uint32_t seed) {
  const Tensor x = rand_host({n}, seed, dt, -4.0f, 4.0f), dy = rand_host({n}, seed + 1, dt);
  Tensor y = Tensor::empty({n}, ydt), dx = Tensor::empty({n}, dt);
  c.cpu->gelu_forward(x, y);
  c.cpu->gelu_backward(x, dy, dx);
  Tensor gy[3], gdx[3];  // aligned, aligned repeat, offset 1
  for (int rep = 0; rep < 3; ++rep) {
    const int64_t off = rep == 2 ? 1 : 0;
    gy[rep] = gpu_at(Tensor::zeros({n}, ydt), off);
    gdx[rep] = gpu_at(Tensor::zeros({n}, dt), off);
    c.gpu->gelu_forward(gpu_at(x, off), gy[rep]);
    c.gpu->gelu_backward(gpu_at(x, off), gpu_at(dy, off), gdx[rep]);
  }
  const std::string what = tag("gelu", {n}, (name(dt) + " y" + name(ydt)).c_str());
  expect_close(gy[0], y, ulp_tol(ydt), what + " y");
  expect_close(gdx[0], dx, ulp_tol(dt), what + " dx");
  expect_bitwise(gy[1], gy[0], what + " y repeat");
  expect_bitwise(gdx[1], gdx[0], what + " dx repeat");
  expect_bitwise(gy[2], gy[0], what + " y vector == scalar");
  expect_bitwise(gdx[2], gdx[0], what + " dx vector == scalar");
}

void test_bias_grad(Ctx& c, DType dt, DType gdt, int64_t rows, int64_t n, uint32_t seed) {
  const Tensor dy = rand_host({rows, n}, seed, dt), db0 = rand_host({n}, seed + 1, gdt);
  Tensor db = db0.clone();
  c.cpu->bias_grad(dy, db);
  Tensor gdb[3];  // aligned, aligned repeat, offset 1
  for (int rep = 0; rep < 3; ++rep) {
    gdb[rep] = to_gpu(db0);
    c.gpu->bias_grad(gpu_at(dy, rep == 2 ? 1 : 0), gdb[rep]);
  }
  const std::string what = tag("bias_grad", {rows, n}, (name(dt) + " dbias" + name(gdt)).c_str());
  const Tol tol = gdt == DType::F32 ? Tol{2e-5 * std::sqrt(static_cast<double>(rows)), 1e-5} : ulp_tol(gdt);
  expect_close(gdb[0], db, tol, what);
  expect_bitwise(gdb[1], gdb[0], what + " repeat");
  expect_bitwise(gdb[2], gdb[0], what + " vector == scalar");
}

// cast, scale and axpy: the same f32 operations as the CPU backend (no FMA): bitwise.
void test_flat(Ctx& c, DType a, DType b, int64_t n, int64_t off, uint32_t seed) {
  const Tensor x = rand_host({n}, seed, a, -3.0f, 3.0f), y0 = rand_host({n}, seed + 1, b, -3.0f, 3.0f);
  const std::string what = name(a) + " ->" + name(b) + " [" + std::to_string(n) + "]" + at(off);
  Tensor cast = Tensor::empty({n}, b), gcast = gpu_at(Tensor::zeros({n}, b), off);
  c.cpu->cast(x, cast);
  c.gpu->cast(gpu_at(x, off), gcast);
  expect_bitwise(gcast, cast, "cast" + what);
  Tensor y = y0.clone(), gy = gpu_at(y0, off);  // y = round(round(y * 0.37) - 1.5 x)
  c.cpu->scale(y, 0.37f);
  c.gpu->scale(gy, 0.37f);
  c.cpu->axpy(-1.5f, x, y);
  c.gpu->axpy(-1.5f, gpu_at(x, off), gy);
  expect_bitwise(gy, y, "scale + axpy" + what);
}

}  // namespace

int main() {
  if (skip_without_gpu()) return 77;
  Ctx c;
  uint32_t seed = 3300;
  for (DType dt : {DType::BF16, DType::F16}) {
    for (DType xdt : {DType::F32, dt})  // the residual stream x is f32 or 16-bit
      for (DType gdt : {DType::F32, dt}) {  // --grad-dtype f32 / param
        test_layernorm(c, dt, xdt, gdt, 300, 768, 0, seed += 10);  // GPT-2 124M width: vector paths
        test_layernorm(c, dt, xdt, gdt, 300, 768, 1, seed += 10);  // misaligned view: scalar
      }
    test_layernorm(c, dt, dt, dt, 70, 1024, 0, seed += 10);
    test_layernorm(c, dt, DType::F32, DType::F32, 19, 100, 0, seed += 10);  // n % 8 != 0: scalar
    test_layernorm(c, dt, dt, DType::F32, 9, 77, 0, seed += 10);
    test_layernorm(c, dt, dt, dt, 4, 4096, 0, seed += 10);            // the widest vector backward
    test_layernorm(c, dt, dt, DType::F32, 5, 4104, 0, seed += 10);  // forward vector, backward scalar
    test_layernorm(c, dt, dt, DType::F32, 3, 8, 0, seed += 10);
    for (int64_t n : {8013, 7, 64})  // vector + tail, tail only, vector only
      for (DType ydt : {dt, DType::F32}) test_gelu(c, dt, ydt, n, seed += 10);
    for (DType gdt : {DType::F32, dt}) {
      test_bias_grad(c, dt, gdt, 300, 768, seed += 10);
      test_bias_grad(c, dt, gdt, 1000, 1024, seed += 10);
      test_bias_grad(c, dt, gdt, 45, 77, seed += 10);  // odd n: scalar on both "paths"
    }
    const DType other = dt == DType::BF16 ? DType::F16 : DType::BF16;
    for (int64_t off : {0, 1})
      for (DType b : {DType::F32, other}) {
        test_flat(c, dt, b, 8013, off, seed += 10);
        test_flat(c, b, dt, 8013, off, seed += 10);
      }
    test_flat(c, dt, dt, 1003, 0, seed += 10);  // scale / axpy with x and y 16-bit (cast: a copy)
  }
  return finish();
}
