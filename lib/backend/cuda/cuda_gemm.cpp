// CudaBackend::gemm through cuBLASLt.
//
// Row-major C[m, n] = alpha op(A) op(B) + beta C is computed as the column-major
// product C^T[n, m] = op(B)^T op(A)^T: cuBLASLt's "A" is our B and its "B" is our A,
// each described by its stored column-major shape (a row-major [r, c] matrix is a
// column-major [c, r] one with ld = c) plus a transpose flag.
// Types: f32 x f32 -> f32 with CUBLAS_COMPUTE_32F (true fp32; CUBLAS_COMPUTE_32F_FAST_TF32
// only when CudaBackendOptions::allow_tf32); bf16 x bf16 and f16 x f16 -> same type or
// f32, accumulated in f32. Any other combination, or a configuration cuBLASLt offers no
// algorithm for (e.g. 16-bit data with odd leading dimensions), runs as an f32 GEMM on
// f32 copies (cast kernels) and casts C back (nearest even), as the CPU backend does.
// Strided batches map to cuBLASLt's strided-batch layouts; a 0 stride on A or B
// (broadcast) is run as a loop of single products. Pointer alignment is passed to the
// heuristic (views may be unaligned), and the chosen algorithm is cached per
// configuration so the choice, hence the result, is stable from call to call.
// Tensor cores: Backend::gemm16 (backend.cpp) rounds an f32 operand to bf16/f16 with one
// cast kernel and lands here with two 16-bit operands, i.e. on the native path above.
#include <fmt/format.h>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_check.h"
#include "launchers.h"
#include "pp3d/core/error.h"

