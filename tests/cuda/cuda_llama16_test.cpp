// GPU: the Llama ops with 16-bit operands (bf16 and f16, the Llama's
// --compute-dtype param) on CudaBackend against CpuBackend's 16-bit emulation
// (lib/backend/cpu/cpu_llama_ops.cpp, cpu_attention.cpp) on the same 16-bit inputs.
//  - RMSNorm, SwiGLU, RoPE (kernels/llama_ops.cu, native 16-bit I/O): both sides
//    do f32 math and round each output once, so a 16-bit output may differ by
//    at most 1 ulp of its dtype (the f32 values differ in their last bits: the
//    order of RMSNorm's sums, device expf / sincos, fma contraction; a
//    difference that straddles a rounding boundary flips one ulp), or by a
//    small absolute error where the f32 math cancels (near-zero outputs of
//    SwiGLU's dgate, RoPE, RMSNorm's dx). f32 outputs (rstd, dx from an f32 x,
//    dweight) at f32 tolerances. Dtype mixes as the Llama calls them (RMSNorm
//    forward f32 x -> 16-bit y; backward 16-bit dy, f32 x -> f32 dx) and all
//    16-bit; RMSNorm backward is bitwise repeatable.
//  - grouped-query attention, Hq / Hkv in {1, 2, 4} (cuDNN SDPA on q, k, v in
//    place when built with the frontend, attention_impl printed): out and the
//    gradients by relative L2, lse by max abs error (the fused kernel rounds P
//    and dS per key tile of its online softmax, the emulation over one tile);
//    forward bitwise repeatable; backward repeat reported (cuDNN accumulates dQ
//    in f32 in an unspecified order). cuDNN does not document whether GQA's
//    dK / dV round each query head's term before the group sum: the test
//    prints the distance of cuDNN's dk / dv to the emulation (f32 group sum,
//    rounded once) and to the per-head-rounded sum, and which is closer.
// Exits 77 without a GPU.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "cuda_test_util.h"

using namespace pp3d;
using namespace pp3d::cudatest;

namespace {

const char* name(DType dt) { return dt == DType::BF16 ? " bf16" : " f16"; }

// Position of a 16-bit value on the number line (ordered integers, -0 == +0).
int ordered16(float v, DType dt) {
  const uint16_t h = dt == DType::BF16 ? f32_to_bf16(v) : f32_to_f16(v);
  const int mag = h & 0x7fff;
  return (h & 0x8000) ? -mag : mag;
}

// Every element within max_ulps of its 16-bit dtype, or within atol (f32 cancellation).
void expect_ulps(const Tensor& got_t, const Tensor& want_t, DType dt, int max_ulps, double atol,
                 const std::string& what) {
  const std::vector<float> got = to_host(got_t), want = want_t.to_vector();
  int worst = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    if (got[i] == want[i]) continue;
    const int ulps = std::abs(ordered16(got[i], dt) - ordered16(want[i], dt));
    if (ulps > max_ulps && !(std::fabs(double(got[i]) - want[i]) <= atol)) {
      std::printf("FAIL %s at %zu: got %.9g want %.9g (%d ulps > %d, atol %g)\n", what.c_str(), i, got[i], want[i],
                  ulps, max_ulps, atol);
      ++failures();
      return;
    }
    worst = std::max(worst, ulps);
  }
  std::printf("ok   %s (%zu values, max %d ulp)\n", what.c_str(), want.size(), worst);
}

Tensor host(const Shape& s, DType dt) { return Tensor::empty(s, dt); }
Tensor dev(const Shape& s, DType dt) { return Tensor::empty(s, dt, Device::cuda(0)); }

