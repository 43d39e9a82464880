// cuda_ops_bench: CudaBackend throughput at GPT-2 124M training shapes
// (B=8, T=1024 -> 8192 rows, C=768, 4C MLP, vocab 50304, H=12 heads of 64).
// GEMMs report TFLOP/s (2mnk per product) in bf16 (bf16 in/out, f32 accumulate),
// fp32 (true fp32) and fp32 with TF32; attention reports ms and TFLOP/s of the
// causal part (forward 2 * 2BHT^2D/2, backward 2.5x that); LayerNorm, GELU,
// xent, AdamW and the Llama's 16-bit RMSNorm / SwiGLU / RoPE report GB/s of the bytes
// they must move; the Llama's GQA reports fwd+bwd TFLOP/s. The 16-bit rows (GPT's
// --bf16 --compute-dtype param path, kernels' 128-bit vector loads) run at B*T = 16*1024
// rows for C = 768 (124M) and 1024 (350M): LayerNorm forward / backward (x f32 as the
// residual stream is by default, or bf16), GELU forward / backward at 4C, bias_grad of a
// bf16 dy into an f32 dbias, and the f32 <-> bf16 casts, next to a device-to-device copy of
// the same bytes (the card's copy bandwidth, read + write). Timing: 2 warm-up runs, then
// the mean over N runs between CUDA events on the backend's stream.
// Prints a markdown table. Exits 77 without a GPU.
//
// Usage: cuda_ops_bench [--iters N]
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "pp3d/core/rng.h"

using namespace pp3d;

namespace {

int g_iters = 20;

Tensor dev_rand(const Shape& shape, uint64_t key, DType dt = DType::F32, float std = 1.0f) {
  Tensor h = Tensor::empty(shape, DType::F32);
  const int64_t cols = shape.back();
  rng_normal_fill(h, key, 0, 0, cols, 0.0f, std);
  Tensor d = Tensor::empty(shape, dt, Device::cuda(0));
  if (dt == DType::F32) {
    d.copy_from(h);
  } else {
    Tensor h16 = Tensor::empty(shape, dt);
    h16.fill_from(h.to_vector());
    d.copy_from(h16);
  }
  return d;
}

// Mean milliseconds of fn() over g_iters runs on the backend's stream.
double time_ms(CudaBackend& be, const std::function<void()>& fn) {
  fn();
  fn();
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  cudaEventRecord(a, be.stream());
  for (int i = 0; i < g_iters; ++i) fn();
  cudaEventRecord(b, be.stream());
  cudaEventSynchronize(b);
  float ms = 0.0f;
  cudaEventElapsedTime(&ms, a, b);
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return static_cast<double>(ms) / g_iters;
}

void row(const char* op, const std::string& shape, const char* dtype, double ms, double value, const char* unit) {
  std::printf("| %s | %s | %s | %.3f | %.1f %s |\n", op, shape.c_str(), dtype, ms, value, unit);
  std::fflush(stdout);
}

void bench_gemm(CudaBackend& be, const char* name, bool ta, bool tb, int64_t m, int64_t n, int64_t k) {
  struct Mode {
    const char* label;
    DType dt;
    bool tf32;
  };
  for (const Mode& md :
       {Mode{"bf16", DType::BF16, false}, Mode{"fp32", DType::F32, false}, Mode{"fp32+tf32", DType::F32, true}}) {
    Tensor a = dev_rand({ta ? k : m, ta ? m : k}, rng_key(1, "a"), md.dt);
    Tensor b = dev_rand({tb ? n : k, tb ? k : n}, rng_key(1, "b"), md.dt);
    Tensor c = Tensor::empty({m, n}, md.dt, Device::cuda(0));
    be.set_allow_tf32(md.tf32);
    const double ms = time_ms(be, [&] { be.gemm(ta, tb, m, n, k, 1.0f, a, b, 0.0f, c, 1, 0, 0, 0); });
    const std::string shape = std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k) +
                              (ta ? " (A^T)" : "") + (tb ? " (B^T)" : "");
    row(name, shape, md.label, ms, 2.0 * m * n * k / (ms * 1e-3) / 1e12, "TFLOP/s");
  }
  be.set_allow_tf32(false);
}

