// GPU: cuDNN fused SDPA (lib/backend/cuda/cuda_sdpa.h) against the CPU backend's
// attention on the same 16-bit-rounded inputs: GPT's fused qkv layout
// (attention_forward / _backward) and grouped-query attention (gqa_attention_*),
// bf16 and f16, causal, odd T; out and the gradients by relative L2 (the fused
// kernel rounds P to 16 bits before P.V, and its outputs), lse by max abs error;
// a bitwise forward repeat; fwd+bwd TFLOP/s printed for a GPT-2-sized shape.
// Exits 77 without a GPU or when built without the cuDNN frontend headers.
#include <chrono>
#include <cmath>
#include <vector>

#include "backend/cuda/cuda_sdpa.h"
#include "cuda_test_util.h"

using namespace pp3d;
using namespace pp3d::cudatest;
using pp3d::detail::CudnnSdpa;
using pp3d::detail::SdpaShape;

namespace {

Tensor cast_to(Backend& be, const Tensor& t, DType dt) {
  Tensor out = Tensor::empty(t.shape(), dt, t.device());
  be.cast(t, out);
  return out;
}

const char* at(const Tensor& t, int64_t elems) {
  return static_cast<const char*>(t.raw()) + elems * static_cast<int64_t>(dtype_size(t.dtype()));
}
char* at(Tensor& t, int64_t elems) {
  return static_cast<char*>(t.raw()) + elems * static_cast<int64_t>(dtype_size(t.dtype()));
}

// GPT layout: qkv [B, T, 3, H, D].
void test_fused(Ctx& c, CudnnSdpa& sdpa, DType dt, int64_t B, int64_t T, int64_t H, int64_t D, uint32_t seed) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const Tensor qkv16 = cast_to(*c.cpu, rand_host({B, T, 3, H, D}, seed), dt);
  const Tensor dout16 = cast_to(*c.cpu, rand_host({B, T, H, D}, seed + 1), dt);
  const Tensor qkv = cast_to(*c.cpu, qkv16, DType::F32), dout = cast_to(*c.cpu, dout16, DType::F32);
  Tensor out = Tensor::empty({B, T, H, D}), lse = Tensor::empty({B, H, T}), dqkv = Tensor::empty(qkv.shape());
  c.cpu->attention_forward(qkv, out, lse, scale);
  c.cpu->attention_backward(dout, qkv, out, lse, dqkv, scale);

  const Tensor g_qkv = to_gpu(qkv16), g_dout = to_gpu(dout16);
  Tensor g_out = to_gpu(Tensor::zeros({B, T, H, D}, dt)), g_lse = to_gpu(Tensor::zeros({B, H, T}));
  Tensor g_out2 = to_gpu(Tensor::zeros({B, T, H, D}, dt));
  Tensor g_dqkv = to_gpu(Tensor::zeros(qkv.shape(), dt));
  SdpaShape s{B, T, H, H, D, 3 * H * D, 3 * H * D, dt};
  sdpa.forward(s, at(g_qkv, 0), at(g_qkv, H * D), at(g_qkv, 2 * H * D), g_out.raw(), g_lse.data<float>(), scale);
  sdpa.forward(s, at(g_qkv, 0), at(g_qkv, H * D), at(g_qkv, 2 * H * D), g_out2.raw(), g_lse.data<float>(), scale);
  sdpa.backward(s, at(g_qkv, 0), at(g_qkv, H * D), at(g_qkv, 2 * H * D), g_out.raw(), g_dout.raw(),
                g_lse.data<float>(), at(g_dqkv, 0), at(g_dqkv, H * D), at(g_dqkv, 2 * H * D), scale);
  c.gpu->synchronize();
  const std::string what = tag("sdpa fused qkv", {B, T, H, D}, dt == DType::BF16 ? " bf16" : " f16");
  const double bound = dt == DType::BF16 ? 1e-2 : 2e-3;
  expect_rel_l2(to_host(g_out), out.to_vector(), bound, what + " out");
  expect_max_abs(to_host(g_lse), lse.to_vector(), 1e-3, what + " lse");
  expect_rel_l2(to_host(g_dqkv), dqkv.to_vector(), 2 * bound, what + " dqkv");
  expect_bitwise(g_out2, g_out, what + " out repeat");
}