void test_rmsnorm(Ctx& c, DType dt) {
  for (const auto& rn : {std::pair<int64_t, int64_t>{1, 1}, {70, 96}, {257, 4096}}) {
    const int64_t rows = rn.first, n = rn.second;
    const auto what = [&](const char* op) { return tag(op, {rows, n}, name(dt)); };
    const Tensor w = rand_host({n}, 31, DType::F32, 0.5f, 1.5f), wd = to_gpu(w);
    for (DType xdt : {DType::F32, dt}) {  // the Llama's f32 residual stream, and a 16-bit x
      const Tensor x = rand_host({rows, n}, 32, xdt, -2.0f, 2.0f), xd = to_gpu(x);
      Tensor y = host({rows, n}, dt), rstd = Tensor::empty({rows}), yd = dev({rows, n}, dt);
      Tensor rstdd = dev({rows}, DType::F32);
      c.cpu->rmsnorm_forward(x, w, y, rstd, 1e-5f);
      c.gpu->rmsnorm_forward(xd, wd, yd, rstdd, 1e-5f);
      const bool x16 = xdt != DType::F32;
      expect_ulps(yd, y, dt, 1, 1e-6, what(x16 ? "rmsnorm_forward 16-bit x -> y" : "rmsnorm_forward f32 x -> y"));
      expect_close(rstdd, rstd, {1e-6, 1e-5}, what("rmsnorm_forward rstd"));
      // Backward: dy 16-bit; dx in x's dtype (f32 in the Llama), dweight f32 (+=).
      const Tensor dy = rand_host({rows, n}, 33, dt), dyd = to_gpu(dy), rd = to_gpu(rstd);
      Tensor dx = host({rows, n}, xdt), dw = rand_host({n}, 34), dxd[2], dwd[2];
      c.cpu->rmsnorm_backward(dy, x, w, rstd, dx, dw);
      for (int r = 0; r < 2; ++r) {
        dxd[r] = dev({rows, n}, xdt);
        dwd[r] = to_gpu(rand_host({n}, 34));
        c.gpu->rmsnorm_backward(dyd, xd, wd, rd, dxd[r], dwd[r]);
      }
      if (x16) expect_ulps(dxd[0], dx, dt, 1, 1e-5, what("rmsnorm_backward 16-bit dx"));
      else expect_close(dxd[0], dx, {1e-5, 1e-4}, what("rmsnorm_backward f32 dx (16-bit dy)"));
      expect_close(dwd[0], dw, {1e-4, 1e-4}, what("rmsnorm_backward dweight f32 (+=)"));
      expect_bitwise(dxd[1], dxd[0], what("rmsnorm_backward dx repeat"));
      expect_bitwise(dwd[1], dwd[0], what("rmsnorm_backward dweight repeat"));
    }
  }
}

void test_swiglu(Ctx& c, DType dt) {
  for (int64_t n : {int64_t{1}, int64_t{1000}, int64_t{65537}}) {
    const auto what = [&](const char* op) { return tag(op, {n}, name(dt)); };
    const Tensor g = rand_host({n}, 35, dt, -6.0f, 6.0f), u = rand_host({n}, 36, dt), d = rand_host({n}, 37, dt);
    const Tensor gd = to_gpu(g), ud = to_gpu(u);
    Tensor out = host({n}, dt), outd = dev({n}, dt);
    c.cpu->swiglu_forward(g, u, out);
    c.gpu->swiglu_forward(gd, ud, outd);
    expect_ulps(outd, out, dt, 1, 1e-6, what("swiglu_forward"));
    Tensor dg = host({n}, dt), du = host({n}, dt), dgd = dev({n}, dt), dud = dev({n}, dt);
    c.cpu->swiglu_backward(g, u, d, dg, du);
    c.gpu->swiglu_backward(gd, ud, to_gpu(d), dgd, dud);
    expect_ulps(dgd, dg, dt, 1, 1e-6, what("swiglu_backward dgate"));
    expect_ulps(dud, du, dt, 1, 1e-6, what("swiglu_backward dup"));
  }
}

