// Causal self-attention, forward and backward, flash-style (fp32, head_dim D <= 128).
// Layout: qkv [B, T, 3, H, D], out/dout [B, T, H, D], lse [B, H, T], dqkv like qkv.
// The T x T score matrix never reaches global memory.
//
// Forward, one thread block per (query tile of 32, head, batch), 4 warps; warp w owns
// queries q0 + 4*i + w (i < 8; interleaved so causal work is balanced). Per key tile
// of 32 keys (staged in shared memory, keys <= the tile's last query), lane j scores
// key k0+j: s = scale * q.k (masked: key > query), then the online softmax
//   m' = max(m, max_j s_j); l = l*exp(m-m') + sum_j exp(s_j-m'); o = o*exp(m-m') + sum_j p_j v_j
// (lane holds o[d] for d = lane + 32c). End: out = o/l, lse = m + log(l).
// Backward recomputes P = exp(scale*q.k - lse) and, with Di = sum_d dO*O (pass 0):
//   dS = P * (dO.v - Di);  dQ = scale * dS K  (overwritten);  dK = scale * dS^T Q, dV = P^T dO (overwritten)
// Deterministic without atomics: dQ by one block per query tile looping over key tiles
// (same shape as forward); dK/dV by one block per key tile looping over query tiles
// (warp w owns keys k0 + 4*j + w; lane i scores query q0+i). Fixed orders throughout.
// Shared-memory rows read by "lane = row" are padded to D+1 floats (no bank conflicts).
// p_dtype (kBF16/kF16; kF32 = none): the probabilities are rounded to that dtype where a
// 16-bit flash kernel (cuDNN SDPA) feeds them to a tensor-core GEMM: forward P (relative to
// the running max) before P V, backward P before dV and dS before dQ, dK; the sums l, Di
// and every accumulator stay f32 (CpuBackend's 16-bit attention, lib/backend/cpu/cpu_attention.cpp).
#include "common.cuh"
#include "launchers.h"

