// One full training step (forward, backward, grad clip, AdamW) of the GPT-2
// 124M shape on the CPU backend. Peer: gpt2_step_torch.py (same shape, same
// step); run both with benchmarks/e2e/run_gpt2_step.sh.
//
// Usage: gpt2_step_bench [--threads N] [--steps N] [--batch B] [--seq T] [--layers L]
// Prints one line "pp3d step_s=<median> fwd_bwd_s=<median> opt_s=<median> ..." (seconds).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <Eigen/Core>
#include <omp.h>

#include "pp3d/backend/backend.h"
#include "pp3d/core/rng.h"
#include "pp3d/model/gpt.h"
#include "pp3d/optim/optimizer.h"

namespace {
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}
double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
}  // namespace

int main(int argc, char** argv) {
  int threads = 2, steps = 3;
  int64_t B = 4, T = 64, L = 12;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    const long v = std::atol(argv[i + 1]);
    if (k == "--threads") threads = static_cast<int>(v);
    else if (k == "--steps") steps = static_cast<int>(v);
    else if (k == "--batch") B = v;
    else if (k == "--seq") T = v;
    else if (k == "--layers") L = v;
    else {
      std::fprintf(stderr, "unknown argument %s\n", k.c_str());
      return 2;
    }
  }
  omp_set_num_threads(threads);
  Eigen::setNbThreads(threads);

  pp3d::GptConfig cfg;  // GPT-2 124M: V 50257 (padded 50304), C 768, H 12, maxT 1024
  cfg.num_layers = L;
  auto backend = pp3d::make_cpu_backend();
  pp3d::Gpt model(cfg, *backend);
  auto params = model.parameters();
  pp3d::AdamW opt(*backend, params, pp3d::AdamWConfig{0.9f, 0.95f, 1e-8f, 0.1f});

  std::vector<int32_t> ids(static_cast<std::size_t>(B * (T + 1)));
  const uint64_t key = pp3d::rng_key(1, "bench-tokens");
  for (std::size_t i = 0; i < ids.size(); ++i)
    ids[i] = static_cast<int32_t>(pp3d::rng_uniform(key, i) * static_cast<float>(cfg.vocab_size));
  std::vector<int32_t> in, tg;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      in.push_back(ids[b * (T + 1) + t]);
      tg.push_back(ids[b * (T + 1) + t + 1]);
    }
  const pp3d::Tensor x = pp3d::Tensor::from_vector_i32({B, T}, in), y = pp3d::Tensor::from_vector_i32({B, T}, tg);

  std::vector<double> fb, op, tot;
  float loss = 0.0f;
  for (int s = 0; s < steps + 1; ++s) {  // step 0 is warm-up (first-touch allocations)
    const double t0 = now();
    model.zero_grad();
    loss = model.train_step_forward_backward(x, y);
    const double t1 = now();
    pp3d::clip_grad_norm(*backend, params, 1.0f);
    opt.step(6e-4f);
    const double t2 = now();
    if (s > 0) {
      fb.push_back(t1 - t0);
      op.push_back(t2 - t1);
      tot.push_back(t2 - t0);
    }
  }
  std::printf("pp3d step_s=%.4f fwd_bwd_s=%.4f opt_s=%.4f loss=%.4f params=%lld threads=%d B=%lld T=%lld L=%lld\n",
              median(tot), median(fb), median(op), loss, static_cast<long long>(cfg.num_parameters()), threads,
              static_cast<long long>(B), static_cast<long long>(T), static_cast<long long>(L));
  return 0;
}
