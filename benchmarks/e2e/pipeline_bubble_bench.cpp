// Pipeline bubble: measured idle fraction per schedule vs the theory.
//
//   mpirun -n 4 pipeline_bubble_bench [--mode sleep|compute] [--steps N] [--layer-ms X] [--trace out]
//
// pp = number of ranks (tp = dp = 1). For gpipe, 1f1b and interleaved (v = 2)
// and m in {pp, 2pp, 4pp} it runs `steps` timed steps (after one warm-up) and
// prints, averaged over steps and ranks, idle / step time, idle / compute time
// (the quantity (p-1)/m predicts; also its max over ranks), the bubble of the
// schedule on an ideal pipeline (simulated_bubble) and the theoretical (p-1)/m
// or (p-1)/(v*m).
//
// --mode sleep (default): every transformer layer sleeps X = --layer-ms (10)
// ms in forward and 2X in backward (LayerHooks) on a tiny model, so stage
// times are uniform and the schedule's bubble shows even with more ranks than
// cores (long sleeps keep the communicator's short spin-waits negligible).
// --mode compute: real compute only (a GPT with 8 layers, C=256, T=128); on an
// oversubscribed machine the ranks compete for cores and the bubble blurs.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "pp3d/backend/backend.h"
#include "pp3d/comm/bootstrap.h"
#include "pp3d/core/rng.h"
#include "pp3d/model/gpt_pipeline.h"
#include "pp3d/parallel/process_grid.h"

using namespace pp3d;

namespace {

// Sleeps in the transformer blocks of one chunk: layer positions
// [first, first + blocks) of its layers() (after the embedding when held).
class SleepHooks final : public LayerHooks {
 public:
  SleepHooks(int64_t first, int64_t blocks, int fwd_us) : first_(first), blocks_(blocks), fwd_us_(fwd_us) {}
  void before_forward(int64_t layer) override { nap(layer, fwd_us_); }
  void before_backward(int64_t layer) override { nap(layer, 2 * fwd_us_); }

 private:
  void nap(int64_t layer, int us) const {
    if (layer >= first_ && layer < first_ + blocks_) std::this_thread::sleep_for(std::chrono::microseconds(us));
  }
  int64_t first_, blocks_;
  int fwd_us_;
};

Tensor tokens(uint64_t seed, int64_t B, int64_t T, int64_t vocab) {
  std::vector<int32_t> v(static_cast<std::size_t>(B * T));
  for (std::size_t i = 0; i < v.size(); ++i)
    v[i] = static_cast<int32_t>(rng_uniform(rng_key(seed, "bench"), i) * static_cast<float>(vocab)) %
           static_cast<int32_t>(vocab);
  return Tensor::from_vector_i32({B, T}, v);
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode = "sleep", trace;
  int steps = 3;
  double layer_ms = 10;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_next = i + 1 < argc;
    if (a == "--mode" && has_next) mode = argv[++i];
    else if (a == "--steps" && has_next) steps = std::stoi(argv[++i]);
    else if (a == "--trace" && has_next) trace = argv[++i];
    else if (a == "--layer-ms" && has_next) layer_ms = std::stod(argv[++i]);
    else {
      std::fprintf(stderr, "usage: %s [--mode sleep|compute] [--steps N] [--layer-ms X] [--trace out.json]\n", argv[0]);
      return 2;
    }
  }
  auto world = init_world();
  try {
    ProcessGrid grid(world, 1, world->size());
    const int pp = grid.pp();
    const bool sleep = mode == "sleep";
    GptConfig cfg;
    cfg.vocab_size = sleep ? 64 : 512;
    cfg.num_layers = 8;
    cfg.num_heads = 4;
    cfg.hidden_size = sleep ? 16 : 256;
    cfg.max_seq_len = sleep ? 8 : 128;
    const int64_t B = sleep ? 1 : 2, T = cfg.max_seq_len;
    auto be = make_cpu_backend();
    const int layer_us = static_cast<int>(layer_ms * 1000);
    if (grid.rank() == 0)
      std::printf("pipeline bubble, pp=%d, mode=%s, model %s, micro-batch %lldx%lld, %d timed steps\n", pp,
                  mode.c_str(), cfg.resolved().str().c_str(), static_cast<long long>(B),
                  static_cast<long long>(T), steps);
    if (grid.rank() == 0)
      std::printf("%-12s %3s %2s  %10s  %12s %10s  %8s %8s\n", "schedule", "m", "v", "idle/step", "idle/compute",
                  "(max rank)", "ideal", "theory");
    for (ScheduleKind k : {ScheduleKind::GPipe, ScheduleKind::OneFOneB, ScheduleKind::Interleaved}) {
      const int v = k == ScheduleKind::Interleaved ? 2 : 1;
      if (cfg.num_layers < pp * v) continue;
      PipelineConfig pc;
      pc.schedule = k;
      pc.virtual_stages = v;
      pc.micro_batch_size = B;
      pc.seq_len = T;
      GptPipelineStage stage(cfg, *be, grid, pc);
      std::vector<std::unique_ptr<SleepHooks>> hooks;
      if (sleep)
        for (int c = 0; c < stage.num_chunks(); ++c) {
          const GptLayout& l = stage.chunk(c).layout();
          hooks.push_back(std::make_unique<SleepHooks>(l.has_embedding ? 1 : 0, l.last_layer - l.first_layer, layer_us));
          stage.chunk(c).set_layer_hooks(hooks.back().get());
        }
      for (int m : {pp, 2 * pp, 4 * pp}) {
        std::vector<MicroBatch> mbs;
        for (int i = 0; i < m; ++i) mbs.push_back({tokens(2 * i, B, T, cfg.vocab_size), tokens(2 * i + 1, B, T, cfg.vocab_size)});
        const float w = 1.0f / static_cast<float>(m * B * T);
        stage.run_step(mbs, w);  // warm-up
        double idle = 0, ratio = 0;
        StepResult last;
        for (int s = 0; s < steps; ++s) {
          stage.zero_grad();
          last = stage.run_step(mbs, w);
          idle += last.idle_fraction / steps;
          ratio += last.bubble_ratio / steps;
        }
        // Mean and max over the pipeline ranks.
        Tensor t = Tensor::from_vector({3}, {static_cast<float>(idle), static_cast<float>(ratio), 0.0f});
        Tensor mx = Tensor::from_vector({1}, {static_cast<float>(ratio)});
        grid.pp_group()->all_reduce(t, ReduceOp::Avg);
        grid.pp_group()->all_reduce(mx, ReduceOp::Max);
        if (grid.rank() == 0)
          std::printf("%-12s %3d %2d  %10.3f  %12.3f %10.3f  %8.3f %8.3f\n", schedule_name(k), m, v,
                      t.data<float>()[0], t.data<float>()[1], mx.data<float>()[0], simulated_bubble(k, pp, v, m),
                      last.theoretical_bubble);
        if (!trace.empty() && m == 2 * pp)
          write_merged_trace(*grid.pp_group(), fmt::format("{}.{}.json", trace, schedule_name(k)), last);
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "[rank %d] error: %s\n", world->rank(), e.what());
    return 1;
  }
  finalize_world();
  return 0;
}
