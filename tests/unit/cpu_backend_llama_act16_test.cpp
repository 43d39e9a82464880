// 16-bit activation operands of the CPU backend's Llama ops (the Llama's
// --compute-dtype param): RMSNorm, SwiGLU and RoPE with bf16 / f16 inputs and
// outputs equal the f32 op on the widened inputs, rounded once (bitwise; RMSNorm
// rstd and dweight stay f32). Grouped-query attention in 16 bits equals the fused
// 16-bit attention (P and dS rounded) on the repeated k / v heads: forward and dq
// bitwise, dk / dv within one rounding of the per-head sum (the GQA op sums each
// group in f32 and rounds once); it is not the rounded f32 attention.
#include <cmath>

#include "pp3d/backend/backend.h"
#include "test_util.h"

using namespace pp3d;
using namespace pp3d::test;

namespace {

Tensor cast_to(Backend& be, const Tensor& t, DType dt) {
  Tensor out = Tensor::empty(t.shape(), dt);
  be.cast(t, out);
  return out;
}

bool bitwise_equal(Backend& be, const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && cast_to(be, a, DType::F32).to_vector() == cast_to(be, b, DType::F32).to_vector();
}

// k or v [B, T, Hkv, D] with each head repeated `rep` times (HF repeat_kv): [B, T, Hkv*rep, D].
std::vector<float> repeat_heads(const std::vector<float>& x, int64_t BT, int64_t Hkv, int64_t rep, int64_t D) {
  std::vector<float> out;
  for (int64_t r = 0; r < BT; ++r)
    for (int64_t h = 0; h < Hkv * rep; ++h)
      for (int64_t d = 0; d < D; ++d) out.push_back(x[static_cast<std::size_t>((r * Hkv + h / rep) * D + d)]);
  return out;
}

}  // namespace

TEST_CASE("16-bit RMSNorm, SwiGLU, RoPE (cpu): the f32 op of the widened inputs, rounded once",
          "[cpu_backend][act16][llama]") {
  auto be = make_cpu_backend();
  for (DType dt : {DType::BF16, DType::F16}) {
    const int64_t rows = 6, n = 24;
    const Tensor x16 = cast_to(*be, random_tensor({rows, n}, 1, -2.0f, 2.0f), dt), w = random_tensor({n}, 2);
    const Tensor dy16 = cast_to(*be, random_tensor({rows, n}, 3), dt);
    const Tensor xw = cast_to(*be, x16, DType::F32), dyw = cast_to(*be, dy16, DType::F32);
    Tensor y16 = Tensor::empty({rows, n}, dt), y32 = Tensor::empty({rows, n});
    Tensor r1 = Tensor::empty({rows}), r2 = Tensor::empty({rows});
    be->rmsnorm_forward(x16, w, y16, r1, 1e-5f);
    be->rmsnorm_forward(xw, w, y32, r2, 1e-5f);
    CHECK(bitwise_equal(*be, y16, cast_to(*be, y32, dt)));
    CHECK(r1.to_vector() == r2.to_vector());
    Tensor dx16 = Tensor::empty({rows, n}, dt), dx32 = Tensor::empty({rows, n});
    Tensor dw1 = Tensor::zeros({n}), dw2 = Tensor::zeros({n});
    be->rmsnorm_backward(dy16, x16, w, r1, dx16, dw1);
    be->rmsnorm_backward(dyw, xw, w, r2, dx32, dw2);
    CHECK(bitwise_equal(*be, dx16, cast_to(*be, dx32, dt)));
    CHECK(dw1.to_vector() == dw2.to_vector());

    const Tensor u16 = cast_to(*be, random_tensor({rows, n}, 4, -2.0f, 2.0f), dt);
    const Tensor uw = cast_to(*be, u16, DType::F32);
    Tensor a16 = Tensor::empty({rows, n}, dt), a32 = Tensor::empty({rows, n});
    be->swiglu_forward(x16, u16, a16);
    be->swiglu_forward(xw, uw, a32);
    CHECK(bitwise_equal(*be, a16, cast_to(*be, a32, dt)));
    Tensor dg16 = Tensor::empty({rows, n}, dt), du16 = Tensor::empty({rows, n}, dt);
    Tensor dg32 = Tensor::empty({rows, n}), du32 = Tensor::empty({rows, n});
    be->swiglu_backward(x16, u16, dy16, dg16, du16);
    be->swiglu_backward(xw, uw, dyw, dg32, du32);
    CHECK(bitwise_equal(*be, dg16, cast_to(*be, dg32, dt)));
    CHECK(bitwise_equal(*be, du16, cast_to(*be, du32, dt)));

    // RoPE in place on a 16-bit [B, T, H, D] tensor (the Llama's q and k).
    Tensor q16 = cast_to(*be, random_tensor({2, 5, 3, 8}, 5, -2.0f, 2.0f), dt);
    Tensor q32 = cast_to(*be, q16, DType::F32);
    be->rope_forward(q16, q16, 0, 10000.0f);
    be->rope_forward(q32, q32, 0, 10000.0f);
    CHECK(bitwise_equal(*be, q16, cast_to(*be, q32, dt)));
    const Tensor qw = cast_to(*be, q16, DType::F32);  // the same 16-bit values, widened
    be->rope_backward(q16, q16, 3, 500.0f);
    be->rope_backward(qw, q32, 3, 500.0f);
    CHECK(bitwise_equal(*be, q16, cast_to(*be, q32, dt)));
  }
}

