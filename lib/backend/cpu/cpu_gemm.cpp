// CpuBackend::gemm: row-major C = alpha * op(A) * op(B) + beta * C through Eigen.
//
// f32 operands are mapped in place (Eigen::Map of row-major matrices, the four
// transpose combinations as Eigen transposes, `.noalias()` so no temporary is
// made; an AVX2+FMA build of that kernel is used when the CPU has it, see
// cpu_gemm_kernel.h). bf16/f16 operands are widened to f32 temporaries first and C is
// rounded back (nearest even). A batch of small products is spread over
// OpenMP threads, one product per thread; a large product uses Eigen's own
// OpenMP parallelism.
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include <Eigen/Core>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_gemm_kernel.h"
#include "pp3d/core/error.h"

#define PP3D_GEMM_KERNEL_NAME gemm_f32_generic
#include "backend/cpu/cpu_gemm_kernel.inc"
#undef PP3D_GEMM_KERNEL_NAME

namespace pp3d {

namespace {

void gemm_f32_one(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                  const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (detail::cpu_gemm_avx2_available()) detail::gemm_f32_avx2(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  else detail::gemm_f32_generic(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// Products with a long side (the LM head: 50304 vocabulary rows, columns or
// k) are cut into fixed tiles of that side, one single-threaded Eigen product
// per tile, spread over OpenMP threads: no synchronisation inside a product
// (Eigen's parallel GEMM spin-waits, which collapses on a busy machine), and
// the same tiles, so the same bits, for any thread count.
constexpr int64_t kTileMinSide = 8192;
constexpr int64_t kTile = 1024;
constexpr int64_t kChunkK = 4096;

}  // namespace

void detail::gemm_f32(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                      const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  const int64_t side = std::max(m, n);
  if (omp_in_parallel() || (side < kTileMinSide && k < kTileMinSide)) {
    gemm_f32_one(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  if (side < kTileMinSide) {
    // Long k (the LM head's input gradient): partial products over fixed k
    // chunks, added to C in chunk order.
    const int64_t chunks = (k + kChunkK - 1) / kChunkK;
    std::vector<float> part(static_cast<std::size_t>(chunks * m * n));
#pragma omp parallel for schedule(dynamic)
    for (int64_t t = 0; t < chunks; ++t) {
      const int64_t p0 = t * kChunkK, len = std::min(k, p0 + kChunkK) - p0;
      gemm_f32_one(ta, tb, m, n, len, alpha, ta ? a + p0 * lda : a + p0, lda, tb ? b + p0 : b + p0 * ldb, ldb, 0.0f,
                   part.data() + t * m * n, n);
    }
    detail::parallel_for(m, detail::row_grain(n), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        float* cr = c + r * ldc;
        if (beta == 0.0f) std::fill(cr, cr + n, 0.0f);
        else if (beta != 1.0f)
          for (int64_t j = 0; j < n; ++j) cr[j] *= beta;
        for (int64_t t = 0; t < chunks; ++t) {
          const float* pr = part.data() + (t * m + r) * n;
#pragma omp simd
          for (int64_t j = 0; j < n; ++j) cr[j] += pr[j];
        }
      }
    });
    return;
  }
  const bool split_n = n >= m;
  const int64_t tiles = (side + kTile - 1) / kTile;
#pragma omp parallel for schedule(dynamic)
  for (int64_t t = 0; t < tiles; ++t) {
    const int64_t x0 = t * kTile, len = std::min(side, x0 + kTile) - x0;
    if (split_n)  // C[:, x0:x0+len] = op(A) op(B)[:, x0:x0+len]
      gemm_f32_one(ta, tb, m, len, k, alpha, a, lda, tb ? b + x0 * ldb : b + x0, ldb, beta, c + x0, ldc);
    else  // C[x0:x0+len, :] = op(A)[x0:x0+len, :] op(B)
      gemm_f32_one(ta, tb, len, n, k, alpha, ta ? a + x0 : a + x0 * lda, lda, b, ldb, beta, c + x0 * ldc, ldc);
  }
}

namespace {

// Elements of `t` that `batch` matrices of `mat` elements, `stride` apart, touch.
int64_t span_of(int64_t batch, int64_t stride, int64_t mat) { return (batch - 1) * stride + mat; }

bool overlaps(const Tensor& x, const Tensor& y) {
  const char* x0 = static_cast<const char*>(x.raw());
  const char* y0 = static_cast<const char*>(y.raw());
  return x0 < y0 + y.nbytes() && y0 < x0 + x.nbytes();
}

// f32 view of the first `span` elements of a float tensor: the tensor itself
// when it is f32, else a widened copy held in `buf`.
const float* as_f32(const Tensor& t, int64_t span, std::vector<float>& buf) {
  if (t.dtype() == DType::F32) return t.data<float>();
  buf.resize(static_cast<std::size_t>(span));
  detail::parallel_for(span, detail::kCpuChunk,
                       [&](int64_t i0, int64_t i1) { detail::load_f32(t, i0, i1 - i0, buf.data() + i0); });
  return buf.data();
}

}  // namespace

void CpuBackend::gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const Tensor& a,
                      const Tensor& b, float beta, Tensor& c, int64_t batch, int64_t stride_a, int64_t stride_b,
                      int64_t stride_c) {
  detail::cpu_check_float(a, "gemm: a");
  detail::cpu_check_float(b, "gemm: b");
  detail::cpu_check_float(c, "gemm: c");
  PP3D_CHECK(m >= 0 && n >= 0 && k >= 0, "gemm: negative size m={} n={} k={}", m, n, k);
  PP3D_CHECK(batch >= 1, "gemm: batch must be >= 1, got {}", batch);
  PP3D_CHECK(stride_a >= 0 && stride_b >= 0 && stride_c >= 0, "gemm: negative stride a={} b={} c={}", stride_a,
             stride_b, stride_c);
  if (batch == 1) stride_a = stride_b = stride_c = 0;
  PP3D_CHECK(batch == 1 || stride_c >= m * n,
             "gemm: stride_c {} < m*n = {}: the {} output matrices in c would overlap", stride_c, m * n, batch);
  const int64_t span_a = span_of(batch, stride_a, m * k);
  const int64_t span_b = span_of(batch, stride_b, k * n);
  const int64_t span_c = span_of(batch, stride_c, m * n);
  PP3D_CHECK(a.numel() >= span_a, "gemm: a {} holds fewer than the {} elements that {} {}x{}{} matrices need",
             a.str(), span_a, batch, trans_a ? k : m, trans_a ? m : k, trans_a ? " (transposed)" : "");
  PP3D_CHECK(b.numel() >= span_b, "gemm: b {} holds fewer than the {} elements that {} {}x{}{} matrices need",
             b.str(), span_b, batch, trans_b ? n : k, trans_b ? k : n, trans_b ? " (transposed)" : "");
  PP3D_CHECK(c.numel() >= span_c, "gemm: c {} holds fewer than the {} elements that {} {}x{} matrices need",
             c.str(), span_c, batch, m, n);
  if (m == 0 || n == 0) return;
  PP3D_CHECK(!overlaps(a, c) && !overlaps(b, c), "gemm: c must not overlap a or b");

  std::vector<float> buf_a, buf_b, buf_c;
  const float* pa = as_f32(a, span_a, buf_a);
  const float* pb = as_f32(b, span_b, buf_b);
  float* pc;
  const bool c_f32 = c.dtype() == DType::F32;
  if (c_f32) {
    pc = c.data<float>();
  } else {
    // Only the matrices are read (when beta != 0) and written back; gaps between them stay untouched.
    buf_c.assign(static_cast<std::size_t>(span_c), 0.0f);
    if (beta != 0.0f)
      for (int64_t i = 0; i < batch; ++i) detail::load_f32(c, i * stride_c, m * n, buf_c.data() + i * stride_c);
    pc = buf_c.data();
  }

  // Small products in a batch: one per thread. Large ones: Eigen parallelises each.
  const bool per_thread = batch > 1 && m * n * k <= int64_t{128} * 128 * 128;
#pragma omp parallel for schedule(static) if (per_thread)
  for (int64_t i = 0; i < batch; ++i)
    detail::gemm_f32(trans_a, trans_b, m, n, k, alpha, pa + i * stride_a, pb + i * stride_b, beta, pc + i * stride_c);

  if (!c_f32)
    for (int64_t i = 0; i < batch; ++i) detail::store_f32(pc + i * stride_c, c, i * stride_c, m * n);
}

}  // namespace pp3d
