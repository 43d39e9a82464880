// Shared device helpers for kernels/*.cu: warp and block reductions with a
// fixed reduction tree (so results are deterministic run to run), dtype
// conversions bit-identical to pp3d::f32_to_bf16 / f32_to_f16 (round to nearest
// even, same NaN encodings), typed element load/store through f32, 128-bit vector
// load/store of 8 elements (Packed, llm.c's x128), 16-byte alignment tests and
// launch helpers. Device-only code; no fmt/spdlog here.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace pp3d::kernels {

// dtype codes passed from host launchers (same order as pp3d::DType).
enum DtypeCode : int { kF32 = 0, kBF16 = 1, kF16 = 2, kI32 = 3 };

constexpr int kWarp = 32;

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

inline unsigned grid_for(int64_t work, int threads, int64_t cap = int64_t{1} << 30) {
  int64_t b = (work + threads - 1) / threads;
  if (b < 1) b = 1;
  if (b > cap) b = cap;
  return static_cast<unsigned>(b);
}

// ---- reductions (fixed butterfly order) ---------------------------------------
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Block-wide sum; every thread gets the result. `shared` holds >= 32 T.
// blockDim.x must be a multiple of 32. Contains __syncthreads (call from all threads).
template <typename T>
__device__ __forceinline__ T block_sum(T v, T* shared) {
  const int lane = threadIdx.x % kWarp, wid = threadIdx.x / kWarp, nw = blockDim.x / kWarp;
  v = warp_sum(v);
  __syncthreads();  // `shared` may still be read by a previous call
  if (lane == 0) shared[wid] = v;
  __syncthreads();
  v = lane < nw ? shared[lane] : T(0);
  return warp_sum(v);
}

// Two block-wide sums with one pair of barriers (same rules as block_sum).
__device__ __forceinline__ void block_sum2(float& a, float& b, float2* shared) {
  const int lane = threadIdx.x % kWarp, wid = threadIdx.x / kWarp, nw = blockDim.x / kWarp;
  a = warp_sum(a);
  b = warp_sum(b);
  __syncthreads();
  if (lane == 0) shared[wid] = make_float2(a, b);
  __syncthreads();
  const float2 p = lane < nw ? shared[lane] : make_float2(0.0f, 0.0f);
  a = warp_sum(p.x);
  b = warp_sum(p.y);
}

__device__ __forceinline__ float block_max(float v, float* shared) {
  const int lane = threadIdx.x % kWarp, wid = threadIdx.x / kWarp, nw = blockDim.x / kWarp;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) shared[wid] = v;
  __syncthreads();
  v = lane < nw ? shared[lane] : __int_as_float(0xff800000);  // -inf
  return warp_max(v);
}

