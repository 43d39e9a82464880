// GPU: the cuBLASLt GELU epilogues of the fused 16-bit Linear ops (CudaBackend,
// lib/backend/cuda/cuda_gemm_epilogue.cpp) against the Backend default composition on the
// same GPU (gemm16 -> f32, bias_add, cast, the gelu.cu kernels) and against the CPU
// emulation, bf16 and f16:
//  - linear16_gelu_forward (CUBLASLT_EPILOGUE_GELU_AUX_BIAS / GELU_AUX): aux and y;
//  - linear16_dgelu_backward (CUBLASLT_EPILOGUE_DGELU): dx;
//    random operands, bias f32 / 16-bit / none, x f32 or 16-bit; one-ulp tolerances
//    (one_ulp_tol: bf16 1e-3 + 1.6e-2 |want|, f16 1e-4 + 2e-3 |want|: the f32 GEMM sums'
//    order differs, so a rounding may flip); a bitwise repeat; the epilogue counters
//    show the fused path ran for the aligned sizes (no bias or a 16-bit one, as GPT's;
//    an f32 bias is only reported) and fell back for an odd one;
//  - which GELU cuBLASLt computes: with W = I the GEMM is exact, so y = round(gelu(x))
//    and dx = round(gelu'(aux)) on a grid x = k/32 in [-6, 6); compared with the tanh
//    form (the one pp3d's CPU emulation and GPT-2 use) and the erf form, both in double
//    and rounded: it must be within one ulp of the tanh form (the erf form is up to 5%
//    away on the negative side, e.g. x = -2.7, which f16 resolves).
// Exits 77 without a GPU.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "cuda_test_util.h"

using namespace pp3d;
using namespace pp3d::cudatest;

