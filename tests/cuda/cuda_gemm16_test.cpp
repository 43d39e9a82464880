// GPU: Backend::gemm16 (cuBLASLt, 16-bit A and B, f32 accumulation) against the
// CPU backend's emulation (the f32 GEMM of the rounded operands), for bf16 and
// f16, the three Linear-layer GEMM shapes (y = x W^T, dx = dy W, dW += dy^T x
// into an f32 or 16-bit gradient), odd sizes (cuBLASLt may have no 16-bit
// algorithm for odd leading dimensions: the f32 fallback must agree too),
// a bitwise repeat, and a throughput floor that only tensor cores reach.
// Then one bf16 GPT step (--bf16 --activation-dtype param --compute-dtype param)
// on the GPU against the same step on the CPU backend. Exits 77 without a GPU.
#include <cuda_runtime.h>

#include <chrono>
#include <cmath>
#include <vector>

#include "cuda_test_util.h"
#include "pp3d/model/gpt.h"

using namespace pp3d;
using namespace pp3d::cudatest;

namespace {

// One GEMM of a Linear layer: a is an f32 activation (rounded inside gemm16), b the 16-bit weight.
void gemm16_case(Ctx& c, DType dt, bool ta, bool tb, int64_t m, int64_t n, int64_t k, float beta, DType dc,
                 uint32_t seed) {
  const Tensor a = rand_host({m * k}, seed);
  const Tensor b = rand_host({k * n}, seed + 1, dt);
  Tensor c_cpu = rand_host({m * n}, seed + 2, dc);
  Tensor ad = to_gpu(a), bd = to_gpu(b), c_gpu = to_gpu(c_cpu);
  c.cpu->gemm16(dt, ta, tb, m, n, k, 1.0f, a, b, beta, c_cpu);
  c.gpu->gemm16(dt, ta, tb, m, n, k, 1.0f, ad, bd, beta, c_gpu);
  Tensor c_again = to_gpu(rand_host({m * n}, seed + 2, dc));
  c.gpu->gemm16(dt, ta, tb, m, n, k, 1.0f, ad, bd, beta, c_again);
  c.gpu->synchronize();
  std::string what = tag("gemm16", {m, n, k}) + " " + std::string(dtype_name(dt)) + (ta ? " ta" : "") +
                     (tb ? " tb" : "") + " -> " + std::string(dtype_name(dc));
  // Same rounded operands on both sides: only the f32 summation order differs.
  expect_close(c_gpu, c_cpu, tol_for(dc, {1e-5, 1e-5}), what);
  expect_bitwise(c_again, c_gpu, what + " repeat");
}

void test_gemm16(Ctx& c) {
  const int64_t shapes[][3] = {{1, 1, 1}, {7, 13, 257}, {64, 96, 128}, {256, 768, 768}, {129, 3072, 768}};
  uint32_t seed = 500;
  for (DType dt : {DType::BF16, DType::F16})
    for (auto& s : shapes) {
      const int64_t rows = s[0], out = s[1], in = s[2];
      gemm16_case(c, dt, false, true, rows, out, in, 0.0f, DType::F32, seed += 3);  // y = x W^T
      gemm16_case(c, dt, false, true, rows, out, in, 0.0f, dt, seed += 3);          // 16-bit y
      gemm16_case(c, dt, false, false, rows, in, out, 0.0f, DType::F32, seed += 3);  // dx = dy W
      gemm16_case(c, dt, true, false, out, in, rows, 1.0f, DType::F32, seed += 3);   // dW += dy^T x (main_grad)
      gemm16_case(c, dt, true, false, out, in, rows, 1.0f, dt, seed += 3);           // 16-bit gradient
    }
}

// 4096^3 bf16: tensor cores reach several hundred TFLOP/s on an H100/H200; the
// f32 CUDA-core path (the pre-issue-22 fallback) is capped near 60.
void test_gemm16_throughput(Ctx& c) {
  const int64_t n = 4096;
  Tensor a = to_gpu(rand_host({n, n}, 1, DType::BF16)), b = to_gpu(rand_host({n, n}, 2, DType::BF16));
  Tensor out = to_gpu(Tensor::zeros({n, n}, DType::BF16));
  for (int i = 0; i < 3; ++i) c.gpu->gemm16(DType::BF16, false, true, n, n, n, 1.0f, a, b, 0.0f, out);
  c.gpu->synchronize();
  const int iters = 20;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) c.gpu->gemm16(DType::BF16, false, true, n, n, n, 1.0f, a, b, 0.0f, out);
  c.gpu->synchronize();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double tflops = 2.0 * n * n * n * iters / s / 1e12;
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  const double floor = prop.major >= 9 ? 200.0 : 0.0;  // enforced on Hopper only
  std::printf("%s gemm16 bf16 4096^3: %.1f TFLOP/s (sm_%d%d, floor %.0f)\n", floor > 0 && tflops < floor ? "FAIL" : "ok  ",
              tflops, prop.major, prop.minor, floor);
  if (floor > 0 && tflops < floor) ++failures();
}