void test_rope(Ctx& c, DType dt) {
  const int64_t cases[][6] = {{1, 1, 1, 2, 0, 10000}, {2, 37, 6, 64, 3, 10000}, {1, 5, 8, 128, 100000, 500000}};
  for (auto& s : cases) {
    const int64_t B = s[0], T = s[1], H = s[2], D = s[3], pos0 = s[4];
    const float theta = static_cast<float>(s[5]);
    const auto what = [&](const char* op) { return tag(op, {B, T, H, D, pos0}, name(dt)); };
    const Tensor x = rand_host({B, T, H, D}, 38, dt, -2.0f, 2.0f);
    Tensor y = host(x.shape(), dt), yd = to_gpu(x);
    c.cpu->rope_forward(x, y, pos0, theta);
    c.gpu->rope_forward(yd, yd, pos0, theta);  // in place, as the Llama calls it
    expect_ulps(yd, y, dt, 1, 1e-6, what("rope_forward (in place)"));
    Tensor dx = host(x.shape(), dt), dxd = to_gpu(x);
    c.cpu->rope_backward(x, dx, pos0, theta);
    c.gpu->rope_backward(dxd, dxd, pos0, theta);
    expect_ulps(dxd, dx, dt, 1, 1e-6, what("rope_backward (in place)"));
  }
}

// k [B, T, Hkv, D] with each kv head repeated over its query group: [B, T, Hq, D] (HF repeat_kv).
Tensor repeat_kv(const Tensor& k, int64_t Hq) {
  const int64_t B = k.size(0), T = k.size(1), Hkv = k.size(2), D = k.size(3), rep = Hq / Hkv;
  const std::vector<float> src = k.to_vector();
  std::vector<float> out(static_cast<std::size_t>(B * T * Hq * D));
  for (int64_t bt = 0; bt < B * T; ++bt)
    for (int64_t h = 0; h < Hq; ++h)
      for (int64_t d = 0; d < D; ++d) out[(bt * Hq + h) * D + d] = src[(bt * Hkv + h / rep) * D + d];
  Tensor t = Tensor::empty({B, T, Hq, D}, k.dtype());
  t.fill_from(out);
  return t;
}

// dk of the expanded (MHA) problem [B, T, Hq, D], each query head's term already rounded,
// summed over each group in f32 and rounded once more: the "per-head rounding" definition.
Tensor group_sum(const Tensor& dk_heads, int64_t Hkv) {
  const int64_t B = dk_heads.size(0), T = dk_heads.size(1), Hq = dk_heads.size(2), D = dk_heads.size(3);
  const std::vector<float> src = dk_heads.to_vector();
  std::vector<float> out(static_cast<std::size_t>(B * T * Hkv * D), 0.0f);
  for (int64_t bt = 0; bt < B * T; ++bt)
    for (int64_t h = 0; h < Hq; ++h)
      for (int64_t d = 0; d < D; ++d) out[(bt * Hkv + h / (Hq / Hkv)) * D + d] += src[(bt * Hq + h) * D + d];
  Tensor t = Tensor::empty({B, T, Hkv, D}, dk_heads.dtype());
  t.fill_from(out);
  return t;
}

// Informative (T below cuDNN's key tile makes its P rounding the emulation's, so the
// dK/dV definition dominates the difference): distance and share of bitwise-equal elements.
void report_dkv_rounding(const Tensor& gpu, const Tensor& f32_sum, const Tensor& per_head, const std::string& what) {
  const std::vector<float> g = to_host(gpu), a = f32_sum.to_vector(), b = per_head.to_vector();
  std::size_t eq_a = 0, eq_b = 0;
  for (std::size_t i = 0; i < g.size(); ++i) {
    eq_a += g[i] == a[i];
    eq_b += g[i] == b[i];
  }
  const double ra = rel_l2(g, a), rb = rel_l2(g, b), n = static_cast<double>(g.size());
  std::printf("info %s: f32 group sum rel L2 %.3e (%.1f%% equal), per-head-rounded sum %.3e (%.1f%% equal) -> %s\n",
              what.c_str(), ra, 100.0 * eq_a / n, rb, 100.0 * eq_b / n,
              ra < rb ? "closer to the f32 group sum" : ra > rb ? "closer to per-head rounding" : "undecided");
}