namespace pp3d {

namespace {

cudaDataType_t lt_type(DType t) {
  switch (t) {
    case DType::F32: return CUDA_R_32F;
    case DType::BF16: return CUDA_R_16BF;
    case DType::F16: return CUDA_R_16F;
    case DType::I32: break;
  }
  PP3D_FAIL("gemm: no cuBLASLt type for {}", dtype_name(t));
}

// Largest power of two (<= 256) dividing the address and, for batches, the stride in bytes.
uint32_t alignment_of(const void* p, int64_t stride_bytes) {
  const uint64_t x = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(p)) | static_cast<uint64_t>(stride_bytes) | 256u;
  return static_cast<uint32_t>(x & (~x + 1));
}

// RAII holder for the cuBLASLt descriptors of one call.
struct LtDescs {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  ~LtDescs() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

// Column-major layout; the batch attributes only when batch > 1 (stride ignored otherwise).
void make_layout(cublasLtMatrixLayout_t* l, DType t, int64_t rows, int64_t cols, int64_t ld, int64_t batch,
                 int64_t stride) {
  PP3D_CHECK_CUBLAS(cublasLtMatrixLayoutCreate(l, lt_type(t), static_cast<uint64_t>(rows),
                                               static_cast<uint64_t>(cols), ld));
  if (batch > 1) {
    const int32_t count = static_cast<int32_t>(batch);
    PP3D_CHECK_CUBLAS(cublasLtMatrixLayoutSetAttribute(*l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)));
    PP3D_CHECK_CUBLAS(
        cublasLtMatrixLayoutSetAttribute(*l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
  }
}

int64_t span_of(int64_t batch, int64_t stride, int64_t mat) { return (batch - 1) * stride + mat; }

bool overlaps(const Tensor& x, const Tensor& y) {
  const char* x0 = static_cast<const char*>(x.raw());
  const char* y0 = static_cast<const char*>(y.raw());
  return x0 < y0 + y.nbytes() && y0 < x0 + x.nbytes();
}

}  // namespace

bool CudaBackend::lt_matmul(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const void* a,
                            DType ta, const void* b, DType tb, float beta, void* c, DType tc, int64_t batch,
                            int64_t stride_a, int64_t stride_b, int64_t stride_c, const detail::LtEpilogue& epi) {
  const bool gelu_epi = epi.gelu || epi.dgelu;
  // The GELU input matrix has D's layout (column-major [n, m], ld n) and D's type (the
  // default of CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE, left unset: setting it is only
  // meant for fp8 outputs); its ld "must be divisible by 8" (cublasLt.h).
  if (gelu_epi && (batch != 1 || n % 8 != 0 || epi.aux == nullptr || epi.aux_dtype != tc)) return false;
  const void* bias = epi.dgelu ? nullptr : epi.bias;
  const bool tf32 = opts_.allow_tf32 && ta == DType::F32;
  const cublasComputeType_t compute = tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  const cublasOperation_t op_a = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;  // cuBLASLt A = our B
  const cublasOperation_t op_b = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;  // cuBLASLt B = our A
  LtDescs d;
  PP3D_CHECK_CUBLAS(cublasLtMatmulDescCreate(&d.op, compute, CUDA_R_32F));
  PP3D_CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof(op_a)));
  PP3D_CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof(op_b)));
  const cublasLtEpilogue_t kind = epi.dgelu ? CUBLASLT_EPILOGUE_DGELU
                                  : epi.gelu  ? (bias ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX)
                                  : bias      ? CUBLASLT_EPILOGUE_BIAS
                                              : CUBLASLT_EPILOGUE_DEFAULT;
  if (kind != CUBLASLT_EPILOGUE_DEFAULT)
    PP3D_CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &kind, sizeof(kind)));
  if (bias != nullptr) {
    // Column-major D^T is [n, m]: its n rows are our columns, so bias[n] is added to each
    // of our rows. The bias type is set explicitly (the default is D's type).
    const cudaDataType_t bt = lt_type(epi.bias_dtype);
    PP3D_CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
    PP3D_CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof(bt)));
  }
  if (gelu_epi) {
    const int64_t aux_ld = n;
    PP3D_CHECK_CUBLAS(
        cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &epi.aux, sizeof(epi.aux)));
    PP3D_CHECK_CUBLAS(
        cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &aux_ld, sizeof(aux_ld)));
  }
  // Stored column-major shapes: our B [k, n] (or [n, k]) and our A [m, k] (or [k, m]) read transposed.
  if (trans_b) make_layout(&d.a, tb, k, n, k, batch, stride_b);
  else make_layout(&d.a, tb, n, k, n, batch, stride_b);
  if (trans_a) make_layout(&d.b, ta, m, k, m, batch, stride_a);
  else make_layout(&d.b, ta, k, m, k, batch, stride_a);
  make_layout(&d.c, tc, n, m, n, batch, stride_c);

  // Alignment includes the strides even for batch == 1 (the broadcast loop passes them), so
  // every product of a loop gets the same key and algorithm: the first decides for all.
  const int64_t es_a = static_cast<int64_t>(dtype_size(ta)), es_b = static_cast<int64_t>(dtype_size(tb)),
                es_c = static_cast<int64_t>(dtype_size(tc));
  const uint32_t al_a = alignment_of(b, stride_b * es_b);
  const uint32_t al_b = alignment_of(a, stride_a * es_a);
  const uint32_t al_c = alignment_of(c, stride_c * es_c);
  const uint64_t ws_bytes = gemm_ws_.defined() ? gemm_ws_.nbytes() : 0;
  // The heuristic reads the bias and aux pointers for their alignment: part of the key, like A/B/C's.
  const std::string epi_key =
      fmt::format("e{}|{}", int(kind),
                  bias ? fmt::format("b{}:{}", int(epi.bias_dtype), alignment_of(bias, 0)) : std::string()) +
      (gelu_epi ? fmt::format("|a{}", alignment_of(epi.aux, 0)) : std::string());
  const std::string key = fmt::format("{}{}|{},{},{}|{}:{},{},{}|{},{},{}|{},{},{}|{}|{}", int(trans_a), int(trans_b),
                                      m, n, k, batch, stride_a, stride_b, stride_c, int(ta), int(tb), int(tc), al_a,
                                      al_b, al_c, int(tf32), epi_key);
  auto it = algo_cache_.find(key);
  if (it == algo_cache_.end()) {
    PP3D_CHECK_CUBLAS(cublasLtMatmulPreferenceCreate(&d.pref));
    PP3D_CHECK_CUBLAS(cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                           &ws_bytes, sizeof(ws_bytes)));
    PP3D_CHECK_CUBLAS(cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a,
                                                           sizeof(al_a)));
    PP3D_CHECK_CUBLAS(cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b,
                                                           sizeof(al_b)));
    PP3D_CHECK_CUBLAS(cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c,
                                                           sizeof(al_c)));
    PP3D_CHECK_CUBLAS(cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c,
                                                           sizeof(al_c)));
    cublasLtMatmulHeuristicResult_t res{};
    int found = 0;
    const cublasStatus_t st =
        cublasLtMatmulAlgoGetHeuristic(lt_, d.op, d.a, d.b, d.c, d.c, d.pref, 1, &res, &found);
    if (st != CUBLAS_STATUS_SUCCESS || found == 0) return false;
    it = algo_cache_.emplace(key, res.algo).first;
  }
  const cublasStatus_t st = cublasLtMatmul(lt_, d.op, &alpha, b, d.a, a, d.b, &beta, c, d.c, c, d.c, &it->second,
                                           ws_bytes ? gemm_ws_.raw() : nullptr, ws_bytes, stream_);
  if (st == CUBLAS_STATUS_NOT_SUPPORTED) {  // rejected before running: let the caller fall back
    algo_cache_.erase(it);
    return false;
  }
  PP3D_CHECK(st == CUBLAS_STATUS_SUCCESS, "gemm: cublasLtMatmul failed with status {} (m={} n={} k={} batch={})",
             static_cast<int>(st), m, n, k, batch);
  return true;
}