double gbps(double bytes, double ms) { return bytes / (ms * 1e-3) / 1e9; }

// The 16-bit memory-bound ops at [rows, C] (GELU and the fc bias gradient at [rows, 4C]).
void bench_memops16(CudaBackend& be, int64_t rows, int64_t C) {
  const Device gpu = Device::cuda(0);
  const DType h = DType::BF16;
  const double e = static_cast<double>(rows) * C;  // elements of one [rows, C] tensor
  const std::string shape = std::to_string(rows) + "x" + std::to_string(C);
  const std::string shape4 = std::to_string(rows) + "x" + std::to_string(4 * C);
  Tensor w = dev_rand({C}, rng_key(7, "w")), b = dev_rand({C}, rng_key(7, "b"));
  Tensor mean = Tensor::empty({rows}, DType::F32, gpu), rstd = Tensor::empty({rows}, DType::F32, gpu);
  Tensor dw = Tensor::zeros({C}, DType::F32, gpu), db = Tensor::zeros({C}, DType::F32, gpu);
  Tensor dy = dev_rand({rows, C}, rng_key(7, "dy"), h), y = Tensor::empty({rows, C}, h, gpu);
  for (DType xdt : {DType::F32, h}) {
    const bool f = xdt == DType::F32;
    Tensor x = dev_rand({rows, C}, rng_key(7, "x"), xdt), dx = Tensor::empty({rows, C}, xdt, gpu);
    const double xb = f ? 4.0 : 2.0;
    double ms = time_ms(be, [&] { be.layernorm_forward(x, w, b, y, mean, rstd, 1e-5f); });
    row("layernorm fwd", shape, f ? "x f32 -> y bf16" : "bf16", ms, gbps((xb + 2) * e, ms), "GB/s");
    ms = time_ms(be, [&] { be.layernorm_backward(dy, x, w, mean, rstd, dx, dw, db); });  // reads dy, x; writes dx
    row("layernorm bwd", shape, f ? "dy bf16, x/dx f32" : "bf16", ms, gbps((2 + 2 * xb) * e, ms), "GB/s");
  }
  {
    Tensor x = dev_rand({rows, 4 * C}, rng_key(8, "x"), h), g = dev_rand({rows, 4 * C}, rng_key(8, "dy"), h);
    Tensor out = Tensor::empty({rows, 4 * C}, h, gpu);
    double ms = time_ms(be, [&] { be.copy(x, out); });
    row("copy (D2D reference)", shape4, "bf16", ms, gbps(2.0 * 2 * 4 * e, ms), "GB/s");
    ms = time_ms(be, [&] { be.gelu_forward(x, out); });
    row("gelu fwd", shape4, "bf16", ms, gbps(2.0 * 2 * 4 * e, ms), "GB/s");
    ms = time_ms(be, [&] { be.gelu_backward(x, g, out); });
    row("gelu bwd", shape4, "bf16", ms, gbps(3.0 * 2 * 4 * e, ms), "GB/s");
    Tensor dbias = Tensor::zeros({4 * C}, DType::F32, gpu);
    ms = time_ms(be, [&] { be.bias_grad(g, dbias); });
    row("bias_grad", shape4, "dy bf16 -> f32", ms, gbps(2.0 * 4 * e, ms), "GB/s");
  }
  {
    Tensor x32 = dev_rand({rows, C}, rng_key(9, "x")), x16 = Tensor::empty({rows, C}, h, gpu);
    double ms = time_ms(be, [&] { be.cast(x32, x16); });
    row("cast", shape, "f32 -> bf16", ms, gbps(6.0 * e, ms), "GB/s");
    ms = time_ms(be, [&] { be.cast(x16, x32); });
    row("cast", shape, "bf16 -> f32", ms, gbps(6.0 * e, ms), "GB/s");
  }
}