void test_gqa(Ctx& c, DType dt, int64_t B, int64_t T, int64_t Hq, int64_t Hkv, int64_t D, uint32_t seed) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const std::string what = tag("gqa", {B, T, Hq, Hkv, D}, name(dt));
  const Tensor q = rand_host({B, T, Hq, D}, seed, dt, -2.0f, 2.0f), k = rand_host({B, T, Hkv, D}, seed + 1, dt, -2.0f,
                                                                                    2.0f);
  const Tensor v = rand_host({B, T, Hkv, D}, seed + 2, dt), dout = rand_host({B, T, Hq, D}, seed + 3, dt);
  Tensor out = host(q.shape(), dt), lse = Tensor::empty({B, Hq, T});
  Tensor dq = host(q.shape(), dt), dk = host(k.shape(), dt), dv = host(v.shape(), dt);
  c.cpu->gqa_attention_forward(q, k, v, out, lse, scale);
  c.cpu->gqa_attention_backward(dout, q, k, v, out, lse, dq, dk, dv, scale);

  const Tensor qd = to_gpu(q), kd = to_gpu(k), vd = to_gpu(v), doutd = to_gpu(dout);
  Tensor outd[2], lsed[2], dqd[2], dkd[2], dvd[2];
  for (int r = 0; r < 2; ++r) {
    outd[r] = dev(q.shape(), dt);
    lsed[r] = dev({B, Hq, T}, DType::F32);
    c.gpu->gqa_attention_forward(qd, kd, vd, outd[r], lsed[r], scale);
  }
  for (int r = 0; r < 2; ++r) {
    dqd[r] = dev(q.shape(), dt);
    dkd[r] = dev(k.shape(), dt);
    dvd[r] = dev(v.shape(), dt);
    c.gpu->gqa_attention_backward(doutd, qd, kd, vd, outd[0], lsed[0], dqd[r], dkd[r], dvd[r], scale);
  }
  const double bound = dt == DType::BF16 ? 1e-2 : 2e-3;  // cuda_sdpa_test's bounds against f32 math
  expect_rel_l2(to_host(outd[0]), out.to_vector(), bound, what + " out");
  expect_max_abs(to_host(lsed[0]), lse.to_vector(), 1e-3, what + " lse");
  expect_rel_l2(to_host(dqd[0]), dq.to_vector(), 2 * bound, what + " dq");
  expect_rel_l2(to_host(dkd[0]), dk.to_vector(), 2 * bound, what + " dk");
  expect_rel_l2(to_host(dvd[0]), dv.to_vector(), 2 * bound, what + " dv");
  expect_bitwise(outd[1], outd[0], what + " out repeat");
  expect_bitwise(lsed[1], lsed[0], what + " lse repeat");
  const bool same = bytes_of(dqd[1]) == bytes_of(dqd[0]) && bytes_of(dkd[1]) == bytes_of(dkd[0]) &&
                    bytes_of(dvd[1]) == bytes_of(dvd[0]);
  std::printf("info %s backward repeat: %s\n", what.c_str(), same ? "bitwise equal" : "differs (not deterministic)");
  if (Hq == Hkv) return;
  // The per-head-rounded definition: the CPU emulation on the repeat_kv (MHA) problem.
  const Tensor kr = repeat_kv(k, Hq), vr = repeat_kv(v, Hq);
  Tensor dqr = host(q.shape(), dt), dkr = host(q.shape(), dt), dvr = host(q.shape(), dt);
  c.cpu->gqa_attention_backward(dout, q, kr, vr, out, lse, dqr, dkr, dvr, scale);
  report_dkv_rounding(dkd[0], dk, group_sum(dkr, Hkv), what + " dk");
  report_dkv_rounding(dvd[0], dv, group_sum(dvr, Hkv), what + " dv");
}

}  // namespace

int main() {
  if (skip_without_gpu()) return 77;
  Ctx c;
  uint32_t seed = 700;
  for (DType dt : {DType::BF16, DType::F16}) {
    std::printf("info gqa attention for%s q/k/v: %s\n", name(dt), c.gpu->attention_impl(dt).c_str());
    test_rmsnorm(c, dt);
    test_swiglu(c, dt);
    test_rope(c, dt);
    // Hq / Hkv 1, 2, 4 (T 37: one key tile, odd), 4 at D 128 across key tiles, and MQA.
    for (int64_t rep : {1, 2, 4}) test_gqa(c, dt, 2, 37, 2 * rep, 2, 64, seed += 5);
    test_gqa(c, dt, 1, 200, 16, 4, 128, seed += 5);
    test_gqa(c, dt, 1, 70, 8, 1, 64, seed += 5);
  }
  return finish();
}