namespace {

const char* name(DType dt) { return dt == DType::BF16 ? " bf16" : dt == DType::F16 ? " f16" : " f32"; }

CudaBackend& cuda(Ctx& c) { return dynamic_cast<CudaBackend&>(*c.gpu); }

Tensor gpu_zeros(const Shape& s, DType dt) { return to_gpu(Tensor::zeros(s, dt)); }

enum class Path { Fused, Fallback, Either };

// Checks that the last `calls` fused-op calls all ran fused, or all fell back (Either:
// only printed; an f32 bias with a 16-bit D is a combination cuBLASLt may not offer).
void expect_path(Ctx& c, const CudaBackend::EpilogueCounts& before, int64_t calls, Path want,
                 const std::string& what) {
  const auto& now = cuda(c).epilogue_counts();
  const int64_t fused = now.fused - before.fused, fallback = now.fallback - before.fallback;
  const bool ok = want == Path::Fused ? fused == calls : want == Path::Fallback ? fallback == calls : true;
  std::printf("%s %s: %lld fused, %lld fallback (expected %s)\n", ok ? (want == Path::Either ? "info" : "ok  ") : "FAIL",
              what.c_str(), static_cast<long long>(fused), static_cast<long long>(fallback),
              want == Path::Fused ? "fused" : want == Path::Fallback ? "fallback" : "either");
  if (!ok) ++failures();
}

void test_gelu_forward(Ctx& c, DType dt, DType xdt, int bias_kind, int64_t rows, int64_t out, int64_t in,
                       uint32_t seed) {
  const Tensor x = rand_host({rows, in}, seed, xdt), w = rand_host({out, in}, seed + 1, dt);
  const Tensor b = bias_kind == 0 ? Tensor() : rand_host({out}, seed + 2, bias_kind == 1 ? DType::F32 : dt, -2, 2);
  Tensor aux = Tensor::zeros({rows, out}, dt), y = Tensor::zeros({rows, out}, dt);
  c.cpu->linear16_gelu_forward(dt, rows, out, in, x, w, b, aux, y);
  const Tensor gx = to_gpu(x), gw = to_gpu(w), gb = b.defined() ? to_gpu(b) : Tensor();
  Tensor faux = gpu_zeros({rows, out}, dt), fy = gpu_zeros({rows, out}, dt);
  Tensor aaux = gpu_zeros({rows, out}, dt), ay = gpu_zeros({rows, out}, dt);
  Tensor daux = gpu_zeros({rows, out}, dt), dy = gpu_zeros({rows, out}, dt);
  const auto before = cuda(c).epilogue_counts();
  c.gpu->linear16_gelu_forward(dt, rows, out, in, gx, gw, gb, faux, fy);
  c.gpu->linear16_gelu_forward(dt, rows, out, in, gx, gw, gb, aaux, ay);
  const std::string what = tag("linear16_gelu_forward", {rows, out, in}, name(dt)) + " x" + name(xdt) +
                           (bias_kind == 0 ? " no bias" : bias_kind == 1 ? " bias f32" : " bias 16");
  expect_path(c, before, 2, out % 8 != 0 ? Path::Fallback : bias_kind == 1 ? Path::Either : Path::Fused, what);
  c.gpu->Backend::linear16_gelu_forward(dt, rows, out, in, gx, gw, gb, daux, dy);  // separate kernels
  c.gpu->synchronize();
  expect_close(to_host_f32(fy), to_host_f32(dy), one_ulp_tol(dt), what + " y: epilogue vs kernels");
  expect_close(to_host_f32(faux), to_host_f32(daux), one_ulp_tol(dt), what + " aux: epilogue vs kernels");
  expect_close(to_host_f32(fy), to_host_f32(y), one_ulp_tol(dt), what + " y: epilogue vs cpu");
  expect_close(to_host_f32(faux), to_host_f32(aux), one_ulp_tol(dt), what + " aux: epilogue vs cpu");
  expect_bitwise(ay, fy, what + " y repeat");
  expect_bitwise(aaux, faux, what + " aux repeat");
}

void test_dgelu(Ctx& c, DType dt, DType dydt, int64_t rows, int64_t out, int64_t in, uint32_t seed) {
  const Tensor dy = rand_host({rows, out}, seed, dydt), w = rand_host({out, in}, seed + 1, dt, -0.5f, 0.5f);
  const Tensor aux = rand_host({rows, in}, seed + 2, dt, -3.0f, 3.0f);
  Tensor dx = Tensor::zeros({rows, in}, dt);
  c.cpu->linear16_dgelu_backward(dt, rows, out, in, dy, w, aux, dx);
  const Tensor gdy = to_gpu(dy), gw = to_gpu(w), gaux = to_gpu(aux);
  Tensor fdx = gpu_zeros({rows, in}, dt), adx = gpu_zeros({rows, in}, dt), ddx = gpu_zeros({rows, in}, dt);
  const auto before = cuda(c).epilogue_counts();
  c.gpu->linear16_dgelu_backward(dt, rows, out, in, gdy, gw, gaux, fdx);
  c.gpu->linear16_dgelu_backward(dt, rows, out, in, gdy, gw, gaux, adx);
  const std::string what = tag("linear16_dgelu_backward", {rows, out, in}, name(dt)) + " dy" + name(dydt);
  expect_path(c, before, 2, in % 8 == 0 ? Path::Fused : Path::Fallback, what);
  c.gpu->Backend::linear16_dgelu_backward(dt, rows, out, in, gdy, gw, gaux, ddx);
  c.gpu->synchronize();
  expect_close(to_host_f32(fdx), to_host_f32(ddx), one_ulp_tol(dt), what + " dx: epilogue vs kernels");
  expect_close(to_host_f32(fdx), to_host_f32(dx), one_ulp_tol(dt), what + " dx: epilogue vs cpu");
  expect_bitwise(adx, fdx, what + " repeat");
}

double gelu_tanh(double x) { return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x))); }
double gelu_erf(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }
double dgelu_tanh(double x) {
  const double k = std::sqrt(2.0 / M_PI), t = std::tanh(k * (x + 0.044715 * x * x * x));
  return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3.0 * 0.044715 * x * x);
}
double dgelu_erf(double x) { return 0.5 * (1.0 + std::erf(x / std::sqrt(2.0))) + x * std::exp(-0.5 * x * x) / std::sqrt(2.0 * M_PI); }

// f(v) for every v, rounded to dt, as f32.
std::vector<float> rounded_ref(const std::vector<float>& v, double (*f)(double), DType dt) {
  std::vector<float> r;
  for (float x : v) r.push_back(static_cast<float>(f(x)));
  Tensor o = Tensor::empty({static_cast<int64_t>(r.size())}, dt);
  o.fill_from(r);  // rounds to dt
  return to_host_f32(o);
}

