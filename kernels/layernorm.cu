// LayerNorm over the last dim n of x[rows, n], forward and backward (fp32 math).
// x, y, dy, dx may each be f32, bf16 or f16 (16-bit activations, GPT's compute_dtype
// param): read through f32, outputs rounded once; w, b, mean, rstd are f32.
// Forward (one warp per row, two passes like the CPU reference):
//   mean = sum(x)/n, var = sum((x-mean)^2)/n, rstd = 1/sqrt(var+eps)
//   y = (x-mean)*rstd*w + b; saves mean[rows], rstd[rows].
// Backward, with g = dy*w and xhat = (x-mean)*rstd:
//   dx = rstd * (g - mean(g) - xhat * mean(g*xhat))   (input gradient: OVERWRITTEN)
//   dw += sum_rows dy*xhat, db += sum_rows dy          (parameter gradients: ACCUMULATE)
// dw, db may be f32 or 16-bit (--grad-dtype param): dw = round(dw + total), one rounding.
// Vector paths (n % 8 == 0, every pointer 16-byte aligned): each lane / thread moves 8
// elements per 128-bit access (two for f32 arrays; common.cuh load_vec_as_f32). Forward:
// lane l of a row's warp owns elements [8l, 8l + 8) + 256k; the x re-reads of passes 2
// and 3 hit L1. Backward (n <= 4096): thread t of the chunk's block owns columns
// [8t, 8t + 8), keeps w and its dw/db partials in registers, one block_sum2 per row.
// Otherwise the scalar kernels (element j by lane / thread j + k*blockDim): odd n,
// views at odd offsets. Same f32 expressions on both paths; the forward and dx row sums
// differ in order, the dw/db column sums do not (both paths add rows in order, explicit FMA).
// Deterministic, atomic-free: pass 1 gives each thread block a fixed chunk of rows
// (layernorm_backward_chunks(rows), a function of rows only, at most 1024 chunks); per
// row the block reduces sum(g), sum(g*xhat) with a fixed tree, writes dx, and each
// thread adds dy*xhat, dy for the columns it owns into the chunk's partial row
// partial[chunk, 0:n) / [n:2n) (one owner per element, rows in order). Pass 2
// (add_chunk_sums, bias.cu): per column a fixed tree over the chunk partials.
#include "common.cuh"
#include "launchers.h"

