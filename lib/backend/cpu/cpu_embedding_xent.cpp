// CpuBackend: embedding lookup/backward and the vocab-sliced cross-entropy.
//
// embedding_forward copies table rows (rows parallel). embedding_backward
// splits the C columns into fixed blocks; each block is owned by one thread,
// which walks the ids in index order, so dtable is accumulated in the same
// order for any thread count.
// xent_stats / xent_backward work row by row (rows parallel) on a slice of
// the vocabulary: columns [0, valid) of logits are global ids
// [vocab_start, vocab_start + valid); columns [valid, V_local) are padding.
// xent_backward is elementwise per row, so dlogits may alias logits.
#include <cmath>
#include <limits>

#include <Eigen/Core>

#include "backend/cpu/cpu_backend.h"
#include "backend/op_checks.h"
#include "pp3d/core/error.h"

namespace pp3d {

using detail::check_rows;
using detail::xent_rows;

using detail::cpu_check;

namespace {

void check_ids(const Tensor& ids, const char* what) {
  cpu_check(ids, DType::I32, what);
  PP3D_CHECK(ids.dim() == 1, "{} must be 1-d [N], got shape {}", what, shape_str(ids.shape()));
}

}  // namespace

void CpuBackend::embedding_forward(const Tensor& ids, const Tensor& table, Tensor& out, int64_t id_offset,
                                   bool accumulate) {
  check_ids(ids, "embedding_forward: ids");
  cpu_check(table, DType::F32, "embedding_forward: table");
  cpu_check(out, DType::F32, "embedding_forward: out");
  PP3D_CHECK(table.dim() == 2, "embedding_forward: table must be [V_local, C], got {}", shape_str(table.shape()));
  const int64_t n = ids.numel(), v = table.size(0), c = table.size(1);
  check_rows(out, n, c, "embedding_forward: out");
  const int32_t* pid = ids.data<int32_t>();
  const float* pt = table.data<float>();
  float* po = out.data<float>();
  detail::parallel_for(n, detail::row_grain(c), [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t row = static_cast<int64_t>(pid[i]) - id_offset;
      float* dst = po + i * c;
      const bool in = row >= 0 && row < v;
      if (!in) {
        if (!accumulate) std::fill(dst, dst + c, 0.0f);
        continue;
      }
      const float* src = pt + row * c;
      if (accumulate) {
#pragma omp simd
        for (int64_t j = 0; j < c; ++j) dst[j] += src[j];
      } else {
        std::copy(src, src + c, dst);
      }
    }
  });
}

void CpuBackend::embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dtable_out, int64_t id_offset) {
  detail::with_f32_grad(*this, dtable_out, "embedding_backward: dtable",
                        [&](Tensor& dtable) { embedding_backward_f32(ids, dout, dtable, id_offset); });
}

void CpuBackend::embedding_backward_f32(const Tensor& ids, const Tensor& dout, Tensor& dtable,
                                        int64_t id_offset) {
  check_ids(ids, "embedding_backward: ids");
  cpu_check(dout, DType::F32, "embedding_backward: dout");
  cpu_check(dtable, DType::F32, "embedding_backward: dtable");
  PP3D_CHECK(dtable.dim() == 2, "embedding_backward: dtable must be [V_local, C], got {}",
             shape_str(dtable.shape()));
  const int64_t n = ids.numel(), v = dtable.size(0), c = dtable.size(1);
  check_rows(dout, n, c, "embedding_backward: dout");
  const int32_t* pid = ids.data<int32_t>();
  const float* pd = dout.data<float>();
  float* pt = dtable.data<float>();
  constexpr int64_t kCols = 64;
  const int64_t col_blocks = (c + kCols - 1) / kCols;
  const bool par = n * c >= detail::kCpuChunk && col_blocks > 1;
#pragma omp parallel for schedule(static) if (par)
  for (int64_t blk = 0; blk < col_blocks; ++blk) {
    const int64_t c0 = blk * kCols, c1 = std::min(c, c0 + kCols);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t row = static_cast<int64_t>(pid[i]) - id_offset;
      if (row < 0 || row >= v) continue;
      float* dst = pt + row * c;
      const float* src = pd + i * c;
#pragma omp simd
      for (int64_t j = c0; j < c1; ++j) dst[j] += src[j];
    }
  }
}