namespace pp3d::kernels {

namespace {

constexpr int kTile = 32;  // queries per query tile == keys per key tile
constexpr int kWarps = 4;
constexpr int kPer = kTile / kWarps;  // rows owned per warp
constexpr unsigned kFull = 0xffffffffu;

__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }

// v rounded to dtype dt (kF32: v itself).
__device__ __forceinline__ float round_p(float v, int dt) {
  if (dt == kF32) return v;
  return dt == kBF16 ? bf16_bits_to_f32(f32_to_bf16_bits(v)) : f16_bits_to_f32(f32_to_f16_bits(v));
}

struct Dims {
  int T, H, D;
  int pdt = kF32;  // p_dtype
  __host__ __device__ int64_t row() const { return 3LL * H * D; }  // stride between tokens in qkv
};

// Loads `kTile` rows (tokens t0..t0+31) of one (b, part, h) slice into smem rows of `ld` floats; rows past T are 0.
__device__ __forceinline__ void load_tile(float* dst, int ld, const float* base, int64_t stride, int t0, int T, int D) {
  for (int idx = threadIdx.x; idx < kTile * D; idx += blockDim.x) {
    const int i = idx / D, d = idx % D, t = t0 + i;
    dst[i * ld + d] = t < T ? base[static_cast<int64_t>(t) * stride + d] : 0.0f;
  }
}

template <int DC>
__global__ void attention_forward_kernel(float* out, float* lse, const float* qkv, Dims dm, float scale) {
  extern __shared__ float sm[];
  const int T = dm.T, H = dm.H, D = dm.D, Dp = D + 1;
  float* sQ = sm;               // [32][D]  broadcast reads
  float* sK = sQ + kTile * D;   // [32][D+1] lane = key
  float* sV = sK + kTile * Dp;  // [32][D]  lane = d
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int q0 = blockIdx.x * kTile, h = blockIdx.y, b = blockIdx.z;
  const int64_t row = dm.row();
  const float* qbase = qkv + static_cast<int64_t>(b) * T * row + static_cast<int64_t>(h) * D;
  const float* kbase = qbase + static_cast<int64_t>(H) * D;
  const float* vbase = qbase + 2LL * H * D;
  load_tile(sQ, D, qbase, row, q0, T, D);
  float m[kPer], l[kPer], o[kPer][DC];
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    m[i] = neg_inf();
    l[i] = 0.0f;
#pragma unroll
    for (int c = 0; c < DC; ++c) o[i][c] = 0.0f;
  }
  const int q_last = min(T, q0 + kTile) - 1;
  for (int k0 = 0; k0 <= q_last; k0 += kTile) {
    __syncthreads();  // previous tile fully consumed
    load_tile(sK, Dp, kbase, row, k0, T, D);
    load_tile(sV, D, vbase, row, k0, T, D);
    __syncthreads();
#pragma unroll
    for (int ii = 0; ii < kPer; ++ii) {
      const int i = ii * kWarps + warp, t = q0 + i;
      if (t >= T || k0 > t) continue;  // warp-uniform
      const bool valid = k0 + lane <= t;
      float s = neg_inf();
      if (valid) {
        float acc = 0.0f;
        for (int d = 0; d < D; ++d) acc += sQ[i * D + d] * sK[lane * Dp + d];
        s = acc * scale;
      }
      const float m_new = fmaxf(m[ii], warp_max(s));  // finite: key k0 <= t is valid
      const float corr = expf(m[ii] - m_new);
      const float p = valid ? expf(s - m_new) : 0.0f;
      l[ii] = l[ii] * corr + warp_sum(p);
#pragma unroll
      for (int c = 0; c < DC; ++c) o[ii][c] *= corr;
      const int jn = min(kTile, t - k0 + 1);
      const float pr = round_p(p, dm.pdt);
      for (int j = 0; j < jn; ++j) {
        const float pj = __shfl_sync(kFull, pr, j);
#pragma unroll
        for (int c = 0; c < DC; ++c) {
          const int d = lane + c * kWarp;
          if (d < D) o[ii][c] += pj * sV[j * D + d];
        }
      }
      m[ii] = m_new;
    }
  }
#pragma unroll
  for (int ii = 0; ii < kPer; ++ii) {
    const int t = q0 + ii * kWarps + warp;
    if (t >= T) continue;
    float* orow = out + (static_cast<int64_t>(b) * T + t) * H * D + static_cast<int64_t>(h) * D;
    const float inv = 1.0f / l[ii];
#pragma unroll
    for (int c = 0; c < DC; ++c) {
      const int d = lane + c * kWarp;
      if (d < D) orow[d] = o[ii][c] * inv;
    }
    if (lane == 0) lse[(static_cast<int64_t>(b) * H + h) * T + t] = m[ii] + logf(l[ii]);
  }
}

// Di[b, h, t] = sum_d dout * out; one warp per (b, t, h).
__global__ void attention_di_kernel(float* di, const float* dout, const float* out, int64_t rows, int T, int H, int D) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * (blockDim.x / kWarp) + threadIdx.x / kWarp;
  if (r >= rows) return;
  const int lane = threadIdx.x % kWarp;
  const float* a = dout + r * D;
  const float* o = out + r * D;
  float s = 0.0f;
  for (int d = lane; d < D; d += kWarp) s += a[d] * o[d];
  s = warp_sum(s);
  // r = (b*T + t)*H + h  ->  di[(b*H + h)*T + t]
  const int64_t h = r % H, bt = r / H, t = bt % T, b = bt / T;
  if (lane == 0) di[(b * H + h) * T + t] = s;
}