namespace pp3d::kernels {

namespace {

constexpr int kRowsPerBlock = 8;  // forward: 8 warps, one row each

// W = 1: lane l owns elements l + 32k (any n, any alignment); W = kVec: lane l owns
// [8l, 8l + 8) + 256k through 128-bit accesses (n % 8 == 0, every pointer aligned).
template <int W>
__global__ void layernorm_forward_kernel(void* __restrict__ y, int ydt, float* __restrict__ mean,
                                         float* __restrict__ rstd, const void* __restrict__ x, int xdt,
                                         const float* __restrict__ w, const float* __restrict__ b, int64_t rows,
                                         int64_t n, float eps) {
  const int lane = threadIdx.x % kWarp;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  if (row >= rows) return;  // whole warp exits together
  const int64_t r0 = row * n;
  float v[W];
  float s = 0.0f;
  for (int64_t j = lane * W; j < n; j += kWarp * W) {
    load_w_as_f32<W>(x, r0 + j, xdt, v);
#pragma unroll
    for (int k = 0; k < W; ++k) s += v[k];
  }
  const float mu = warp_sum(s) / static_cast<float>(n);
  float ss = 0.0f;
  for (int64_t j = lane * W; j < n; j += kWarp * W) {
    load_w_as_f32<W>(x, r0 + j, xdt, v);
#pragma unroll
    for (int k = 0; k < W; ++k) {
      const float d = v[k] - mu;
      ss += d * d;
    }
  }
  const float rs = 1.0f / sqrtf(warp_sum(ss) / static_cast<float>(n) + eps);
  for (int64_t j = lane * W; j < n; j += kWarp * W) {
    float wv[W], bv[W];
    load_w_as_f32<W>(x, r0 + j, xdt, v);
    load_w_as_f32<W>(w, j, kF32, wv);
    load_w_as_f32<W>(b, j, kF32, bv);
#pragma unroll
    for (int k = 0; k < W; ++k) v[k] = (v[k] - mu) * rs * wv[k] + bv[k];
    store_w_from_f32<W>(y, r0 + j, ydt, v);
  }
  if (lane == 0) {
    mean[row] = mu;
    rstd[row] = rs;
  }
}

int64_t rows_per_chunk(int64_t rows) {
  const int64_t r = (rows + 1023) / 1024;  // at most 1024 chunks: enough blocks to fill the GPU
  return r < 16 ? 16 : r;
}

// dx may alias dy: each element of dy is read before the same thread overwrites it.
__global__ void layernorm_backward_partial_kernel(void* dx, int dxdt, float* __restrict__ partial, const void* dy,
                                                  int dydt, const void* __restrict__ x, int xdt,
                                                  const float* __restrict__ w,
                                                  const float* __restrict__ mean, const float* __restrict__ rstd,
                                                  int64_t rows, int64_t n, int64_t chunk_rows) {
  __shared__ float sh[kWarp];
  float* pdw = partial + static_cast<int64_t>(blockIdx.x) * 2 * n;
  float* pdb = pdw + n;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    pdw[j] = 0.0f;
    pdb[j] = 0.0f;
  }
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * chunk_rows;
  const int64_t r1 = r0 + chunk_rows < rows ? r0 + chunk_rows : rows;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t rn = r * n;
    const float mu = mean[r], rs = rstd[r];
    float sg = 0.0f, sgx = 0.0f;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      const float g = load_as_f32(dy, rn + j, dydt) * w[j];
      sg += g;
      sgx += g * (load_as_f32(x, rn + j, xdt) - mu) * rs;
    }
    sg = block_sum(sg, sh);
    sgx = block_sum(sgx, sh);
    const float mg = sg / static_cast<float>(n), mgx = sgx / static_cast<float>(n);
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      const float xhat = (load_as_f32(x, rn + j, xdt) - mu) * rs;
      const float d = load_as_f32(dy, rn + j, dydt);
      pdw[j] = __fmaf_rn(d, xhat, pdw[j]);  // explicit FMA: the vector kernel's sums, bitwise
      pdb[j] += d;
      store_from_f32(dx, rn + j, dxdt, rs * (d * w[j] - mg - xhat * mgx));
    }
  }
}

// Vector backward: n <= 8 * 512. The launch bound keeps the registers (w, dx, the
// dweight/dbias partials: ~70 unbounded) within what 512 threads per block may use.
constexpr int kMaxVecThreads = 512;

// dx may alias dy: each element of dy is read before the same thread overwrites it.
__global__ void __launch_bounds__(kMaxVecThreads)
    layernorm_backward_vec_kernel(void* dx, int dxdt, float* __restrict__ partial, const void* dy, int dydt,
                                  const void* __restrict__ x, int xdt, const float* __restrict__ w,
                                  const float* __restrict__ mean, const float* __restrict__ rstd, int64_t rows,
                                  int64_t n, int64_t chunk_rows) {
  __shared__ float2 sh[kWarp];
  const int64_t j = static_cast<int64_t>(threadIdx.x) * kVec;
  const bool owner = j < n;  // threads past n (blockDim rounded up to a warp) only join the reductions
  float wv[kVec], adw[kVec] = {}, adb[kVec] = {};
  if (owner) load_vec_as_f32(w, j, kF32, wv);
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * chunk_rows;
  const int64_t r1 = r0 + chunk_rows < rows ? r0 + chunk_rows : rows;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t rn = r * n;
    const float mu = mean[r], rs = rstd[r];
    float d[kVec], xv[kVec];
    float sg = 0.0f, sgx = 0.0f;
    if (owner) {
      load_vec_as_f32(dy, rn + j, dydt, d);
      load_vec_as_f32(x, rn + j, xdt, xv);
#pragma unroll
      for (int k = 0; k < kVec; ++k) {
        const float g = d[k] * wv[k];
        sg += g;
        sgx += g * (xv[k] - mu) * rs;
      }
    }
    block_sum2(sg, sgx, sh);
    if (!owner) continue;
    const float mg = sg / static_cast<float>(n), mgx = sgx / static_cast<float>(n);
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      const float xhat = (xv[k] - mu) * rs;
      adw[k] = __fmaf_rn(d[k], xhat, adw[k]);
      adb[k] += d[k];
      xv[k] = rs * (d[k] * wv[k] - mg - xhat * mgx);  // dx
    }
    store_vec_from_f32(dx, rn + j, dxdt, xv);
  }
  if (!owner) return;
  float* pdw = partial + static_cast<int64_t>(blockIdx.x) * 2 * n;
  store_vec_from_f32(pdw, j, kF32, adw);
  store_vec_from_f32(pdw + n, j, kF32, adb);
}

}  // namespace

