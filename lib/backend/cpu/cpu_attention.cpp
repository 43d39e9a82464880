// CpuBackend: causal self-attention, forward and backward.
//
// Layout: qkv [B, T, 3, H, D], out [B, T, H, D], lse [B, H, T]. For one
// (b, h) pair, Q/K/V are T x D row-major matrices with row stride 3*H*D, O
// has row stride H*D; the products run in place through detail::gemm_f32
// (Eigen, AVX2 build when available) with those strides.
// Forward, per block of up to kBlockQ queries [q0, q1) (keys [0, q1)):
//   S = scale * Q_blk K^T, masked where key > query; P = softmax(S);
//   lse = max + log(sum exp(S - max)); O_blk = P V.
// Backward recomputes P = exp(S - lse) and, per (b, h) over query blocks in
// order: dV += P^T dO, dP = dO V^T, Di = rowsum(dO * O), dS = P * (dP - Di),
//   dQ = scale * dS K, dK += scale * dS^T Q.
// Forward tasks are (b, h, query block); backward tasks are (b, h), whose dK
// and dV accumulate in a fixed order, so results do not depend on threads.
#include <cmath>
#include <vector>

#include <Eigen/Core>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_gemm_kernel.h"
#include "pp3d/core/error.h"

namespace pp3d {
namespace {

constexpr int64_t kBlockQ = 64;

struct AttnDims {
  int64_t B, T, H, D;
  int64_t qkv_row() const { return 3 * H * D; }  // stride between tokens in qkv
  int64_t out_row() const { return H * D; }      // stride between tokens in out
  // Offset of (b, t=0, s, h, d=0) in qkv; s = 0 (q), 1 (k), 2 (v).
  int64_t qkv_off(int64_t b, int64_t s, int64_t h) const { return (b * T * 3 + s) * H * D + h * D; }
  int64_t out_off(int64_t b, int64_t h) const { return b * T * H * D + h * D; }
};

AttnDims attn_dims(const Tensor& qkv, const char* what) {
  PP3D_CHECK(qkv.dim() == 5 && qkv.size(2) == 3, "{}: qkv must be [B, T, 3, H, D], got {}", what,
             shape_str(qkv.shape()));
  return {qkv.size(0), qkv.size(1), qkv.size(3), qkv.size(4)};
}

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

}  // namespace

void CpuBackend::attention_forward(const Tensor& qkv, Tensor& out, Tensor& lse, float scale) {
  detail::cpu_check(qkv, DType::F32, "attention_forward: qkv");
  detail::cpu_check(out, DType::F32, "attention_forward: out");
  detail::cpu_check(lse, DType::F32, "attention_forward: lse");
  const AttnDims a = attn_dims(qkv, "attention_forward");
  check_shape(out, {a.B, a.T, a.H, a.D}, "attention_forward: out");
  check_shape(lse, {a.B, a.H, a.T}, "attention_forward: lse");
  if (qkv.numel() == 0) return;
  const float* pqkv = qkv.data<float>();
  float* pout = out.data<float>();
  float* plse = lse.data<float>();
  const int64_t qblocks = (a.T + kBlockQ - 1) / kBlockQ;
  const int64_t tasks = a.B * a.H * qblocks;
  const bool par = tasks > 1 && a.B * a.H * a.T * a.T * a.D >= detail::kCpuChunk;
#pragma omp parallel if (par)
  {
    std::vector<float> s;
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t bh = task / qblocks, qb = task % qblocks;
      const int64_t b = bh / a.H, h = bh % a.H;
      const int64_t q0 = qb * kBlockQ, q1 = std::min(a.T, q0 + kBlockQ), nq = q1 - q0;
      const float* q = pqkv + a.qkv_off(b, 0, h) + q0 * a.qkv_row();
      const float* k = pqkv + a.qkv_off(b, 1, h);
      const float* v = pqkv + a.qkv_off(b, 2, h);
      float* o = pout + a.out_off(b, h) + q0 * a.out_row();
      s.resize(static_cast<std::size_t>(nq * q1));
      // S[nq, q1] = scale * Q K^T; softmax rows in place; O = P V.
      detail::gemm_f32(false, true, nq, q1, a.D, scale, q, a.qkv_row(), k, a.qkv_row(), 0.0f, s.data(), q1);
      float* lse_bh = plse + bh * a.T;
      for (int64_t i = 0; i < nq; ++i) lse_bh[q0 + i] = softmax_row(s.data() + i * q1, q0 + i + 1, q1);
      detail::gemm_f32(false, false, nq, a.D, q1, 1.0f, s.data(), q1, v, a.qkv_row(), 0.0f, o, a.out_row());
    }
  }
}