// ---- cross-entropy over a vocabulary slice ------------------------------------------

namespace {

void check_vec(const Tensor& t, int64_t n, const char* what) {
  cpu_check(t, DType::F32, what);
  PP3D_CHECK(t.numel() == n, "{} must hold {} values (one per row), got {}", what, n, shape_str(t.shape()));
}

}  // namespace

void CpuBackend::xent_stats(const Tensor& logits, const Tensor& targets, int64_t vocab_start, int64_t valid,
                            Tensor& local_max, Tensor& local_sumexp, Tensor& target_logit) {
  cpu_check(logits, DType::F32, "xent_stats: logits");
  cpu_check(targets, DType::I32, "xent_stats: targets");
  const int64_t n = xent_rows(logits, targets, valid, "xent_stats");
  check_vec(local_max, n, "xent_stats: local_max");
  check_vec(local_sumexp, n, "xent_stats: local_sumexp");
  check_vec(target_logit, n, "xent_stats: target_logit");
  const int64_t vl = logits.size(1);
  const float* pl = logits.data<float>();
  const int32_t* pt = targets.data<int32_t>();
  float* pmax = local_max.data<float>();
  float* psum = local_sumexp.data<float>();
  float* ptl = target_logit.data<float>();
  detail::parallel_for(n, detail::row_grain(valid), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t t = static_cast<int64_t>(pt[r]) - vocab_start;
      ptl[r] = (t >= 0 && t < valid) ? pl[r * vl + t] : 0.0f;
      if (valid == 0) {
        pmax[r] = -std::numeric_limits<float>::infinity();
        psum[r] = 0.0f;
        continue;
      }
      Eigen::Map<const Eigen::ArrayXf> row(pl + r * vl, valid);
      const float mx = row.maxCoeff();
      pmax[r] = mx;
      psum[r] = (row - mx).exp().sum();
    }
  });
}

void CpuBackend::xent_backward(const Tensor& logits, const Tensor& targets, int64_t vocab_start, int64_t valid,
                               const Tensor& global_max, const Tensor& global_sumexp, float weight,
                               Tensor& dlogits) {
  cpu_check(logits, DType::F32, "xent_backward: logits");
  cpu_check(targets, DType::I32, "xent_backward: targets");
  cpu_check(dlogits, DType::F32, "xent_backward: dlogits");
  const int64_t n = xent_rows(logits, targets, valid, "xent_backward");
  check_vec(global_max, n, "xent_backward: global_max");
  check_vec(global_sumexp, n, "xent_backward: global_sumexp");
  check_shape(dlogits, logits.shape(), "xent_backward: dlogits");
  const int64_t vl = logits.size(1);
  const float* pl = logits.data<float>();
  const int32_t* pt = targets.data<int32_t>();
  const float* pmax = global_max.data<float>();
  const float* psum = global_sumexp.data<float>();
  float* pd = dlogits.data<float>();
  detail::parallel_for(n, detail::row_grain(vl), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float mx = pmax[r], w = weight / psum[r];
      Eigen::Map<const Eigen::ArrayXf> row(pl + r * vl, valid);
      Eigen::Map<Eigen::ArrayXf> drow(pd + r * vl, valid);
      drow = (row - mx).exp() * w;
      std::fill(pd + r * vl + valid, pd + (r + 1) * vl, 0.0f);
      const int64_t t = static_cast<int64_t>(pt[r]) - vocab_start;
      if (t >= 0 && t < valid) pd[r * vl + t] -= weight;
    }
  });
}

}  // namespace pp3d