// Grouped-query layout: q [B, T, Hq, D], k and v [B, T, Hkv, D].
void test_gqa(Ctx& c, CudnnSdpa& sdpa, DType dt, int64_t B, int64_t T, int64_t Hq, int64_t Hkv, int64_t D,
              uint32_t seed) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const Tensor q16 = cast_to(*c.cpu, rand_host({B, T, Hq, D}, seed), dt);
  const Tensor k16 = cast_to(*c.cpu, rand_host({B, T, Hkv, D}, seed + 1), dt);
  const Tensor v16 = cast_to(*c.cpu, rand_host({B, T, Hkv, D}, seed + 2), dt);
  const Tensor do16 = cast_to(*c.cpu, rand_host({B, T, Hq, D}, seed + 3), dt);
  const Tensor q = cast_to(*c.cpu, q16, DType::F32), k = cast_to(*c.cpu, k16, DType::F32),
               v = cast_to(*c.cpu, v16, DType::F32), dout = cast_to(*c.cpu, do16, DType::F32);
  Tensor out = Tensor::empty(q.shape()), lse = Tensor::empty({B, Hq, T});
  Tensor dq = Tensor::empty(q.shape()), dk = Tensor::empty(k.shape()), dv = Tensor::empty(v.shape());
  c.cpu->gqa_attention_forward(q, k, v, out, lse, scale);
  c.cpu->gqa_attention_backward(dout, q, k, v, out, lse, dq, dk, dv, scale);

  const Tensor gq = to_gpu(q16), gk = to_gpu(k16), gv = to_gpu(v16), gdo = to_gpu(do16);
  Tensor g_out = to_gpu(Tensor::zeros(q.shape(), dt)), g_lse = to_gpu(Tensor::zeros({B, Hq, T}));
  Tensor gdq = to_gpu(Tensor::zeros(q.shape(), dt)), gdk = to_gpu(Tensor::zeros(k.shape(), dt)),
         gdv = to_gpu(Tensor::zeros(v.shape(), dt));
  SdpaShape s{B, T, Hq, Hkv, D, Hq * D, Hkv * D, dt};
  sdpa.forward(s, gq.raw(), gk.raw(), gv.raw(), g_out.raw(), g_lse.data<float>(), scale);
  sdpa.backward(s, gq.raw(), gk.raw(), gv.raw(), g_out.raw(), gdo.raw(), g_lse.data<float>(), gdq.raw(), gdk.raw(),
                gdv.raw(), scale);
  c.gpu->synchronize();
  const std::string what = tag("sdpa gqa", {B, T, Hq, Hkv, D}, dt == DType::BF16 ? " bf16" : " f16");
  const double bound = dt == DType::BF16 ? 1e-2 : 2e-3;
  expect_rel_l2(to_host(g_out), out.to_vector(), bound, what + " out");
  expect_max_abs(to_host(g_lse), lse.to_vector(), 1e-3, what + " lse");
  expect_rel_l2(to_host(gdq), dq.to_vector(), 2 * bound, what + " dq");
  expect_rel_l2(to_host(gdk), dk.to_vector(), 2 * bound, what + " dk");
  expect_rel_l2(to_host(gdv), dv.to_vector(), 2 * bound, what + " dv");
}

// Causal fwd + bwd FLOPs: (2 + 5) * 2 * B * H * T^2 * D / 2 (half the scores are masked).
void time_sdpa(Ctx& c, CudnnSdpa& sdpa) {
  const int64_t B = 4, T = 2048, H = 16, D = 128;
  const Tensor qkv = to_gpu(rand_host({B, T, 3, H, D}, 9, DType::BF16));
  const Tensor dout = to_gpu(rand_host({B, T, H, D}, 10, DType::BF16));
  Tensor out = to_gpu(Tensor::zeros({B, T, H, D}, DType::BF16)), lse = to_gpu(Tensor::zeros({B, H, T}));
  Tensor dqkv = to_gpu(Tensor::zeros({B, T, 3, H, D}, DType::BF16));
  SdpaShape s{B, T, H, H, D, 3 * H * D, 3 * H * D, DType::BF16};
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  auto step = [&] {
    sdpa.forward(s, at(qkv, 0), at(qkv, H * D), at(qkv, 2 * H * D), out.raw(), lse.data<float>(), scale);
    sdpa.backward(s, at(qkv, 0), at(qkv, H * D), at(qkv, 2 * H * D), out.raw(), dout.raw(), lse.data<float>(),
                  at(dqkv, 0), at(dqkv, H * D), at(dqkv, 2 * H * D), scale);
  };
  step();
  c.gpu->synchronize();
  const int iters = 10;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) step();
  c.gpu->synchronize();
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters;
  const double flops = 7.0 * B * H * static_cast<double>(T) * T * D;
  std::printf("info sdpa fwd+bwd bf16 B%lld T%lld H%lld D%lld causal: %.3f ms, %.1f TFLOP/s\n", (long long)B,
              (long long)T, (long long)H, (long long)D, sec * 1e3, flops / sec / 1e12);
}

}  // namespace

int main() {
  if (skip_without_gpu()) return 77;
  if (!CudnnSdpa::available()) {
    std::printf("built without the cuDNN frontend headers: skipping\n");
    return 77;
  }
  Ctx c;
  CudnnSdpa sdpa(static_cast<cudaStream_t>(c.gpu->native_stream()), 0);
  uint32_t seed = 900;
  for (DType dt : {DType::BF16, DType::F16}) {
    test_fused(c, sdpa, dt, 2, 128, 4, 64, seed += 5);
    test_fused(c, sdpa, dt, 1, 67, 2, 64, seed += 5);
    test_gqa(c, sdpa, dt, 2, 96, 8, 2, 64, seed += 5);
    test_gqa(c, sdpa, dt, 1, 33, 4, 1, 128, seed += 5);
  }
  time_sdpa(c, sdpa);
  return finish();
}
