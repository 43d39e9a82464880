// cpu_ops_bench: throughput of the CpuBackend ops at GPT-2 124M shapes
// (B*T = 256 rows, C = 768, vocab 50304, B=4 H=12 T=64 D=64 attention).
// GEMMs report GFLOP/s (2mnk per product), the other ops an estimate of the
// bytes they must move (GB/s). Each row: 2 warm-up runs, then the median of
// N timed runs. Prints a markdown table. Set OMP_NUM_THREADS to pick threads.
//
// Usage: cpu_ops_bench [--iters N] [--filter SUBSTRING] [--cpu-time]
// --cpu-time reports process CPU time divided by the thread count: on a
// machine shared with other jobs it estimates the uncontended time (exact for
// one thread; optimistic with more, since spin-waiting counts as work).
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <string>
#include <vector>

#include "pp3d/backend/backend.h"
#include "pp3d/core/rng.h"

using namespace pp3d;

namespace {

Tensor randn(const Shape& shape, uint64_t key, float std = 1.0f) {
  Tensor t = Tensor::empty(shape);
  const int64_t cols = shape.back();
  rng_normal_fill(t, key, 0, 0, cols, 0.0f, std);
  return t;
}

bool g_cpu_time = false;  // --cpu-time: process CPU seconds / threads instead of wall time

double now_seconds() {
  if (g_cpu_time) return static_cast<double>(std::clock()) / CLOCKS_PER_SEC / omp_get_max_threads();
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median_seconds(int iters, const std::function<void()>& f) {
  for (int i = 0; i < 2; ++i) f();
  std::vector<double> t;
  for (int i = 0; i < iters; ++i) {
    const double t0 = now_seconds();
    f();
    t.push_back(now_seconds() - t0);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

struct Row {
  std::string op, shape;
  double ms, gflops, gbs;
};

}  // namespace

int main(int argc, char** argv) {
  int iters = 10;
  std::string filter;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--iters") && i + 1 < argc) iters = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--filter") && i + 1 < argc) filter = argv[++i];
    else if (!std::strcmp(argv[i], "--cpu-time")) g_cpu_time = true;
    else {
      std::fprintf(stderr, "usage: %s [--iters N] [--filter SUBSTRING] [--cpu-time]\n", argv[0]);
      return 2;
    }
  }
  auto be = make_cpu_backend();
  std::vector<Row> rows;
  auto bench = [&](const std::string& op, const std::string& shape, double flops, double bytes,
                   const std::function<void()>& f) {
    if (!filter.empty() && (op + " " + shape).find(filter) == std::string::npos) return;
    const double s = median_seconds(iters, f);
    rows.push_back({op, shape, s * 1e3, flops / s * 1e-9, bytes / s * 1e-9});
    std::fprintf(stderr, "%s %s: %.3f ms\n", op.c_str(), shape.c_str(), s * 1e3);
  };

  // ---- GEMMs: Linear layers with weights [out, in] (PyTorch layout), N = 256 rows.
  const int64_t N = 256, C = 768, V = 50304;
  const std::pair<int64_t, int64_t> linears[] = {{C, 3 * C}, {C, C}, {C, 4 * C}, {4 * C, C}, {C, V}};
  uint64_t key = 1;
  for (auto [in, out] : linears) {
    Tensor x = randn({N, in}, key++), w = randn({out, in}, key++, 0.02f), y = Tensor::empty({N, out});
    Tensor dy = randn({N, out}, key++), dw = Tensor::zeros({out, in}), dx = Tensor::empty({N, in});
    const double fl = 2.0 * N * in * out;
    const std::string shp = "[" + std::to_string(N) + "x" + std::to_string(in) + "]x[" + std::to_string(in) +
                            "x" + std::to_string(out) + "]";
    bench("gemm fwd NT y=xW^T", shp, fl, 0, [&] { be->gemm(false, true, N, out, in, 1.0f, x, w, 0.0f, y); });
    bench("gemm bwd NN dx=dyW", shp, fl, 0, [&] { be->gemm(false, false, N, in, out, 1.0f, dy, w, 0.0f, dx); });
    bench("gemm bwd TN dW+=dy^Tx", shp, fl, 0, [&] { be->gemm(true, false, out, in, N, 1.0f, dy, x, 1.0f, dw); });
  }

