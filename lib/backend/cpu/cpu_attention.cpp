// CpuBackend: causal self-attention (fused qkv, GPT) and grouped-query
// attention (separate q, k, v, Llama), forward and backward; both run the
// same kernels on strided views.
//
// Layouts: qkv [B, T, 3, H, D] or q [B, T, Hq, D], k/v [B, T, Hkv, D];
// out [B, T, Hq, D], lse [B, Hq, T]. For one (b, head) pair, Q/K/V/O are
// T x D row-major matrices with the token stride of their tensor; the products
// run in place through detail::gemm_f32 (Eigen, AVX2 build when available).
// Query head h uses kv head h / (Hq / Hkv) (HF repeat_kv; MHA: Hkv = Hq).
// Forward, per block of up to kBlockQ queries [q0, q1) (keys [0, q1)):
//   S = scale * Q_blk K^T, masked where key > query; P = softmax(S);
//   lse = max + log(sum exp(S - max)); O_blk = P V.
// Backward recomputes P = exp(S - lse) and, per (b, kv head), over its query
// heads and their query blocks in order: dV += P^T dO, dP = dO V^T,
//   Di = rowsum(dO * O), dS = P * (dP - Di), dQ = scale * dS K, dK += scale * dS^T Q.
// 16-bit qkv (bf16/f16, 16-bit compute; the fused GPT op and the Llama's
// grouped-query op): the emulation of
// a flash-attention kernel (cuDNN SDPA) with 16-bit q, k, v, O: S and its
// softmax statistics in f32, the probabilities rounded to the 16-bit dtype
// before the P V product (a tensor-core GEMM of 16-bit operands), computed as
// O = (sum_j round(exp(S_ij - m_i)) v_j) / l_i with l_i = sum_j exp(S_ij - m_i)
// in f32 (one key tile), O rounded once. Backward: P = exp(S - lse) in f32,
// dV += round(P)^T dO, dS = P * (dP - Di) rounded before dQ = scale dS K and
// dK += scale dS^T Q (16-bit operands of the two GEMMs), Di = rowsum(dO * O);
// dQ, dK, dV accumulate in f32 and are rounded once.
// Forward tasks are (b, query head, query block); backward tasks are
// (b, kv head), whose dK and dV accumulate in a fixed order, so results do
// not depend on the thread count.
#include <cmath>
#include <vector>

#include <Eigen/Core>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_gemm_kernel.h"
#include "backend/op_checks.h"
#include "pp3d/core/error.h"

