// Softmax cross-entropy over a vocabulary slice (fp32 logits [N, V_local], i32 targets [N]).
// Columns [0, valid) are global ids [vocab_start, vocab_start + valid); the rest is padding.
//   stats, per row r:  local_max = max_{j<valid} l_rj  (-inf when valid == 0)
//                      local_sumexp = sum_{j<valid} exp(l_rj - local_max)   (0 when valid == 0)
//                      target_logit = l_r,(t_r - vocab_start) if that column is in [0, valid), else 0
//   backward:          dlogits_rj = weight * exp(l_rj - gmax_r) / gsum_r - weight * [j == t_r - vocab_start]
//                      for j < valid, 0 for padding (overwritten; dlogits may alias logits).
// One thread block per row; the row is streamed twice (max, then sum of exps), never
// materialising probabilities; block reductions use a fixed tree (deterministic).
#include "common.cuh"
#include "launchers.h"

namespace pp3d::kernels {

namespace {

constexpr int kThreads = 256;

__global__ void xent_stats_kernel(float* local_max, float* local_sumexp, float* target_logit, const float* logits,
                                  const int32_t* targets, int64_t vl, int64_t vocab_start, int64_t valid) {
  __shared__ float sh[kWarp];
  const int64_t r = blockIdx.x;
  const float* row = logits + r * vl;
  float mx = __int_as_float(0xff800000);
  for (int64_t j = threadIdx.x; j < valid; j += blockDim.x) mx = fmaxf(mx, row[j]);
  mx = block_max(mx, sh);
  float s = 0.0f;
  if (valid > 0)
    for (int64_t j = threadIdx.x; j < valid; j += blockDim.x) s += expf(row[j] - mx);
  s = block_sum(s, sh);
  if (threadIdx.x == 0) {
    const int64_t t = static_cast<int64_t>(targets[r]) - vocab_start;
    target_logit[r] = (t >= 0 && t < valid) ? row[t] : 0.0f;
    local_max[r] = mx;
    local_sumexp[r] = s;
  }
}

__global__ void xent_backward_kernel(float* dlogits, const float* logits, const int32_t* targets, const float* gmax,
                                     const float* gsum, int64_t vl, int64_t vocab_start, int64_t valid,
                                     float weight) {
  const int64_t r = blockIdx.x;
  const float* row = logits + r * vl;
  float* drow = dlogits + r * vl;
  const float mx = gmax[r], w = weight / gsum[r];
  const int64_t t = static_cast<int64_t>(targets[r]) - vocab_start;
  for (int64_t j = threadIdx.x; j < vl; j += blockDim.x) {
    float d = 0.0f;
    if (j < valid) {
      d = expf(row[j] - mx) * w;
      if (j == t) d -= weight;
    }
    drow[j] = d;
  }
}

}  // namespace

int xent_stats(float* local_max, float* local_sumexp, float* target_logit, const float* logits,
               const int32_t* targets, int64_t n, int64_t vl, int64_t vocab_start, int64_t valid, void* stream) {
  if (n == 0) return 0;
  xent_stats_kernel<<<static_cast<unsigned>(n), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      local_max, local_sumexp, target_logit, logits, targets, vl, vocab_start, valid);
  return static_cast<int>(cudaGetLastError());
}

int xent_backward(float* dlogits, const float* logits, const int32_t* targets, const float* gmax, const float* gsum,
                  int64_t n, int64_t vl, int64_t vocab_start, int64_t valid, float weight, void* stream) {
  if (n == 0 || vl == 0) return 0;
  xent_backward_kernel<<<static_cast<unsigned>(n), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      dlogits, logits, targets, gmax, gsum, vl, vocab_start, valid, weight);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace pp3d::kernels
