// The AVX2+FMA build of the f32 GEMM kernel (see cpu_gemm_kernel.h).
//
// Compiled with `#pragma GCC target("avx2,fma")` after every standard header
// Eigen needs is included (so no standard-library code is built for AVX2),
// Eigen's feature macros set by hand (GCC's C++ front end does not update
// them for the pragma) and the Eigen namespace renamed so its template
// instances cannot be merged with the generic build's. Only on x86-64 GCC
// builds whose flags do not already enable AVX2; elsewhere gemm_f32_avx2 is
// never called.
#include <cstdint>
#include <cstdlib>

#include "backend/cpu/cpu_gemm_kernel.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__AVX2__)
#define PP3D_GEMM_AVX2_BUILD 1
#endif

#ifdef PP3D_GEMM_AVX2_BUILD
// Everything Eigen/Core includes from the standard library and the intrinsics, first.
#include <immintrin.h>

#include <algorithm>
#include <cassert>
#include <cfloat>
#include <climits>
#include <cmath>
#include <complex>
#include <cstddef>
#include <cstring>
#include <functional>
#include <iosfwd>
#include <limits>
#include <new>
#include <type_traits>
#include <utility>
#ifdef _OPENMP
#include <omp.h>
#endif

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define __AVX__ 1
#define __AVX2__ 1
#define __FMA__ 1
#ifndef __SSE3__
#define __SSE3__ 1
#endif
#ifndef __SSSE3__
#define __SSSE3__ 1
#endif
#ifndef __SSE4_1__
#define __SSE4_1__ 1
#endif
#ifndef __SSE4_2__
#define __SSE4_2__ 1
#endif
#define Eigen pp3d_eigen_avx2
#include <Eigen/Core>

#define PP3D_GEMM_KERNEL_NAME gemm_f32_avx2
#include "backend/cpu/cpu_gemm_kernel.inc"
#undef PP3D_GEMM_KERNEL_NAME

#undef Eigen
#pragma GCC pop_options
#endif  // PP3D_GEMM_AVX2_BUILD

namespace pp3d::detail {

bool cpu_gemm_avx2_available() {
#ifdef PP3D_GEMM_AVX2_BUILD
  static const bool ok = [] {
    const char* env = std::getenv("PP3D_CPU_GENERIC_GEMM");
    if (env != nullptr && env[0] != '\0' && env[0] != '0') return false;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return ok;
#else
  return false;
#endif
}

#ifndef PP3D_GEMM_AVX2_BUILD
void gemm_f32_avx2(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                   const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  gemm_f32_generic(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
#endif

}  // namespace pp3d::detail