namespace pp3d {
namespace {

constexpr int64_t kBlockQ = 64;

// One of q, k, v, out (or a gradient) as per-(b, head) T x D matrices.
template <typename P>
struct View {
  P* base;
  int64_t tok;    // elements between consecutive tokens
  int64_t batch;  // elements between consecutive sequences
  int64_t D;
  P* at(int64_t b, int64_t h) const { return base + b * batch + h * D; }
  operator View<const P>() const { return {base, tok, batch, D}; }
};

template <typename P>
View<P> view(P* base, int64_t T, int64_t tok, int64_t D) {
  return {base, tok, T * tok, D};
}

struct Geometry {
  int64_t B, T, Hq, Hkv, D;
  int64_t group() const { return Hq / Hkv; }
};

// Row i of S (query q0 + i) becomes the masked softmax probabilities; keys
// beyond the query are zeroed. Returns the row's log-sum-exp.
float softmax_row(float* row, int64_t valid, int64_t width) {
  Eigen::Map<Eigen::ArrayXf> r(row, valid);
  const float mx = r.maxCoeff();
  r = (r - mx).exp();
  const float sum = r.sum();
  r *= 1.0f / sum;
  for (int64_t j = valid; j < width; ++j) row[j] = 0.0f;
  return mx + std::log(sum);
}

float round_to(DType dt, float v) {
  return dt == DType::BF16 ? bf16_to_f32(f32_to_bf16(v)) : f16_to_f32(f32_to_f16(v));
}

// 16-bit P (see the top): row i holds round(exp(S - max)) for the valid keys,
// 0 beyond; returns the log-sum-exp and sets *sum to the f32 sum of exp(S - max).
float softmax_row16(float* row, int64_t valid, int64_t width, DType p_dt, float* sum) {
  Eigen::Map<Eigen::ArrayXf> r(row, valid);
  const float mx = r.maxCoeff();
  r = (r - mx).exp();
  *sum = r.sum();
  for (int64_t j = 0; j < valid; ++j) row[j] = round_to(p_dt, row[j]);
  for (int64_t j = valid; j < width; ++j) row[j] = 0.0f;
  return mx + std::log(*sum);
}

// p_dt F32: f32 attention; BF16/F16: P rounded to p_dt before P V (see the top).
void attention_forward_views(const Geometry& g, View<const float> Q, View<const float> K, View<const float> V,
                             View<float> O, float* plse, float scale, DType p_dt = DType::F32) {
  if (g.B * g.T * g.Hq * g.D == 0) return;
  const int64_t qblocks = (g.T + kBlockQ - 1) / kBlockQ;
  const int64_t tasks = g.B * g.Hq * qblocks;
  const bool par = tasks > 1 && g.B * g.Hq * g.T * g.T * g.D >= detail::kCpuChunk;
#pragma omp parallel if (par)
  {
    std::vector<float> s, sums;
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t bh = task / qblocks, qb = task % qblocks;
      const int64_t b = bh / g.Hq, h = bh % g.Hq, hk = h / g.group();
      const int64_t q0 = qb * kBlockQ, q1 = std::min(g.T, q0 + kBlockQ), nq = q1 - q0;
      const float* q = Q.at(b, h) + q0 * Q.tok;
      const float* k = K.at(b, hk);
      const float* v = V.at(b, hk);
      float* o = O.at(b, h) + q0 * O.tok;
      s.resize(static_cast<std::size_t>(nq * q1));
      // S[nq, q1] = scale * Q K^T; softmax rows in place; O = P V.
      detail::gemm_f32(false, true, nq, q1, g.D, scale, q, Q.tok, k, K.tok, 0.0f, s.data(), q1);
      float* lse_bh = plse + bh * g.T;
      if (p_dt == DType::F32) {
        for (int64_t i = 0; i < nq; ++i) lse_bh[q0 + i] = softmax_row(s.data() + i * q1, q0 + i + 1, q1);
        detail::gemm_f32(false, false, nq, g.D, q1, 1.0f, s.data(), q1, v, V.tok, 0.0f, o, O.tok);
        continue;
      }
      sums.resize(static_cast<std::size_t>(nq));
      for (int64_t i = 0; i < nq; ++i)
        lse_bh[q0 + i] = softmax_row16(s.data() + i * q1, q0 + i + 1, q1, p_dt, &sums[i]);
      detail::gemm_f32(false, false, nq, g.D, q1, 1.0f, s.data(), q1, v, V.tok, 0.0f, o, O.tok);
      for (int64_t i = 0; i < nq; ++i)
        for (int64_t d = 0; d < g.D; ++d) o[i * O.tok + d] /= sums[i];
    }
  }
}

struct BackwardViews {
  View<const float> Q, K, V, O, dO;
  View<float> dQ, dK, dV;
};

void attention_backward_views(const Geometry& g, const BackwardViews& w, const float* plse, float scale,
                              DType p_dt = DType::F32) {
  if (g.B * g.T * g.Hq * g.D == 0) return;
  const int64_t tasks = g.B * g.Hkv;
  const bool par = tasks > 1 && g.B * g.Hq * g.T * g.T * g.D >= detail::kCpuChunk;
#pragma omp parallel if (par)
  {
    std::vector<float> p, dp, p16;
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t b = task / g.Hkv, hk = task % g.Hkv;
      const float* k = w.K.at(b, hk);
      const float* v = w.V.at(b, hk);
      float* dk = w.dK.at(b, hk);
      float* dv = w.dV.at(b, hk);
      for (int64_t t = 0; t < g.T; ++t) {
        std::fill(dk + t * w.dK.tok, dk + t * w.dK.tok + g.D, 0.0f);
        std::fill(dv + t * w.dV.tok, dv + t * w.dV.tok + g.D, 0.0f);
      }
      for (int64_t h = hk * g.group(); h < (hk + 1) * g.group(); ++h) {
        const float* lse_bh = plse + (b * g.Hq + h) * g.T;
        for (int64_t q0 = 0; q0 < g.T; q0 += kBlockQ) {
          const int64_t q1 = std::min(g.T, q0 + kBlockQ), nq = q1 - q0;
          const float* q = w.Q.at(b, h) + q0 * w.Q.tok;
          const float* o = w.O.at(b, h) + q0 * w.O.tok;
          const float* dout_blk = w.dO.at(b, h) + q0 * w.dO.tok;
          float* dq = w.dQ.at(b, h) + q0 * w.dQ.tok;
          p.resize(static_cast<std::size_t>(nq * q1));
          dp.resize(static_cast<std::size_t>(nq * q1));
          // P = exp(scale * Q K^T - lse), zero above the diagonal.
          detail::gemm_f32(false, true, nq, q1, g.D, scale, q, w.Q.tok, k, w.K.tok, 0.0f, p.data(), q1);
          for (int64_t i = 0; i < nq; ++i) {
            const int64_t valid = q0 + i + 1;
            float* row = p.data() + i * q1;
            Eigen::Map<Eigen::ArrayXf> r(row, valid);
            r = (r - lse_bh[q0 + i]).exp();
            std::fill(row + valid, row + q1, 0.0f);
          }
          // dV += P^T dO (16-bit: round(P)); dP = dO V^T.
          const float* pv = p.data();
          if (p_dt != DType::F32) {
            p16.resize(p.size());
            for (std::size_t j = 0; j < p.size(); ++j) p16[j] = round_to(p_dt, p[j]);
            pv = p16.data();
          }
          detail::gemm_f32(true, false, q1, g.D, nq, 1.0f, pv, q1, dout_blk, w.dO.tok, 1.0f, dv, w.dV.tok);
          detail::gemm_f32(false, true, nq, q1, g.D, 1.0f, dout_blk, w.dO.tok, v, w.V.tok, 0.0f, dp.data(), q1);
          // dS = P * (dP - Di) with Di = rowsum(dO * O), written over dP.
          for (int64_t i = 0; i < nq; ++i) {
            const float* dor = dout_blk + i * w.dO.tok;
            const float* orow = o + i * w.O.tok;
            float di = 0.0f;
            for (int64_t d = 0; d < g.D; ++d) di += dor[d] * orow[d];
            const float* prow = p.data() + i * q1;
            float* dsrow = dp.data() + i * q1;
#pragma omp simd
            for (int64_t j = 0; j < q1; ++j) dsrow[j] = prow[j] * (dsrow[j] - di);
            if (p_dt != DType::F32)
              for (int64_t j = 0; j < q1; ++j) dsrow[j] = round_to(p_dt, dsrow[j]);
          }
          // dQ = scale * dS K; dK += scale * dS^T Q.
          detail::gemm_f32(false, false, nq, g.D, q1, scale, dp.data(), q1, k, w.K.tok, 0.0f, dq, w.dQ.tok);
          detail::gemm_f32(true, false, q1, g.D, nq, scale, dp.data(), q1, q, w.Q.tok, 1.0f, dk, w.dK.tok);
        }
      }
    }
  }
}