int layernorm_forward(void* y, int y_dtype, float* mean, float* rstd, const void* x, int x_dtype, const float* w,
                      const float* b, int64_t rows, int64_t n, float eps, void* stream) {
  if (rows == 0 || n == 0) return 0;
  const unsigned blocks = static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock);
  auto s = static_cast<cudaStream_t>(stream);
  if (n % kVec == 0 && aligned16(y) && aligned16(x) && aligned16(w) && aligned16(b)) {
    layernorm_forward_kernel<kVec><<<blocks, kRowsPerBlock * kWarp, 0, s>>>(y, y_dtype, mean, rstd, x, x_dtype, w,
                                                                            b, rows, n, eps);
  } else {
    layernorm_forward_kernel<1><<<blocks, kRowsPerBlock * kWarp, 0, s>>>(y, y_dtype, mean, rstd, x, x_dtype, w, b,
                                                                         rows, n, eps);
  }
  return static_cast<int>(cudaGetLastError());
}

int64_t layernorm_backward_chunks(int64_t rows) {
  return rows == 0 ? 0 : (rows + rows_per_chunk(rows) - 1) / rows_per_chunk(rows);
}

int layernorm_backward(void* dx, int dx_dtype, void* dw, int dw_dtype, void* db, int db_dtype, const void* dy,
                       int dy_dtype, const void* x, int x_dtype, const float* w, const float* mean, const float* rstd,
                       int64_t rows, int64_t n, float* partial, void* stream) {
  if (rows == 0 || n == 0) return 0;
  auto s = static_cast<cudaStream_t>(stream);
  const int64_t chunks = layernorm_backward_chunks(rows);
  const unsigned grid = static_cast<unsigned>(chunks);
  if (n % kVec == 0 && n <= kVec * kMaxVecThreads && aligned16(dx) && aligned16(dy) && aligned16(x) &&
      aligned16(w) && aligned16(partial)) {
    const int threads = static_cast<int>((n / kVec + kWarp - 1) / kWarp * kWarp);
    layernorm_backward_vec_kernel<<<grid, threads, 0, s>>>(dx, dx_dtype, partial, dy, dy_dtype, x, x_dtype, w, mean,
                                                           rstd, rows, n, rows_per_chunk(rows));
  } else {
    layernorm_backward_partial_kernel<<<grid, 256, 0, s>>>(dx, dx_dtype, partial, dy, dy_dtype, x, x_dtype, w, mean,
                                                           rstd, rows, n, rows_per_chunk(rows));
  }
  int e = static_cast<int>(cudaGetLastError());
  if (e != 0) return e;
  e = add_chunk_sums(dw, dw_dtype, partial, chunks, 2 * n, n, stream);
  if (e != 0) return e;
  return add_chunk_sums(db, db_dtype, partial + n, chunks, 2 * n, n, stream);
}

}  // namespace pp3d::kernels