void CudaBackend::gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const Tensor& a,
                       const Tensor& b, float beta, Tensor& c, int64_t batch, int64_t stride_a, int64_t stride_b,
                       int64_t stride_c) {
  check_float(a, "gemm: a");
  check_float(b, "gemm: b");
  check_float(c, "gemm: c");
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

  // Runs the product on the given pointers/types; broadcast (0-stride) inputs loop over the batch.
  auto run = [&](const void* pa, DType ta, const void* pb, DType tb, void* pc, DType tc) -> bool {
    if (batch > 1 && (stride_a == 0 || stride_b == 0)) {
      for (int64_t i = 0; i < batch; ++i) {
        const void* ai = static_cast<const char*>(pa) + i * stride_a * static_cast<int64_t>(dtype_size(ta));
        const void* bi = static_cast<const char*>(pb) + i * stride_b * static_cast<int64_t>(dtype_size(tb));
        void* ci = static_cast<char*>(pc) + i * stride_c * static_cast<int64_t>(dtype_size(tc));
        // Only the first product can fail (same key for all), before anything ran.
        if (!lt_matmul(trans_a, trans_b, m, n, k, alpha, ai, ta, bi, tb, beta, ci, tc, 1, stride_a, stride_b,
                       stride_c)) {
          PP3D_CHECK(i == 0, "gemm: cuBLASLt algorithm lookup failed in the middle of a broadcast batch");
          return false;
        }
      }
      return true;
    }
    return lt_matmul(trans_a, trans_b, m, n, k, alpha, pa, ta, pb, tb, beta, pc, tc, batch, stride_a, stride_b,
                     stride_c);
  };

  const DType da = a.dtype(), db = b.dtype(), dc = c.dtype();
  const bool native = k > 0 && da == db && (da == DType::F32 ? dc == DType::F32 : (dc == da || dc == DType::F32));
  if (native && run(a.raw(), da, b.raw(), db, c.raw(), dc)) return;

  // Fallback: f32 copies of whatever is not f32, an f32 product, C cast back.
  auto as_f32 = [&](const Tensor& t, int64_t span, int slot) -> void* {
    if (t.dtype() == DType::F32) return t.raw();
    void* buf = scratch(slot, static_cast<std::size_t>(span) * sizeof(float));
    PP3D_CHECK_CUDA(kernels::cast(buf, static_cast<int>(DType::F32), t.raw(), static_cast<int>(t.dtype()), span,
                                  stream_));
    return buf;
  };
  const void* pa = as_f32(a, span_a, 1);
  const void* pb = as_f32(b, span_b, 2);
  void* pc = as_f32(c, span_c, 3);  // read in full so gaps between batch matrices round-trip unchanged
  if (k == 0) {  // C = beta * C: nothing for cuBLASLt to multiply
    for (int64_t i = 0; i < batch; ++i) {
      float* ci = static_cast<float*>(pc) + i * stride_c;
      if (beta == 0.0f) PP3D_CHECK_CUDA(kernels::fill_u32(ci, 0u, m * n, stream_));
      else PP3D_CHECK_CUDA(kernels::scale_f32(ci, beta, m * n, stream_));
    }
  } else {
    PP3D_CHECK(run(pa, DType::F32, pb, DType::F32, pc, DType::F32),
               "gemm: cuBLASLt has no algorithm for f32 m={} n={} k={} batch={} (trans_a={}, trans_b={})", m, n, k,
               batch, trans_a, trans_b);
  }
  if (dc != DType::F32)
    PP3D_CHECK_CUDA(kernels::cast(c.raw(), static_cast<int>(dc), pc, static_cast<int>(DType::F32), span_c, stream_));
}

}  // namespace pp3d
