// Single-matrix f32 GEMM kernels behind CpuBackend::gemm (internal header).
//
// Row-major C[m, n] = alpha * op(A) * op(B) + beta * C on raw pointers
// (A is [m, k] or [k, m] if ta; B is [k, n] or [n, k] if tb), through Eigen;
// lda/ldb/ldc are the row strides (>= the stored row length).
// Two builds of the same code (cpu_gemm_kernel.inc): the generic one, compiled
// with the library's flags, and, on x86-64 GCC builds not already targeting
// AVX2, one compiled for AVX2+FMA with Eigen's namespace renamed (no shared
// template instances). gemm_f32 picks the AVX2 build when the CPU has it
// (set PP3D_CPU_GENERIC_GEMM=1 in the environment to force the generic one).
// beta == 0 ignores the old contents of C. Thread-safe; parallelises itself
// with OpenMP unless called inside a parallel region.
#pragma once

#include <cstdint>

namespace pp3d::detail {

void gemm_f32(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
              const float* b, int64_t ldb, float beta, float* c, int64_t ldc);
// Contiguous operands: lda/ldb/ldc are the stored row lengths.
inline void gemm_f32(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                     const float* b, float beta, float* c) {
  gemm_f32(ta, tb, m, n, k, alpha, a, ta ? m : k, b, tb ? k : n, beta, c, n);
}

// The two builds; gemm_f32_avx2 exists only when cpu_gemm_avx2_available() is true.
void gemm_f32_generic(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                      int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);
void gemm_f32_avx2(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                   const float* b, int64_t ldb, float beta, float* c, int64_t ldc);
// True when the AVX2 build was compiled in and this CPU supports AVX2 and FMA.
bool cpu_gemm_avx2_available();

}  // namespace pp3d::detail