  // ---- row ops on [256, 768] / [256, 3072]
  {
    Tensor x = randn({N, C}, key++), w = randn({C}, key++), b = randn({C}, key++), y = Tensor::empty({N, C});
    Tensor mean = Tensor::empty({N}), rstd = Tensor::empty({N}), dx = Tensor::empty({N, C});
    Tensor dw = Tensor::zeros({C}), db = Tensor::zeros({C});
    const double nb = 4.0 * N * C;
    bench("layernorm fwd", "[256x768]", 0, 2 * nb, [&] { be->layernorm_forward(x, w, b, y, mean, rstd, 1e-5f); });
    bench("layernorm bwd", "[256x768]", 0, 3 * nb, [&] { be->layernorm_backward(y, x, w, mean, rstd, dx, dw, db); });
    bench("bias_grad", "[256x768]", 0, nb, [&] { be->bias_grad(x, db); });
    bench("bias_add", "[256x768]", 0, 2 * nb, [&] { be->bias_add(y, b); });
  }
  {
    Tensor x = randn({N, 4 * C}, key++), y = Tensor::empty({N, 4 * C}), dx = Tensor::empty({N, 4 * C});
    const double nb = 4.0 * N * 4 * C;
    bench("gelu fwd", "[256x3072]", 0, 2 * nb, [&] { be->gelu_forward(x, y); });
    bench("gelu bwd", "[256x3072]", 0, 3 * nb, [&] { be->gelu_backward(x, y, dx); });
  }
  {
    const int64_t B = 4, T = 64, H = 12, D = 64;
    Tensor qkv = randn({B, T, 3, H, D}, key++), out = Tensor::empty({B, T, H, D}), lse = Tensor::empty({B, H, T});
    Tensor dout = randn({B, T, H, D}, key++), dqkv = Tensor::empty({B, T, 3, H, D});
    const double io = 4.0 * B * T * H * D, fl = 2.0 * B * H * T * T * D;  // one T x T x D product
    bench("attention fwd", "B4 H12 T64 D64", 2 * fl, 4 * io, [&] { be->attention_forward(qkv, out, lse, 0.125f); });
    bench("attention bwd", "B4 H12 T64 D64", 5 * fl, 9 * io,
          [&] { be->attention_backward(dout, qkv, out, lse, dqkv, 0.125f); });
  }
  {
    std::vector<int32_t> idv(N);
    for (int64_t i = 0; i < N; ++i) idv[static_cast<std::size_t>(i)] = static_cast<int32_t>((i * 7919) % V);
    Tensor ids = Tensor::from_vector_i32({N}, idv), table = randn({V, C}, key++), out = Tensor::empty({N, C});
    Tensor dtable = Tensor::zeros({V, C});
    const double nb = 4.0 * N * C;
    bench("embedding fwd", "[256] of [50304x768]", 0, 2 * nb, [&] { be->embedding_forward(ids, table, out, 0, false); });
    bench("embedding bwd", "[256] of [50304x768]", 0, 3 * nb, [&] { be->embedding_backward(ids, out, dtable, 0); });
  }
  {
    Tensor logits = randn({N, V}, key++), dl = Tensor::empty({N, V});
    std::vector<int32_t> tv(N);
    for (int64_t i = 0; i < N; ++i) tv[static_cast<std::size_t>(i)] = static_cast<int32_t>((i * 104729) % 50257);
    Tensor targets = Tensor::from_vector_i32({N}, tv);
    Tensor mx = Tensor::empty({N}), se = Tensor::empty({N}), tl = Tensor::empty({N});
    const double nb = 4.0 * N * V;
    bench("xent stats", "[256x50304]", 0, nb, [&] { be->xent_stats(logits, targets, 0, 50257, mx, se, tl); });
    bench("xent bwd", "[256x50304]", 0, 2 * nb,
          [&] { be->xent_backward(logits, targets, 0, 50257, mx, se, 1.0f / N, dl); });
  }
  {
    const int64_t n = 124'000'000 / 10;
    Tensor p = randn({n}, key++, 0.02f), g = randn({n}, key++), m = Tensor::zeros({n}), v = Tensor::zeros({n});
    Tensor none, p16 = Tensor::empty({n}, DType::BF16), master = p.clone();
    AdamWParams a;
    a.weight_decay = 0.1f;
    bench("adamw f32", "12.4M", 0, 7.0 * 4 * n, [&] { be->adamw_step(p, g, m, v, none, a); });
    bench("adamw bf16+master", "12.4M", 0, (6.0 * 4 + 2) * n, [&] { be->adamw_step(p16, g, m, v, master, a); });
    bench("sum_squares f32", "12.4M", 0, 4.0 * n, [&] { (void)be->sum_squares(g); });
    bench("cast f32->bf16", "12.4M", 0, 6.0 * n, [&] { be->cast(p, p16); });
  }

  std::printf("CpuBackend ops, %d OpenMP thread(s), median of %d runs (%s)\n\n", omp_get_max_threads(), iters,
              g_cpu_time ? "CPU time / threads" : "wall time");
  std::printf("| op | shape | ms | GFLOP/s | GB/s |\n|---|---|---:|---:|---:|\n");
  for (const Row& r : rows) {
    std::printf("| %s | %s | %.3f | ", r.op.c_str(), r.shape.c_str(), r.ms);
    if (r.gflops > 0) std::printf("%.1f | ", r.gflops); else std::printf("- | ");
    if (r.gbs > 0) std::printf("%.1f |\n", r.gbs); else std::printf("- |\n");
  }
  return 0;
}