template <int DC>
__global__ void attention_dq_kernel(float* dqkv, const float* dout, const float* qkv, const float* lse, const float* di,
                                    Dims dm, float scale) {
  extern __shared__ float sm[];
  const int T = dm.T, H = dm.H, D = dm.D, Dp = D + 1;
  float* sQ = sm;               // [32][D]   broadcast
  float* sdO = sQ + kTile * D;  // [32][D]   broadcast
  float* sK = sdO + kTile * D;  // [32][D+1] lane = key, and lane = d
  float* sV = sK + kTile * Dp;  // [32][D+1] lane = key
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int q0 = blockIdx.x * kTile, h = blockIdx.y, b = blockIdx.z;
  const int64_t row = dm.row(), orow = static_cast<int64_t>(H) * D;
  const float* qbase = qkv + static_cast<int64_t>(b) * T * row + static_cast<int64_t>(h) * D;
  const float* kbase = qbase + static_cast<int64_t>(H) * D;
  const float* vbase = qbase + 2LL * H * D;
  const float* dobase = dout + static_cast<int64_t>(b) * T * orow + static_cast<int64_t>(h) * D;
  const float* lse_bh = lse + (static_cast<int64_t>(b) * H + h) * T;
  const float* di_bh = di + (static_cast<int64_t>(b) * H + h) * T;
  load_tile(sQ, D, qbase, row, q0, T, D);
  load_tile(sdO, D, dobase, orow, q0, T, D);
  float dq[kPer][DC];
#pragma unroll
  for (int i = 0; i < kPer; ++i)
#pragma unroll
    for (int c = 0; c < DC; ++c) dq[i][c] = 0.0f;
  const int q_last = min(T, q0 + kTile) - 1;
  for (int k0 = 0; k0 <= q_last; k0 += kTile) {
    __syncthreads();
    load_tile(sK, Dp, kbase, row, k0, T, D);
    load_tile(sV, Dp, vbase, row, k0, T, D);
    __syncthreads();
#pragma unroll
    for (int ii = 0; ii < kPer; ++ii) {
      const int i = ii * kWarps + warp, t = q0 + i;
      if (t >= T || k0 > t) continue;
      float ds = 0.0f;
      if (k0 + lane <= t) {
        float s = 0.0f, dp = 0.0f;
        for (int d = 0; d < D; ++d) {
          s += sQ[i * D + d] * sK[lane * Dp + d];
          dp += sdO[i * D + d] * sV[lane * Dp + d];
        }
        const float p = expf(s * scale - lse_bh[t]);
        ds = round_p(p * (dp - di_bh[t]), dm.pdt);
      }
      const int jn = min(kTile, t - k0 + 1);
      for (int j = 0; j < jn; ++j) {
        const float dsj = __shfl_sync(kFull, ds, j);
#pragma unroll
        for (int c = 0; c < DC; ++c) {
          const int d = lane + c * kWarp;
          if (d < D) dq[ii][c] += dsj * sK[j * Dp + d];
        }
      }
    }
  }
#pragma unroll
  for (int ii = 0; ii < kPer; ++ii) {
    const int t = q0 + ii * kWarps + warp;
    if (t >= T) continue;
    float* dst = dqkv + static_cast<int64_t>(b) * T * row + static_cast<int64_t>(t) * row + static_cast<int64_t>(h) * D;
#pragma unroll
    for (int c = 0; c < DC; ++c) {
      const int d = lane + c * kWarp;
      if (d < D) dst[d] = scale * dq[ii][c];
    }
  }
}