TEST_CASE("16-bit grouped-query attention (cpu): the fused 16-bit attention on repeated k/v heads",
          "[cpu_backend][act16][llama][attention]") {
  auto be = make_cpu_backend();
  const DType dt = DType::BF16;
  const int64_t B = 2, T = 9, Hq = 4, Hkv = 2, D = 8, rep = Hq / Hkv;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const Tensor q = cast_to(*be, random_tensor({B, T, Hq, D}, 11, -2.0f, 2.0f), dt);
  const Tensor k = cast_to(*be, random_tensor({B, T, Hkv, D}, 12, -2.0f, 2.0f), dt);
  const Tensor v = cast_to(*be, random_tensor({B, T, Hkv, D}, 13), dt);
  const Tensor dout = cast_to(*be, random_tensor({B, T, Hq, D}, 14), dt);
  Tensor out = Tensor::empty({B, T, Hq, D}, dt), lse = Tensor::empty({B, Hq, T});
  be->gqa_attention_forward(q, k, v, out, lse, scale);
  Tensor dq = Tensor::empty(q.shape(), dt), dk = Tensor::empty(k.shape(), dt), dv = Tensor::empty(v.shape(), dt);
  be->gqa_attention_backward(dout, q, k, v, out, lse, dq, dk, dv, scale);

  // The fused op on qkv [B, T, 3, Hq, D] with k and v repeated (all values exact in bf16).
  const auto qv = cast_to(*be, q, DType::F32).to_vector();
  const auto kr = repeat_heads(cast_to(*be, k, DType::F32).to_vector(), B * T, Hkv, rep, D);
  const auto vr = repeat_heads(cast_to(*be, v, DType::F32).to_vector(), B * T, Hkv, rep, D);
  std::vector<float> packed;
  for (int64_t r = 0; r < B * T; ++r)
    for (const auto* src : {&qv, &kr, &vr})
      packed.insert(packed.end(), src->begin() + r * Hq * D, src->begin() + (r + 1) * Hq * D);
  const Tensor qkv = cast_to(*be, Tensor::from_vector({B, T, 3, Hq, D}, packed), dt);
  Tensor out_f = Tensor::empty({B, T, Hq, D}, dt), lse_f = Tensor::empty({B, Hq, T});
  be->attention_forward(qkv, out_f, lse_f, scale);
  CHECK(bitwise_equal(*be, out, out_f));
  CHECK(lse.to_vector() == lse_f.to_vector());
  Tensor dqkv = Tensor::empty(qkv.shape(), dt);
  be->attention_backward(dout, qkv, out_f, lse_f, dqkv, scale);
  const auto dqkv_v = cast_to(*be, dqkv, DType::F32).to_vector();
  const auto dq_v = cast_to(*be, dq, DType::F32).to_vector(), dk_v = cast_to(*be, dk, DType::F32).to_vector();
  const auto dv_v = cast_to(*be, dv, DType::F32).to_vector();
  double worst_q = 0, worst_kv = 0;
  for (int64_t r = 0; r < B * T; ++r)
    for (int64_t d = 0; d < D; ++d) {
      for (int64_t h = 0; h < Hq; ++h)
        worst_q = std::max<double>(worst_q, std::fabs(dq_v[static_cast<std::size_t>((r * Hq + h) * D + d)] -
                                              dqkv_v[static_cast<std::size_t>(((r * 3 + 0) * Hq + h) * D + d)]));
      for (int64_t hk = 0; hk < Hkv; ++hk)
        for (int64_t s = 1; s <= 2; ++s) {  // 1 = k, 2 = v: the group sum of the per-head gradients
          double sum = 0, mag = 0;
          for (int64_t h = hk * rep; h < (hk + 1) * rep; ++h) {
            const double t = dqkv_v[static_cast<std::size_t>(((r * 3 + s) * Hq + h) * D + d)];
            sum += t;
            mag += std::fabs(t);
          }
          const float got = (s == 1 ? dk_v : dv_v)[static_cast<std::size_t>((r * Hkv + hk) * D + d)];
          worst_kv = std::max(worst_kv, std::fabs(got - sum) / (mag + 1e-6));
        }
    }
  CHECK(worst_q == 0.0);
  // One bf16 rounding (unit roundoff 2^-8) of each term and of the sum, relative to the terms' magnitude.
  CHECK(worst_kv < 2.0 * std::ldexp(1.0, -8));
  CHECK(worst_kv > 0.0);  // and not the fused op's rounded per-head terms added in 16 bits

  // Not the rounded f32 attention of the same 16-bit inputs: P is rounded inside.
  Tensor out32 = Tensor::empty({B, T, Hq, D}), lse32 = Tensor::empty({B, Hq, T});
  be->gqa_attention_forward(cast_to(*be, q, DType::F32), cast_to(*be, k, DType::F32), cast_to(*be, v, DType::F32),
                            out32, lse32, scale);
  CHECK_FALSE(bitwise_equal(*be, out, cast_to(*be, out32, dt)));
}