// Fused qkv [B, T, 3, H, D]: the three views into it (s = 0 q, 1 k, 2 v).
Geometry fused_geometry(const Tensor& qkv, const char* what) {
  PP3D_CHECK(qkv.dim() == 5 && qkv.size(2) == 3, "{}: qkv must be [B, T, 3, H, D], got {}", what,
             shape_str(qkv.shape()));
  return {qkv.size(0), qkv.size(1), qkv.size(3), qkv.size(3), qkv.size(4)};
}
template <typename P>
View<P> fused_view(P* base, const Geometry& g, int64_t s) {
  return view(base + s * g.Hq * g.D, g.T, 3 * g.Hq * g.D, g.D);
}
template <typename P>
View<P> heads_view(P* base, const Geometry& g, int64_t heads) {
  return view(base, g.T, heads * g.D, g.D);
}

// The dtype of a 16-bit attention call: qkv's, which every activation operand must share.
DType attention_dtype(std::initializer_list<const Tensor*> acts, const char* what) {
  for (const Tensor* t : acts) detail::check_act(detail::cpu_check, *t, what);
  const DType dt = (*acts.begin())->dtype();
  for (const Tensor* t : acts)
    PP3D_CHECK(t->dtype() == dt, "{}: qkv, out (and dout, dqkv) must share one dtype (f32, bf16 or f16), got {} and {}",
               what, dtype_name(dt), dtype_name(t->dtype()));
  return dt;
}

}  // namespace

void CpuBackend::attention_forward(const Tensor& qkv, Tensor& out, Tensor& lse, float scale) {
  const DType dt = attention_dtype({&qkv, &out}, "attention_forward");
  detail::cpu_check(lse, DType::F32, "attention_forward: lse");
  const Geometry g = fused_geometry(qkv, "attention_forward");
  check_shape(out, {g.B, g.T, g.Hq, g.D}, "attention_forward: out");
  check_shape(lse, {g.B, g.Hq, g.T}, "attention_forward: lse");
  if (dt != DType::F32) {  // 16-bit q, k, v, P, O (see the top)
    const Tensor qkv32 = detail::as_f32(*this, qkv);
    Tensor out32 = detail::f32_out(out);
    const float* p = qkv32.numel() ? qkv32.data<float>() : nullptr;
    attention_forward_views(g, fused_view(p, g, 0), fused_view(p, g, 1), fused_view(p, g, 2),
                            heads_view(out32.numel() ? out32.data<float>() : nullptr, g, g.Hq),
                            lse.numel() ? lse.data<float>() : nullptr, scale, dt);
    detail::round_out(*this, out32, out);
    return;
  }
  const float* p = qkv.numel() ? qkv.data<float>() : nullptr;
  attention_forward_views(g, fused_view(p, g, 0), fused_view(p, g, 1), fused_view(p, g, 2),
                          heads_view(out.numel() ? out.data<float>() : nullptr, g, g.Hq),
                          lse.numel() ? lse.data<float>() : nullptr, scale);
}