template <int DC>
__global__ void attention_dkv_kernel(float* dqkv, const float* dout, const float* qkv, const float* lse,
                                     const float* di, Dims dm, float scale) {
  extern __shared__ float sm[];
  const int T = dm.T, H = dm.H, D = dm.D, Dp = D + 1;
  float* sK = sm;                // [32][D]   broadcast
  float* sV = sK + kTile * D;    // [32][D]   broadcast
  float* sQ = sV + kTile * D;    // [32][D+1] lane = query, and lane = d
  float* sdO = sQ + kTile * Dp;  // [32][D+1]
  float* sL = sdO + kTile * Dp;  // [32] lse of the query tile
  float* sD = sL + kTile;        // [32] Di of the query tile
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int k0 = blockIdx.x * kTile, h = blockIdx.y, b = blockIdx.z;
  const int64_t row = dm.row(), orow = static_cast<int64_t>(H) * D;
  const float* qbase = qkv + static_cast<int64_t>(b) * T * row + static_cast<int64_t>(h) * D;
  const float* kbase = qbase + static_cast<int64_t>(H) * D;
  const float* vbase = qbase + 2LL * H * D;
  const float* dobase = dout + static_cast<int64_t>(b) * T * orow + static_cast<int64_t>(h) * D;
  const float* lse_bh = lse + (static_cast<int64_t>(b) * H + h) * T;
  const float* di_bh = di + (static_cast<int64_t>(b) * H + h) * T;
  load_tile(sK, D, kbase, row, k0, T, D);
  load_tile(sV, D, vbase, row, k0, T, D);
  float dk[kPer][DC], dv[kPer][DC];
#pragma unroll
  for (int i = 0; i < kPer; ++i)
#pragma unroll
    for (int c = 0; c < DC; ++c) dk[i][c] = dv[i][c] = 0.0f;
  for (int q0 = k0; q0 < T; q0 += kTile) {  // queries before k0 see none of these keys
    __syncthreads();
    load_tile(sQ, Dp, qbase, row, q0, T, D);
    load_tile(sdO, Dp, dobase, orow, q0, T, D);
    if (threadIdx.x < kTile) {
      const int t = q0 + threadIdx.x;
      sL[threadIdx.x] = t < T ? lse_bh[t] : 0.0f;
      sD[threadIdx.x] = t < T ? di_bh[t] : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int jj = 0; jj < kPer; ++jj) {
      const int j = jj * kWarps + warp, kj = k0 + j;
      if (kj >= T) continue;  // warp-uniform
      const int t = q0 + lane;
      float p = 0.0f, ds = 0.0f;
      if (t < T && kj <= t) {
        float s = 0.0f, dp = 0.0f;
        for (int d = 0; d < D; ++d) {
          s += sQ[lane * Dp + d] * sK[j * D + d];
          dp += sdO[lane * Dp + d] * sV[j * D + d];
        }
        p = expf(s * scale - sL[lane]);
        ds = round_p(p * (dp - sD[lane]), dm.pdt);
        p = round_p(p, dm.pdt);
      }
#pragma unroll 2
      for (int i = 0; i < kTile; ++i) {
        const float pi = __shfl_sync(kFull, p, i), dsi = __shfl_sync(kFull, ds, i);
#pragma unroll
        for (int c = 0; c < DC; ++c) {
          const int d = lane + c * kWarp;
          if (d < D) {
            dv[jj][c] += pi * sdO[i * Dp + d];
            dk[jj][c] += dsi * sQ[i * Dp + d];
          }
        }
      }
    }
  }
#pragma unroll
  for (int jj = 0; jj < kPer; ++jj) {
    const int kj = k0 + jj * kWarps + warp;
    if (kj >= T) continue;
    float* dst =
        dqkv + static_cast<int64_t>(b) * T * row + static_cast<int64_t>(kj) * row + static_cast<int64_t>(h) * D;
#pragma unroll
    for (int c = 0; c < DC; ++c) {
      const int d = lane + c * kWarp;
      if (d < D) {
        dst[static_cast<int64_t>(H) * D + d] = scale * dk[jj][c];
        dst[2LL * H * D + d] = dv[jj][c];
      }
    }
  }
}