// The Llama's 16-bit ops (--compute-dtype param) at a Llama-3-8B layer slice: B 4,
// T 2048, C 4096, MLP 14336, 32 query heads / 8 kv heads of 128. GB/s of the bytes
// each must move (RMSNorm reads the f32 residual stream); GQA fwd+bwd TFLOP/s
// (causal: 7 * 2BHqT^2D / 2) next to MHA on the repeat_kv pack (what the 16-bit
// path ran before it read the grouped heads in place).
void bench_llama16(CudaBackend& be) {
  const DType dt = DType::BF16;
  const int64_t B = 4, T = 2048, N = B * T, C = 4096, F = 14336, Hq = 32, Hkv = 8, D = 128;
  auto dev = [](const Shape& s, DType t) { return Tensor::empty(s, t, Device::cuda(0)); };
  {
    Tensor x = dev_rand({N, C}, rng_key(7, "x")), w = dev_rand({C}, rng_key(7, "w"));
    Tensor y = dev({N, C}, dt), rstd = dev({N}, DType::F32), dy = dev_rand({N, C}, rng_key(7, "dy"), dt);
    Tensor dx = dev({N, C}, DType::F32), dw = Tensor::zeros({C}, DType::F32, Device::cuda(0));
    const std::string shape = std::to_string(N) + "x" + std::to_string(C);
    double ms = time_ms(be, [&] { be.rmsnorm_forward(x, w, y, rstd, 1e-5f); });
    row("rmsnorm fwd (f32 x, bf16 y)", shape, "bf16", ms, 6.0 * N * C / (ms * 1e-3) / 1e9, "GB/s");
    ms = time_ms(be, [&] { be.rmsnorm_backward(dy, x, w, rstd, dx, dw); });
    row("rmsnorm bwd (bf16 dy, f32 x, dx)", shape, "bf16", ms, 10.0 * N * C / (ms * 1e-3) / 1e9, "GB/s");
  }
  {
    Tensor g = dev_rand({N, F}, rng_key(8, "g"), dt), u = dev_rand({N, F}, rng_key(8, "u"), dt);
    Tensor d = dev_rand({N, F}, rng_key(8, "d"), dt), a = dev({N, F}, dt), dg = dev({N, F}, dt), du = dev({N, F}, dt);
    const std::string shape = std::to_string(N) + "x" + std::to_string(F);
    double ms = time_ms(be, [&] { be.swiglu_forward(g, u, a); });
    row("swiglu fwd", shape, "bf16", ms, 6.0 * N * F / (ms * 1e-3) / 1e9, "GB/s");
    ms = time_ms(be, [&] { be.swiglu_backward(g, u, d, dg, du); });
    row("swiglu bwd", shape, "bf16", ms, 10.0 * N * F / (ms * 1e-3) / 1e9, "GB/s");
  }
  Tensor q = dev_rand({B, T, Hq, D}, rng_key(9, "q"), dt), k = dev_rand({B, T, Hkv, D}, rng_key(9, "k"), dt);
  Tensor v = dev_rand({B, T, Hkv, D}, rng_key(9, "v"), dt), dout = dev_rand({B, T, Hq, D}, rng_key(9, "do"), dt);
  const std::string qshape = "B4 T2048 Hq32 D128";
  const double ms_rope = time_ms(be, [&] { be.rope_forward(q, q, 0, 500000.0f); });
  row("rope fwd (in place)", qshape, "bf16", ms_rope, 4.0 * q.numel() / (ms_rope * 1e-3) / 1e9, "GB/s");
  Tensor out = dev({B, T, Hq, D}, dt), lse = dev({B, Hq, T}, DType::F32);
  Tensor dq = dev(q.shape(), dt), dk = dev(k.shape(), dt), dv = dev(v.shape(), dt);
  const double flops = 7.0 * 2.0 * B * Hq * T * T * D / 2.0;
  double ms = time_ms(be, [&] {
    be.gqa_attention_forward(q, k, v, out, lse, 0.088f);
    be.gqa_attention_backward(dout, q, k, v, out, lse, dq, dk, dv, 0.088f);
  });
  row(("gqa fwd+bwd Hkv 8 (" + be.attention_impl(dt) + ")").c_str(), qshape, "bf16", ms, flops / (ms * 1e-3) / 1e12,
      "TFLOP/s");
  Tensor qkv = dev_rand({B, T, 3, Hq, D}, rng_key(9, "qkv"), dt), dqkv = dev({B, T, 3, Hq, D}, dt);
  ms = time_ms(be, [&] {
    be.attention_forward(qkv, out, lse, 0.088f);
    be.attention_backward(dout, qkv, out, lse, dqkv, 0.088f);
  });
  row("mha fwd+bwd on the repeat_kv pack", qshape, "bf16", ms, flops / (ms * 1e-3) / 1e12, "TFLOP/s");
}
}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--iters") == 0 && i + 1 < argc) g_iters = std::max(1, std::atoi(argv[++i]));
  if (cuda_device_count() == 0) {
    std::printf("no GPU visible: skipping\n");
    return 77;
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  CudaBackend be(0);
  const int64_t B = 8, T = 1024, C = 768, H = 12, D = 64, V = 50304, N = B * T;
  std::printf("# cuda_ops_bench on %s (%d iterations per row)\n\n", prop.name, g_iters);
  std::printf("| op | shape (m x n x k) | dtype | time (ms) | throughput |\n|---|---|---|---|---|\n");

  bench_gemm(be, "qkv fwd", false, true, N, 3 * C, C);
  bench_gemm(be, "fc fwd", false, true, N, 4 * C, C);
  bench_gemm(be, "proj fwd", false, true, N, C, 4 * C);
  bench_gemm(be, "fc dW", true, false, 4 * C, C, N);
  bench_gemm(be, "lm head fwd", false, true, N, V, C);

  {
    Tensor qkv = dev_rand({B, T, 3, H, D}, rng_key(2, "qkv"));
    Tensor out = Tensor::empty({B, T, H, D}, DType::F32, Device::cuda(0));
    Tensor lse = Tensor::empty({B, H, T}, DType::F32, Device::cuda(0));
    Tensor dout = dev_rand({B, T, H, D}, rng_key(2, "dout"));
    Tensor dqkv = Tensor::empty({B, T, 3, H, D}, DType::F32, Device::cuda(0));
    const float scale = 0.125f;
    const double flops = 2.0 * 2.0 * B * H * T * T * D / 2.0;  // QK^T and PV, causal half
    const std::string shape = "B8 T1024 H12 D64";
    double ms = time_ms(be, [&] { be.attention_forward(qkv, out, lse, scale); });
    row("attention fwd", shape, "fp32", ms, flops / (ms * 1e-3) / 1e12, "TFLOP/s");
    ms = time_ms(be, [&] { be.attention_backward(dout, qkv, out, lse, dqkv, scale); });
    row("attention bwd", shape, "fp32", ms, 2.5 * flops / (ms * 1e-3) / 1e12, "TFLOP/s");
  }
  {
    Tensor x = dev_rand({N, C}, rng_key(3, "x")), w = dev_rand({C}, rng_key(3, "w"));
    Tensor b = dev_rand({C}, rng_key(3, "b")), dy = dev_rand({N, C}, rng_key(3, "dy"));
    Tensor y = Tensor::empty({N, C}, DType::F32, Device::cuda(0)),
           dx = Tensor::empty({N, C}, DType::F32, Device::cuda(0));
    Tensor mean = Tensor::empty({N}, DType::F32, Device::cuda(0)),
           rstd = Tensor::empty({N}, DType::F32, Device::cuda(0));
    Tensor dw = Tensor::zeros({C}, DType::F32, Device::cuda(0)), db = Tensor::zeros({C}, DType::F32, Device::cuda(0));
    const std::string shape = std::to_string(N) + "x" + std::to_string(C);
    double ms = time_ms(be, [&] { be.layernorm_forward(x, w, b, y, mean, rstd, 1e-5f); });
    row("layernorm fwd", shape, "fp32", ms, 2.0 * N * C * 4 / (ms * 1e-3) / 1e9, "GB/s");
    ms = time_ms(be, [&] { be.layernorm_backward(dy, x, w, mean, rstd, dx, dw, db); });
    row("layernorm bwd", shape, "fp32", ms, 3.0 * N * C * 4 / (ms * 1e-3) / 1e9, "GB/s");
  }
  {
    const int64_t n = N * 4 * C;  // the MLP's hidden activations
    Tensor x = dev_rand({N, 4 * C}, rng_key(6, "x")), dy = dev_rand({N, 4 * C}, rng_key(6, "dy"));
    Tensor y = Tensor::empty({N, 4 * C}, DType::F32, Device::cuda(0)),
           dx = Tensor::empty({N, 4 * C}, DType::F32, Device::cuda(0));
    const std::string shape = std::to_string(N) + "x" + std::to_string(4 * C);
    double ms = time_ms(be, [&] { be.gelu_forward(x, y); });
    row("gelu fwd", shape, "fp32", ms, 2.0 * n * 4 / (ms * 1e-3) / 1e9, "GB/s");
    ms = time_ms(be, [&] { be.gelu_backward(x, dy, dx); });
    row("gelu bwd", shape, "fp32", ms, 3.0 * n * 4 / (ms * 1e-3) / 1e9, "GB/s");
  }
  for (int64_t c16 : {int64_t{768}, int64_t{1024}}) bench_memops16(be, 16 * 1024, c16);
  {
    const int64_t rows = 1024;  // a slice of the batch keeps the logits at 206 MB
    Tensor logits = dev_rand({rows, V}, rng_key(4, "logits"));
    std::vector<int32_t> tv(static_cast<std::size_t>(rows));
    for (int64_t i = 0; i < rows; ++i) tv[static_cast<std::size_t>(i)] = static_cast<int32_t>((i * 7919) % V);
    Tensor targets = Tensor::from_vector_i32({rows}, tv).to(Device::cuda(0));
    Tensor mx = Tensor::empty({rows}, DType::F32, Device::cuda(0)),
           se = Tensor::empty({rows}, DType::F32, Device::cuda(0));
    Tensor tl = Tensor::empty({rows}, DType::F32, Device::cuda(0));
    Tensor dl = Tensor::empty({rows, V}, DType::F32, Device::cuda(0));
    const std::string shape = std::to_string(rows) + "x" + std::to_string(V);
    double ms = time_ms(be, [&] { be.xent_stats(logits, targets, 0, V, mx, se, tl); });
    row("xent stats", shape, "fp32", ms, 1.0 * rows * V * 4 / (ms * 1e-3) / 1e9, "GB/s");
    ms = time_ms(be, [&] { be.xent_backward(logits, targets, 0, V, mx, se, 1.0f, dl); });
    row("xent bwd", shape, "fp32", ms, 2.0 * rows * V * 4 / (ms * 1e-3) / 1e9, "GB/s");
  }
  {
    const int64_t n = 124'000'000;
    Tensor p = dev_rand({n}, rng_key(5, "p"), DType::BF16), master = dev_rand({n}, rng_key(5, "p"));
    Tensor g = dev_rand({n}, rng_key(5, "g")), m = Tensor::zeros({n}, DType::F32, Device::cuda(0));
    Tensor v = Tensor::zeros({n}, DType::F32, Device::cuda(0));
    AdamWParams ap;
    const double ms = time_ms(be, [&] { be.adamw_step(p, g, m, v, master, ap); });
    // reads g, m, v, master; writes m, v, master, bf16 param
    row("adamw", "124M params", "bf16+master", ms, (7.0 * 4 + 2) * n / (ms * 1e-3) / 1e9, "GB/s");
  }
  bench_llama16(be);
  be.synchronize();
  return 0;
}