void CpuBackend::attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& lse,
                                    Tensor& dqkv, float scale) {
  const DType dt = attention_dtype({&qkv, &out, &dout, &dqkv}, "attention_backward");
  detail::cpu_check(lse, DType::F32, "attention_backward: lse");
  const Geometry g = fused_geometry(qkv, "attention_backward");
  check_shape(out, {g.B, g.T, g.Hq, g.D}, "attention_backward: out");
  check_shape(dout, {g.B, g.T, g.Hq, g.D}, "attention_backward: dout");
  check_shape(lse, {g.B, g.Hq, g.T}, "attention_backward: lse");
  check_shape(dqkv, qkv.shape(), "attention_backward: dqkv");
  if (qkv.numel() == 0) return;
  // 16-bit operands: f32 copies in, dqkv rounded once (see the top).
  const Tensor qkv32 = detail::as_f32(*this, qkv), out32 = detail::as_f32(*this, out);
  const Tensor dout32 = detail::as_f32(*this, dout);
  Tensor dqkv32 = detail::f32_out(dqkv);
  const float* p = qkv32.data<float>();
  float* pd = dqkv32.data<float>();
  const BackwardViews w{fused_view(p, g, 0),
                        fused_view(p, g, 1),
                        fused_view(p, g, 2),
                        heads_view(out32.data<float>(), g, g.Hq),
                        heads_view(dout32.data<float>(), g, g.Hq),
                        fused_view(pd, g, 0),
                        fused_view(pd, g, 1),
                        fused_view(pd, g, 2)};
  attention_backward_views(g, w, lse.data<float>(), scale, dt);
  detail::round_out(*this, dqkv32, dqkv);
}

void CpuBackend::gqa_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out, Tensor& lse,
                                       float scale) {
  const detail::GqaDims d = detail::check_gqa(detail::cpu_check, q, k, v, out, lse, "gqa_attention_forward");
  const Geometry g{d.B, d.T, d.Hq, d.Hkv, d.D};
  if (q.numel() == 0) return;
  // 16-bit q, k, v, O (the Llama's 16-bit compute): f32 copies in, P rounded, out rounded once.
  const Tensor q32 = detail::as_f32(*this, q), k32 = detail::as_f32(*this, k), v32 = detail::as_f32(*this, v);
  Tensor out32 = detail::f32_out(out);
  attention_forward_views(g, heads_view(q32.data<float>(), g, g.Hq), heads_view(k32.data<float>(), g, g.Hkv),
                          heads_view(v32.data<float>(), g, g.Hkv), heads_view(out32.data<float>(), g, g.Hq),
                          lse.data<float>(), scale, q.dtype());
  detail::round_out(*this, out32, out);
}

void CpuBackend::gqa_attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                                        const Tensor& out, const Tensor& lse, Tensor& dq, Tensor& dk, Tensor& dv,
                                        float scale) {
  const detail::GqaDims d =
      detail::check_gqa_backward(detail::cpu_check, dout, q, k, v, out, lse, dq, dk, dv);
  const Geometry g{d.B, d.T, d.Hq, d.Hkv, d.D};
  if (q.numel() == 0) return;
  // 16-bit operands: f32 copies in, P and dS rounded, dq, dk, dv (f32 sums over
  // each kv head's query group) rounded once.
  const Tensor q32 = detail::as_f32(*this, q), k32 = detail::as_f32(*this, k), v32 = detail::as_f32(*this, v);
  const Tensor o32 = detail::as_f32(*this, out), do32 = detail::as_f32(*this, dout);
  Tensor dq32 = detail::f32_out(dq), dk32 = detail::f32_out(dk), dv32 = detail::f32_out(dv);
  const BackwardViews w{heads_view(q32.data<float>(), g, g.Hq),    heads_view(k32.data<float>(), g, g.Hkv),
                        heads_view(v32.data<float>(), g, g.Hkv),    heads_view(o32.data<float>(), g, g.Hq),
                        heads_view(do32.data<float>(), g, g.Hq),    heads_view(dq32.data<float>(), g, g.Hq),
                        heads_view(dk32.data<float>(), g, g.Hkv),   heads_view(dv32.data<float>(), g, g.Hkv)};
  attention_backward_views(g, w, lse.data<float>(), scale, q.dtype());
  detail::round_out(*this, dq32, dq);
  detail::round_out(*this, dk32, dk);
  detail::round_out(*this, dv32, dv);
}

}  // namespace pp3d