template <typename K>
int launch(K kernel, dim3 grid, std::size_t smem, cudaStream_t s, float* a0, const float* a1, const float* a2,
           const float* a3, const float* a4, Dims dm, float scale) {
  cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
  if (e != cudaSuccess) return static_cast<int>(e);
  kernel<<<grid, kWarps * kWarp, smem, s>>>(a0, a1, a2, a3, a4, dm, scale);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace

int attention_forward(float* out, float* lse, const float* qkv, int B, int T, int H, int D, float scale, void* stream,
                      int p_dtype) {
  if (B == 0 || T == 0 || H == 0) return 0;
  if (D < 1 || D > 128) return static_cast<int>(cudaErrorInvalidValue);
  const Dims dm{T, H, D, p_dtype};
  const dim3 grid(static_cast<unsigned>((T + kTile - 1) / kTile), static_cast<unsigned>(H), static_cast<unsigned>(B));
  const std::size_t smem = sizeof(float) * static_cast<std::size_t>(kTile * (3 * D + 1));
  auto s = static_cast<cudaStream_t>(stream);
  auto go = [&](auto kernel) -> int {
    cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (e != cudaSuccess) return static_cast<int>(e);
    kernel<<<grid, kWarps * kWarp, smem, s>>>(out, lse, qkv, dm, scale);
    return static_cast<int>(cudaGetLastError());
  };
  switch ((D + kWarp - 1) / kWarp) {
    case 1:
      return go(attention_forward_kernel<1>);
    case 2:
      return go(attention_forward_kernel<2>);
    case 3:
      return go(attention_forward_kernel<3>);
    default:
      return go(attention_forward_kernel<4>);
  }
}

int attention_backward(float* dqkv, float* di, const float* dout, const float* qkv, const float* out, const float* lse,
                       int B, int T, int H, int D, float scale, void* stream, int p_dtype) {
  if (B == 0 || T == 0 || H == 0) return 0;
  if (D < 1 || D > 128) return static_cast<int>(cudaErrorInvalidValue);
  auto s = static_cast<cudaStream_t>(stream);
  const int64_t rows = static_cast<int64_t>(B) * T * H;
  attention_di_kernel<<<grid_for(rows, 8), 8 * kWarp, 0, s>>>(di, dout, out, rows, T, H, D);
  int e = static_cast<int>(cudaGetLastError());
  if (e != 0) return e;
  const Dims dm{T, H, D, p_dtype};
  const dim3 grid(static_cast<unsigned>((T + kTile - 1) / kTile), static_cast<unsigned>(H), static_cast<unsigned>(B));
  const std::size_t smem = sizeof(float) * static_cast<std::size_t>(kTile * (4 * D + 2) + 2 * kTile);
  const int dc = (D + kWarp - 1) / kWarp;
  switch (dc) {
    case 1:
      e = launch(attention_dq_kernel<1>, grid, smem, s, dqkv, dout, qkv, lse, di, dm, scale);
      break;
    case 2:
      e = launch(attention_dq_kernel<2>, grid, smem, s, dqkv, dout, qkv, lse, di, dm, scale);
      break;
    case 3:
      e = launch(attention_dq_kernel<3>, grid, smem, s, dqkv, dout, qkv, lse, di, dm, scale);
      break;
    default:
      e = launch(attention_dq_kernel<4>, grid, smem, s, dqkv, dout, qkv, lse, di, dm, scale);
      break;
  }
  if (e != 0) return e;
  switch (dc) {
    case 1:
      return launch(attention_dkv_kernel<1>, grid, smem, s, dqkv, dout, qkv, lse, di, dm, scale);
    case 2:
      return launch(attention_dkv_kernel<2>, grid, smem, s, dqkv, dout, qkv, lse, di, dm, scale);
    case 3:
      return launch(attention_dkv_kernel<3>, grid, smem, s, dqkv, dout, qkv, lse, di, dm, scale);
    default:
      return launch(attention_dkv_kernel<4>, grid, smem, s, dqkv, dout, qkv, lse, di, dm, scale);
  }
}

}  // namespace pp3d::kernels