// One forward + backward of a small bf16 GPT, compute dtype bf16, on both backends.
void test_gpt_bf16_step(Ctx& c) {
  GptConfig cfg;
  cfg.vocab_size = 61;
  cfg.padded_vocab_size = 64;
  cfg.max_seq_len = 32;
  cfg.num_layers = 2;
  cfg.num_heads = 4;
  cfg.hidden_size = 64;
  GptOptions opts;
  opts.seed = 7;
  opts.param_dtype = opts.activation_dtype = opts.compute_dtype = DType::BF16;
  Gpt cpu_model(cfg, *c.cpu, {}, opts);
  Gpt gpu_model(cfg, *c.gpu, {}, opts);
  const int64_t B = 4, T = 32;
  std::vector<int32_t> ids, tgt;
  for (int64_t i = 0; i < B * T; ++i) {
    ids.push_back(static_cast<int32_t>((i * 7 + 3) % cfg.vocab_size));
    tgt.push_back(static_cast<int32_t>((i * 11 + 5) % cfg.vocab_size));
  }
  const Tensor tids = Tensor::from_vector_i32({B, T}, ids), ttgt = Tensor::from_vector_i32({B, T}, tgt);
  const float l_cpu = cpu_model.train_step_forward_backward(tids, ttgt);
  const float l_gpu = gpu_model.train_step_forward_backward(tids, ttgt);
  const double rel = std::fabs(l_gpu - l_cpu) / std::fabs(l_cpu);
  std::printf("%s gpt bf16 step: loss gpu %.6f cpu %.6f rel %.2e (bound 1e-3)\n", rel <= 1e-3 ? "ok  " : "FAIL",
              l_gpu, l_cpu, rel);
  if (!(rel <= 1e-3)) ++failures();
  const auto pc = cpu_model.parameters(), pg = gpu_model.parameters();
  for (std::size_t i = 0; i < pc.size(); ++i) {
    const auto gc = pc[i]->grad.to_vector(), gg = to_host(pg[i]->grad);
    double num = 0, den = 0;
    for (std::size_t j = 0; j < gc.size(); ++j) {
      num += (static_cast<double>(gg[j]) - gc[j]) * (static_cast<double>(gg[j]) - gc[j]);
      den += static_cast<double>(gc[j]) * gc[j];
    }
    const double r = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
    // Both sides round the same activations to bf16; a flipped rounding (f32 summation
    // order) moves a gradient by ~2^-8 locally: 2e-2 relative L2 over a tensor.
    if (!(r <= 2e-2)) {
      std::printf("FAIL gpt bf16 grad %s rel L2 %.3e (bound 2e-2)\n", pc[i]->name.c_str(), r);
      ++failures();
    }
  }
  std::printf("done gpt bf16 step: %zu gradients compared\n", pc.size());
}

}  // namespace

int main() {
  if (skip_without_gpu()) return 77;
  Ctx c;
  std::printf("backend %s\n", c.gpu->name().c_str());
  test_gemm16(c);
  test_gemm16_throughput(c);
  test_gpt_bf16_step(c);
  return finish();
}
