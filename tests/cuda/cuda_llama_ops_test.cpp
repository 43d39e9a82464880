// GPU: CudaBackend's Llama-family ops against CpuBackend (the reference, itself
// checked against double loops and finite differences in
// tests/unit/cpu_backend_llama_ops_test.cpp) on the same random inputs:
// RMSNorm, SwiGLU, RoPE (offsets, theta) and grouped-query attention (MQA,
// GQA, MHA; T not a multiple of the 32-row tiles), forward and backward;
// backward ops run twice to check they are bitwise deterministic. All f32;
// the 16-bit operands (bf16, f16) are tests/cuda/cuda_llama16_test.cpp.
// Exits 77 without a GPU.
#include <cmath>
#include <vector>

#include "cuda_test_util.h"

using namespace pp3d;
using namespace pp3d::cudatest;

namespace {

Tensor gpu_empty(const Shape& s) { return Tensor::empty(s, DType::F32, Device::cuda(0)); }

void test_rmsnorm(Ctx& c) {
  for (auto [rows, n] : {std::pair<int64_t, int64_t>{1, 1}, {7, 96}, {300, 4096}, {1025, 33}}) {
    Tensor x = rand_host({rows, n}, 1, DType::F32, -2.0f, 2.0f), w = rand_host({n}, 2, DType::F32, 0.5f, 1.5f);
    Tensor y = Tensor::empty({rows, n}), rstd = Tensor::empty({rows});
    Tensor yd = gpu_empty({rows, n}), rstdd = gpu_empty({rows});
    c.cpu->rmsnorm_forward(x, w, y, rstd, 1e-5f);
    c.gpu->rmsnorm_forward(to_gpu(x), to_gpu(w), yd, rstdd, 1e-5f);
    expect_close(yd, y, {1e-6, 1e-5}, tag("rmsnorm_forward y", {rows, n}));
    expect_close(rstdd, rstd, {1e-6, 1e-5}, tag("rmsnorm_forward rstd", {rows, n}));
    Tensor dy = rand_host({rows, n}, 3), dx = Tensor::empty({rows, n}), dw = rand_host({n}, 4);
    Tensor dxd = gpu_empty({rows, n}), dwd = to_gpu(dw), dwd2 = to_gpu(dw), dxd2 = gpu_empty({rows, n});
    c.cpu->rmsnorm_backward(dy, x, w, rstd, dx, dw);
    const Tensor dyd = to_gpu(dy), xd = to_gpu(x), wd = to_gpu(w), rd = to_gpu(rstd);
    c.gpu->rmsnorm_backward(dyd, xd, wd, rd, dxd, dwd);
    c.gpu->rmsnorm_backward(dyd, xd, wd, rd, dxd2, dwd2);
    expect_close(dxd, dx, {1e-5, 1e-4}, tag("rmsnorm_backward dx", {rows, n}));
    expect_close(dwd, dw, {1e-4, 1e-4}, tag("rmsnorm_backward dweight (+=)", {rows, n}));
    expect_bitwise(dwd2, dwd, tag("rmsnorm_backward deterministic", {rows, n}));
  }
}

void test_swiglu(Ctx& c) {
  for (int64_t n : {int64_t{1}, int64_t{1000}, int64_t{1} << 20}) {
    Tensor g = rand_host({n}, 5, DType::F32, -6.0f, 6.0f), u = rand_host({n}, 6), d = rand_host({n}, 7);
    Tensor out = Tensor::empty({n}), dg = Tensor::empty({n}), du = Tensor::empty({n});
    Tensor outd = gpu_empty({n}), dgd = gpu_empty({n}), dud = gpu_empty({n});
    c.cpu->swiglu_forward(g, u, out);
    c.gpu->swiglu_forward(to_gpu(g), to_gpu(u), outd);
    expect_close(outd, out, {1e-6, 1e-5}, tag("swiglu_forward", {n}));
    c.cpu->swiglu_backward(g, u, d, dg, du);
    c.gpu->swiglu_backward(to_gpu(g), to_gpu(u), to_gpu(d), dgd, dud);
    expect_close(dgd, dg, {1e-6, 1e-5}, tag("swiglu_backward dgate", {n}));
    expect_close(dud, du, {1e-6, 1e-5}, tag("swiglu_backward dup", {n}));
  }
}

void test_rope(Ctx& c) {
  const int64_t cases[][6] = {{1, 1, 1, 2, 0, 10000}, {2, 37, 6, 64, 0, 10000}, {1, 5, 8, 128, 100000, 500000}};
  for (auto& s : cases) {
    const int64_t B = s[0], T = s[1], H = s[2], D = s[3], pos0 = s[4];
    const float theta = static_cast<float>(s[5]);
    Tensor x = rand_host({B, T, H, D}, 8), y = Tensor::empty({B, T, H, D}), yd = gpu_empty({B, T, H, D});
    c.cpu->rope_forward(x, y, pos0, theta);
    c.gpu->rope_forward(to_gpu(x), yd, pos0, theta);
    expect_close(yd, y, {1e-6, 1e-5}, tag("rope_forward", {B, T, H, D, pos0}));
    Tensor dx = Tensor::empty({B, T, H, D}), dxd = to_gpu(x);
    c.cpu->rope_backward(x, dx, pos0, theta);
    c.gpu->rope_backward(dxd, dxd, pos0, theta);  // in place
    expect_close(dxd, dx, {1e-6, 1e-5}, tag("rope_backward (in place)", {B, T, H, D, pos0}));
  }
}

void test_gqa(Ctx& c) {
  const int64_t cases[][5] = {{1, 1, 1, 1, 2}, {2, 37, 6, 2, 16}, {1, 70, 8, 1, 64}, {1, 33, 4, 4, 128},
                              {2, 100, 32, 8, 128}};
  for (auto& s : cases) {
    const int64_t B = s[0], T = s[1], Hq = s[2], Hkv = s[3], D = s[4];
    const float scale = 1.0f / std::sqrt(static_cast<float>(D));
    Tensor q = rand_host({B, T, Hq, D}, 9, DType::F32, -2.0f, 2.0f);
    Tensor k = rand_host({B, T, Hkv, D}, 10, DType::F32, -2.0f, 2.0f), v = rand_host({B, T, Hkv, D}, 11);
    Tensor out = Tensor::empty({B, T, Hq, D}), lse = Tensor::empty({B, Hq, T});
    Tensor outd = gpu_empty({B, T, Hq, D}), lsed = gpu_empty({B, Hq, T});
    const Tensor qd = to_gpu(q), kd = to_gpu(k), vd = to_gpu(v);
    c.cpu->gqa_attention_forward(q, k, v, out, lse, scale);
    c.gpu->gqa_attention_forward(qd, kd, vd, outd, lsed, scale);
    const std::initializer_list<int64_t> dims = {B, T, Hq, Hkv, D};
    expect_close(outd, out, {1e-5, 1e-4}, tag("gqa_attention_forward out", dims));
    expect_close(lsed, lse, {1e-5, 1e-5}, tag("gqa_attention_forward lse", dims));
    Tensor dout = rand_host({B, T, Hq, D}, 12);
    Tensor dq = Tensor::empty(q.shape()), dk = Tensor::empty(k.shape()), dv = Tensor::empty(v.shape());
    c.cpu->gqa_attention_backward(dout, q, k, v, out, lse, dq, dk, dv, scale);
    Tensor dqd[2], dkd[2], dvd[2];
    const Tensor doutd = to_gpu(dout), out_c = to_gpu(out), lse_c = to_gpu(lse);
    for (int r = 0; r < 2; ++r) {
      dqd[r] = gpu_empty(q.shape());
      dkd[r] = gpu_empty(k.shape());
      dvd[r] = gpu_empty(v.shape());
      c.gpu->gqa_attention_backward(doutd, qd, kd, vd, out_c, lse_c, dqd[r], dkd[r], dvd[r], scale);
    }
    expect_close(dqd[0], dq, {1e-4, 1e-4}, tag("gqa_attention_backward dq", dims));
    expect_close(dkd[0], dk, {1e-4, 1e-4}, tag("gqa_attention_backward dk", dims));
    expect_close(dvd[0], dv, {1e-4, 1e-4}, tag("gqa_attention_backward dv", dims));
    expect_bitwise(dkd[1], dkd[0], tag("gqa_attention_backward deterministic dk", dims));
  }
}

}  // namespace

int main() {
  if (skip_without_gpu()) return 77;
  Ctx c;
  test_rmsnorm(c);
  test_swiglu(c);
  test_rope(c);
  test_gqa(c);
  return finish();
}