// Within one ulp of the 16-bit dtype, relative (a GELU of an exact input: no summation order).
Tol form_tol(DType dt) { return dt == DType::BF16 ? Tol{1e-6, 8e-3} : Tol{1e-6, 2e-3}; }

double max_rel(const std::vector<float>& got, const std::vector<float>& want) {
  double worst = 0.0;
  for (std::size_t i = 0; i < got.size(); ++i)
    worst = std::max(worst, std::fabs(got[i] - want[i]) / std::max(std::fabs(static_cast<double>(want[i])), 1e-3));
  return worst;
}

void test_gelu_form(Ctx& c, DType dt) {
  const int64_t rows = 6, n = 64;  // x [rows, n] . I[n, n]^T: exact
  std::vector<float> grid(rows * n), eye(n * n, 0.0f), ones(rows * n, 1.0f);
  for (int64_t i = 0; i < rows * n; ++i) grid[i] = static_cast<float>(i - rows * n / 2) / 32.0f;  // exact in bf16
  for (int64_t i = 0; i < n; ++i) eye[i * n + i] = 1.0f;
  auto dev16 = [&](const std::vector<float>& v, const Shape& s) {
    Tensor h = Tensor::empty(s, dt);
    h.fill_from(v);
    return to_gpu(h);
  };
  const Tensor x = dev16(grid, {rows, n}), w = dev16(eye, {n, n}), dy = dev16(ones, {rows, n});
  Tensor aux = gpu_zeros({rows, n}, dt), y = gpu_zeros({rows, n}, dt), dx = gpu_zeros({rows, n}, dt);
  const auto before = cuda(c).epilogue_counts();
  c.gpu->linear16_gelu_forward(dt, rows, n, n, x, w, Tensor(), aux, y);
  c.gpu->linear16_dgelu_backward(dt, rows, n, n, dy, w, x, dx);
  const std::string what = std::string("cuBLASLt GELU form") + name(dt);
  expect_path(c, before, 2, Path::Fused, what);
  c.gpu->synchronize();
  const std::vector<float> gy = to_host_f32(y), gdx = to_host_f32(dx);
  expect_close(to_host_f32(aux), grid, {0.0, 0.0}, what + " aux = x (exact GEMM)");
  std::printf("info %s: y vs tanh form %.3e, vs erf form %.3e; gelu' vs tanh form %.3e, vs erf form %.3e "
              "(max relative)\n",
              what.c_str(), max_rel(gy, rounded_ref(grid, gelu_tanh, dt)), max_rel(gy, rounded_ref(grid, gelu_erf, dt)),
              max_rel(gdx, rounded_ref(grid, dgelu_tanh, dt)), max_rel(gdx, rounded_ref(grid, dgelu_erf, dt)));
  expect_close(gy, rounded_ref(grid, gelu_tanh, dt), form_tol(dt), what + " y = round(gelu_tanh(x))");
  expect_close(gdx, rounded_ref(grid, dgelu_tanh, dt), form_tol(dt), what + " dx = round(gelu_tanh'(x))");
}

}  // namespace

int main() {
  if (skip_without_gpu()) return 77;
  Ctx c;
  std::printf("backend %s\n", c.gpu->name().c_str());
  uint32_t seed = 100;
  for (DType dt : {DType::BF16, DType::F16}) {
    test_gelu_form(c, dt);
    for (int bias_kind = 0; bias_kind < 3; ++bias_kind) {
      test_gelu_forward(c, dt, DType::F32, bias_kind, 64, 256, 128, seed += 3);  // GPT c_fc: [B*T, 4C] = [B*T, C]
      test_gelu_forward(c, dt, dt, bias_kind, 33, 96, 72, seed += 3);
    }
    test_gelu_forward(c, dt, dt, 1, 7, 30, 20, seed += 3);  // aux ld 30: not divisible by 8, falls back
    for (DType dydt : {DType::F32, dt}) {
      test_dgelu(c, dt, dydt, 64, 128, 256, seed += 3);  // GPT mlp_proj dgrad: [B*T, 4C] = [B*T, C] . [C, 4C]
      test_dgelu(c, dt, dydt, 33, 72, 96, seed += 3);
    }
    test_dgelu(c, dt, dt, 7, 20, 30, seed += 3);  // falls back
  }
  return finish();
}