void CpuBackend::attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& lse,
                                    Tensor& dqkv, float scale) {
  detail::cpu_check(dout, DType::F32, "attention_backward: dout");
  detail::cpu_check(qkv, DType::F32, "attention_backward: qkv");
  detail::cpu_check(out, DType::F32, "attention_backward: out");
  detail::cpu_check(lse, DType::F32, "attention_backward: lse");
  detail::cpu_check(dqkv, DType::F32, "attention_backward: dqkv");
  const AttnDims a = attn_dims(qkv, "attention_backward");
  check_shape(out, {a.B, a.T, a.H, a.D}, "attention_backward: out");
  check_shape(dout, {a.B, a.T, a.H, a.D}, "attention_backward: dout");
  check_shape(lse, {a.B, a.H, a.T}, "attention_backward: lse");
  check_shape(dqkv, qkv.shape(), "attention_backward: dqkv");
  if (qkv.numel() == 0) return;
  const float* pqkv = qkv.data<float>();
  const float* pout = out.data<float>();
  const float* pdout = dout.data<float>();
  const float* plse = lse.data<float>();
  float* pd = dqkv.data<float>();
  const int64_t tasks = a.B * a.H;
  const int64_t qs = a.qkv_row(), os = a.out_row();
  const bool par = tasks > 1 && a.B * a.H * a.T * a.T * a.D >= detail::kCpuChunk;
#pragma omp parallel if (par)
  {
    std::vector<float> p, dp;
#pragma omp for schedule(dynamic)
    for (int64_t bh = 0; bh < tasks; ++bh) {
      const int64_t b = bh / a.H, h = bh % a.H;
      const float* lse_bh = plse + bh * a.T;
      const float* k = pqkv + a.qkv_off(b, 1, h);
      const float* v = pqkv + a.qkv_off(b, 2, h);
      float* dk = pd + a.qkv_off(b, 1, h);
      float* dv = pd + a.qkv_off(b, 2, h);
      for (int64_t t = 0; t < a.T; ++t) {
        std::fill(dk + t * qs, dk + t * qs + a.D, 0.0f);
        std::fill(dv + t * qs, dv + t * qs + a.D, 0.0f);
      }
      for (int64_t q0 = 0; q0 < a.T; q0 += kBlockQ) {
        const int64_t q1 = std::min(a.T, q0 + kBlockQ), nq = q1 - q0;
        const float* q = pqkv + a.qkv_off(b, 0, h) + q0 * qs;
        const float* o = pout + a.out_off(b, h) + q0 * os;
        const float* dout_blk = pdout + a.out_off(b, h) + q0 * os;
        float* dq = pd + a.qkv_off(b, 0, h) + q0 * qs;
        p.resize(static_cast<std::size_t>(nq * q1));
        dp.resize(static_cast<std::size_t>(nq * q1));
        // P = exp(scale * Q K^T - lse), zero above the diagonal.
        detail::gemm_f32(false, true, nq, q1, a.D, scale, q, qs, k, qs, 0.0f, p.data(), q1);
        for (int64_t i = 0; i < nq; ++i) {
          const int64_t valid = q0 + i + 1;
          float* row = p.data() + i * q1;
          Eigen::Map<Eigen::ArrayXf> r(row, valid);
          r = (r - lse_bh[q0 + i]).exp();
          std::fill(row + valid, row + q1, 0.0f);
        }
        // dV += P^T dO; dP = dO V^T.
        detail::gemm_f32(true, false, q1, a.D, nq, 1.0f, p.data(), q1, dout_blk, os, 1.0f, dv, qs);
        detail::gemm_f32(false, true, nq, q1, a.D, 1.0f, dout_blk, os, v, qs, 0.0f, dp.data(), q1);
        // dS = P * (dP - Di) with Di = rowsum(dO * O), written over dP.
        for (int64_t i = 0; i < nq; ++i) {
          const float* dor = dout_blk + i * os;
          const float* orow = o + i * os;
          float di = 0.0f;
          for (int64_t d = 0; d < a.D; ++d) di += dor[d] * orow[d];
          const float* prow = p.data() + i * q1;
          float* dsrow = dp.data() + i * q1;
#pragma omp simd
          for (int64_t j = 0; j < q1; ++j) dsrow[j] = prow[j] * (dsrow[j] - di);
        }
        // dQ = scale * dS K; dK += scale * dS^T Q.
        detail::gemm_f32(false, false, nq, a.D, q1, scale, dp.data(), q1, k, qs, 0.0f, dq, qs);
        detail::gemm_f32(true, false, q1, a.D, nq, scale, dp.data(), q1, q, qs, 1.0f, dk, qs);
      }
    }
  }
}

}  // namespace pp3d