// ---- conversions: ports of pp3d::f32_to_bf16 / f32_to_f16 / f16_to_f32 ------------
__device__ __forceinline__ uint16_t f32_to_bf16_bits(float f) {
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
__device__ __forceinline__ float bf16_bits_to_f32(uint16_t h) {
  return __uint_as_float(static_cast<uint32_t>(h) << 16);
}

__device__ __forceinline__ uint16_t f32_to_f16_bits(float f) {
  const uint32_t x = __float_as_uint(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t absx = x & 0x7fffffffu;
  if (absx >= 0x7f800000u) return static_cast<uint16_t>(sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u : 0u));
  if (absx >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);
  if (absx < 0x38800000u) {
    const float scaled = __fmul_rn(__uint_as_float(absx), 16777216.0f);  // exact: power of two
    uint32_t m = static_cast<uint32_t>(scaled);
    const float rem = __fsub_rn(scaled, static_cast<float>(m));
    if (rem > 0.5f || (rem == 0.5f && (m & 1u))) ++m;
    return static_cast<uint16_t>(sign | m);
  }
  const uint32_t mant = absx & 0x7fffffu;
  const uint32_t e = (absx >> 23) - 127 + 15;
  uint32_t h = (e << 10) | (mant >> 13);
  const uint32_t rest = mant & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

__device__ __forceinline__ float f16_bits_to_f32(uint16_t h) {
  const uint32_t sign = (static_cast<uint32_t>(h) & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (e == 0) {
    const float v = __fmul_rn(static_cast<float>(mant), 1.0f / 16777216.0f);
    return sign ? -v : v;
  }
  if (e == 31) return __uint_as_float(sign | 0x7f800000u | (mant << 13));
  return __uint_as_float(sign | ((e - 15 + 127) << 23) | (mant << 13));
}

// Element i of a float array of dtype `dt` (kF32/kBF16/kF16) as f32.
__device__ __forceinline__ float load_as_f32(const void* p, int64_t i, int dt) {
  if (dt == kF32) return static_cast<const float*>(p)[i];
  const uint16_t h = static_cast<const uint16_t*>(p)[i];
  return dt == kBF16 ? bf16_bits_to_f32(h) : f16_bits_to_f32(h);
}
__device__ __forceinline__ void store_from_f32(void* p, int64_t i, int dt, float v) {
  if (dt == kF32) {
    static_cast<float*>(p)[i] = v;
  } else {
    static_cast<uint16_t*>(p)[i] = dt == kBF16 ? f32_to_bf16_bits(v) : f32_to_f16_bits(v);
  }
}

// ---- 128-bit vector access ---------------------------------------------------------
// Packed<T, N>: N elements moved as one aligned 16-byte word (llm.c's x128).
template <typename T, int N>
struct alignas(16) Packed {
  static_assert(sizeof(T) * N == 16, "one 128-bit word");
  T v[N];
};

// Elements per vector access: one 128-bit word of bf16/f16, two of f32. A vector
// path needs the element offset to be a multiple of kVec and the base pointer
// 16-byte aligned (vec_ok); the math per element is the scalar path's, so the
// vector and scalar paths give bitwise equal elements.
constexpr int kVec = 8;

inline bool vec_ok(const void* p) { return p == nullptr || aligned16(p); }

// Elements [i, i + kVec) of a dtype-`dt` array as f32 (i % kVec == 0, p 16-byte aligned).
__device__ __forceinline__ void load_vec_as_f32(const void* p, int64_t i, int dt, float (&v)[kVec]) {
  if (dt == kF32) {
    const auto* q = reinterpret_cast<const Packed<float, 4>*>(static_cast<const float*>(p) + i);
    const Packed<float, 4> a = q[0], b = q[1];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      v[k] = a.v[k];
      v[k + 4] = b.v[k];
    }
    return;
  }
  const Packed<uint16_t, 8> h = *reinterpret_cast<const Packed<uint16_t, 8>*>(static_cast<const uint16_t*>(p) + i);
#pragma unroll
  for (int k = 0; k < kVec; ++k) v[k] = dt == kBF16 ? bf16_bits_to_f32(h.v[k]) : f16_bits_to_f32(h.v[k]);
}

// Writes v into elements [i, i + kVec), each rounded once to `dt` (same conditions).
__device__ __forceinline__ void store_vec_from_f32(void* p, int64_t i, int dt, const float (&v)[kVec]) {
  if (dt == kF32) {
    Packed<float, 4> a, b;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      a.v[k] = v[k];
      b.v[k] = v[k + 4];
    }
    auto* q = reinterpret_cast<Packed<float, 4>*>(static_cast<float*>(p) + i);
    q[0] = a;
    q[1] = b;
    return;
  }
  Packed<uint16_t, 8> h;
#pragma unroll
  for (int k = 0; k < kVec; ++k) h.v[k] = dt == kBF16 ? f32_to_bf16_bits(v[k]) : f32_to_f16_bits(v[k]);
  *reinterpret_cast<Packed<uint16_t, 8>*>(static_cast<uint16_t*>(p) + i) = h;
}

// W = 1 or kVec elements [i, i + W): a scalar access, or a vector one (its conditions).
template <int W>
__device__ __forceinline__ void load_w_as_f32(const void* p, int64_t i, int dt, float (&v)[W]) {
  if constexpr (W == 1) {
    v[0] = load_as_f32(p, i, dt);
  } else {
    load_vec_as_f32(p, i, dt, v);
  }
}
template <int W>
__device__ __forceinline__ void store_w_from_f32(void* p, int64_t i, int dt, const float (&v)[W]) {
  if constexpr (W == 1) {
    store_from_f32(p, i, dt, v[0]);
  } else {
    store_vec_from_f32(p, i, dt, v);
  }
}

// ---- elementwise map over typed arrays -------------------------------------------------
// out[i] = f(a[i], b[i]) (b may be nullptr: f then gets 0), each array in its own dtype,
// f32 math, out rounded once. With `vec` each thread does kVec consecutive elements
// through 128-bit accesses (the last thread the < kVec tail element by element);
// otherwise one element per thread. out may alias a or b (each element is read, then
// written, by one thread). F is a functor with `__device__ float operator()(float, float)`.
template <typename F>
__global__ void map_kernel(F f, void* out, int odt, const void* a, int adt, const void* b, int bdt, int64_t n,
                           bool vec) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  int64_t i = t, end = t + 1 < n ? t + 1 : n;
  if (vec) {
    i = t * kVec;
    if (i + kVec <= n) {
      float va[kVec], vb[kVec] = {};
      load_vec_as_f32(a, i, adt, va);
      if (b != nullptr) load_vec_as_f32(b, i, bdt, vb);
#pragma unroll
      for (int k = 0; k < kVec; ++k) va[k] = f(va[k], vb[k]);
      store_vec_from_f32(out, i, odt, va);
      return;
    }
    end = n;  // the tail
  }
  for (; i < end; ++i)
    store_from_f32(out, i, odt, f(load_as_f32(a, i, adt), b != nullptr ? load_as_f32(b, i, bdt) : 0.0f));
}

// Host: launches map_kernel on `stream`, vectorised when every pointer is 16-byte aligned.
template <typename F>
int map_typed(F f, void* out, int odt, const void* a, int adt, const void* b, int bdt, int64_t n,
              cudaStream_t stream) {
  if (n == 0) return 0;
  const bool vec = vec_ok(out) && vec_ok(a) && vec_ok(b);
  const int threads = 256;
  map_kernel<<<grid_for(vec ? (n + kVec - 1) / kVec : n, threads), threads, 0, stream>>>(f, out, odt, a, adt, b, bdt,
                                                                                         n, vec);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace pp3d::kernels
