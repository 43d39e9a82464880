// Embedding lookup and its gradient (fp32 table, i32 ids), vocab-parallel aware.
// table [V_local, C] holds the rows of ids [id_offset, id_offset + V_local).
//   forward:  out[i, :] = (accumulate ? out[i, :] : 0) + (id_i in range ? table[id_i - id_offset, :] : 0)
//   backward: dtable[id_i - id_offset, :] += dout[i, :] for in-range ids   (parameter gradient: ACCUMULATES)
// Backward is deterministic and atomic-free, summing each table row's
// contributions in index order i = 0..N-1 (the CPU order): thread (column j,
// row-partition p) scans all ids and handles only those whose table row r
// satisfies r % P == p, so every dtable element has exactly one owner. P is
// fixed (kPartitions), independent of the device.
#include "common.cuh"
#include "launchers.h"

namespace pp3d::kernels {

namespace {

constexpr int kPartitions = 64;

__global__ void embedding_forward_kernel(float* out, const int32_t* ids, const float* table, int64_t n, int64_t v,
                                         int64_t c, int64_t id_offset, bool accumulate) {
  const int64_t i = blockIdx.x;  // one block per token, threads over channels
  const int64_t r = static_cast<int64_t>(ids[i]) - id_offset;
  const bool in = r >= 0 && r < v;
  float* dst = out + i * c;
  const float* src = table + (in ? r : 0) * c;
  for (int64_t j = threadIdx.x; j < c; j += blockDim.x) {
    const float val = in ? src[j] : 0.0f;
    dst[j] = accumulate ? dst[j] + val : val;
  }
}

__global__ void embedding_backward_kernel(float* dtable, const int32_t* ids, const float* dout, int64_t n, int64_t v,
                                          int64_t c, int64_t id_offset) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t part = blockIdx.y;
  if (j >= c) return;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t r = static_cast<int64_t>(ids[i]) - id_offset;  // same address in the warp: broadcast
    if (r < 0 || r >= v || r % kPartitions != part) continue;
    dtable[r * c + j] += dout[i * c + j];
  }
}

}  // namespace

int embedding_forward(float* out, const int32_t* ids, const float* table, int64_t n, int64_t v, int64_t c,
                      int64_t id_offset, bool accumulate, void* stream) {
  if (n == 0 || c == 0) return 0;
  const int threads = c >= 256 ? 256 : 32 * static_cast<int>((c + 31) / 32);
  embedding_forward_kernel<<<static_cast<unsigned>(n), threads, 0, static_cast<cudaStream_t>(stream)>>>(
      out, ids, table, n, v, c, id_offset, accumulate);
  return static_cast<int>(cudaGetLastError());
}

int embedding_backward(float* dtable, const int32_t* ids, const float* dout, int64_t n, int64_t v, int64_t c,
                       int64_t id_offset, void* stream) {
  if (n == 0 || c == 0 || v == 0) return 0;
  const dim3 grid(grid_for(c, 128), kPartitions);
  embedding_backward_kernel<<<grid, 128, 0, static_cast<cudaStream_t>(stream)>>>(dtable, ids, dout, n, v, c,
                                                                                id_offset);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace pp3d::kernels
