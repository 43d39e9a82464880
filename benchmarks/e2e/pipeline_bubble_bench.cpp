// Pipeline bubble: measured idle fraction per schedule vs the theory, per-op
// times (F, B, W) and per-stage activation peaks.
//
//   mpirun -n 4 pipeline_bubble_bench [--mode sleep|compute] [--steps N] [--layer-ms X]
//                                     [--micro-batches 4,8,16] [--schedules gpipe,1f1b,...] [--trace out]
//
// pp = number of ranks (tp = dp = 1). For each schedule (gpipe, 1f1b,
// interleaved v = 2, zb-h1) and m (default pp, 2pp, 4pp) it runs `steps` timed
// steps (after one warm-up) and prints, averaged over steps and ranks, idle /
// step time, idle / compute time (the quantity (p-1)/m predicts; also its max
// over ranks), the bubble of the schedule on an ideal pipeline
// (simulated_bubble, T_F = T_B = T_W) and the theory ((p-1)/m, (p-1)/(v*m),
// (p-1)/(3m) for zb-h1); then the mean duration of a forward, a backward (the
// input part with zb-h1) and a weight part, in ms (ratios T_B/T_F, T_W/T_F:
// the theory assumes 1 and 1, a full backward 2); then each stage's
// Activations peak (allocator bytes above the step's start) per schedule at
// the middle m, and its ratio to 1f1b's.
//
// --mode sleep (default): every transformer layer sleeps X = --layer-ms (10)
// ms in forward, X in the input part and X in the weight part of its backward
// (LayerHooks: before_backward and after_backward, which fires after the
// weight part when split; 2X for a fused backward), so T_F = T_B = T_W and
// the schedule's bubble shows even with more ranks than cores. --mode
// compute: real compute only (a GPT with 8 layers, C=256, T=128); on an
// oversubscribed machine the ranks compete for cores and the bubble blurs.
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "pp3d/backend/backend.h"
#include "pp3d/comm/bootstrap.h"
#include "pp3d/core/allocator.h"
#include "pp3d/core/rng.h"
#include "pp3d/model/gpt_pipeline.h"
#include "pp3d/parallel/process_grid.h"

using namespace pp3d;

namespace {

// Sleeps in the transformer blocks of one chunk: layer positions
// [first, first + blocks) of its layers() (after the embedding when held).
class SleepHooks final : public LayerHooks {
 public:
  SleepHooks(int64_t first, int64_t blocks, int us) : first_(first), blocks_(blocks), us_(us) {}
  void before_forward(int64_t layer) override { nap(layer); }
  void before_backward(int64_t layer) override { nap(layer); }  // the input part
  void after_backward(int64_t layer) override { nap(layer); }   // the weight part (inside B when fused)

 private:
  void nap(int64_t layer) const {
    if (layer >= first_ && layer < first_ + blocks_) std::this_thread::sleep_for(std::chrono::microseconds(us_));
  }
  int64_t first_, blocks_;
  int us_;
};

Tensor tokens(uint64_t seed, int64_t B, int64_t T, int64_t vocab) {
  std::vector<int32_t> v(static_cast<std::size_t>(B * T));
  for (std::size_t i = 0; i < v.size(); ++i)
    v[i] = static_cast<int32_t>(rng_uniform(rng_key(seed, "bench"), i) * static_cast<float>(vocab)) %
           static_cast<int32_t>(vocab);
  return Tensor::from_vector_i32({B, T}, v);
}

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

// Mean duration (ms) of this rank's events of `kind` (0 when none).
double mean_ms(const std::vector<PipelineEvent>& events, PipelineEvent::Kind kind) {
  double sum = 0;
  int n = 0;
  for (const auto& e : events)
    if (e.kind == kind) sum += e.end_us - e.start_us, ++n;
  return n > 0 ? sum / n / 1000.0 : 0.0;
}

struct Options {
  std::string mode = "sleep", trace;
  int steps = 3;
  double layer_ms = 10;
  std::vector<int> micro_batches;  // empty: pp, 2pp, 4pp
  std::vector<ScheduleKind> schedules = {ScheduleKind::GPipe, ScheduleKind::OneFOneB, ScheduleKind::Interleaved,
                                         ScheduleKind::ZeroBubbleH1};
};

bool parse(int argc, char** argv, Options& o) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_next = i + 1 < argc;
    if (a == "--mode" && has_next) o.mode = argv[++i];
    else if (a == "--steps" && has_next) o.steps = std::stoi(argv[++i]);
    else if (a == "--trace" && has_next) o.trace = argv[++i];
    else if (a == "--layer-ms" && has_next) o.layer_ms = std::stod(argv[++i]);
    else if (a == "--micro-batches" && has_next) {
      o.micro_batches.clear();
      for (const auto& m : split_list(argv[++i])) o.micro_batches.push_back(std::stoi(m));
    } else if (a == "--schedules" && has_next) {
      o.schedules.clear();
      for (const auto& s : split_list(argv[++i])) o.schedules.push_back(parse_schedule(s));
    } else {
      std::fprintf(stderr, "usage: %s [--mode sleep|compute] [--steps N] [--layer-ms X] [--micro-batches 4,8,16] "
                   "[--schedules gpipe,1f1b,interleaved,zb-h1] [--trace out.json]\n", argv[0]);
      return false;
    }
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!parse(argc, argv, o)) return 2;
  auto world = init_world();
  try {
    ProcessGrid grid(world, 1, world->size());
    const int pp = grid.pp();
    const bool root = grid.rank() == 0, sleep = o.mode == "sleep";
    if (o.micro_batches.empty()) o.micro_batches = {pp, 2 * pp, 4 * pp};
    GptConfig cfg;
    cfg.vocab_size = sleep ? 64 : 512;
    cfg.num_layers = 8;
    cfg.num_heads = 4;
    cfg.hidden_size = sleep ? 16 : 256;
    cfg.max_seq_len = sleep ? 8 : 128;
    const int64_t B = sleep ? 1 : 2, T = cfg.max_seq_len;
    auto be = make_cpu_backend();
    auto& alloc = Allocator::instance();
    const int layer_us = static_cast<int>(o.layer_ms * 1000);
    if (root)
      std::printf("pipeline bubble, pp=%d, mode=%s, model %s, micro-batch %lldx%lld, %d timed steps\n"
                  "%-12s %3s %2s  %10s  %12s %10s  %8s %8s  %7s %7s %7s  %9s %9s\n",
                  pp, o.mode.c_str(), cfg.resolved().str().c_str(), static_cast<long long>(B),
                  static_cast<long long>(T), o.steps, "schedule", "m", "v", "idle/step", "idle/compute", "(max rank)",
                  "ideal", "theory", "F ms", "B ms", "W ms", "T_B/T_F", "T_W/T_F");
    const int m_mid = o.micro_batches[o.micro_batches.size() / 2];
    std::map<ScheduleKind, double> peak;  // this rank's Activations peak at m_mid
    for (ScheduleKind k : o.schedules) {
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
      for (int m : o.micro_batches) {
        if (k == ScheduleKind::Interleaved && m % pp != 0) continue;
        std::vector<MicroBatch> mbs;
        for (int i = 0; i < m; ++i) mbs.push_back({tokens(2 * i, B, T, cfg.vocab_size), tokens(2 * i + 1, B, T, cfg.vocab_size)});
        const float w = 1.0f / static_cast<float>(m * B * T);
        stage.run_step(mbs, w);  // warm-up
        double idle = 0, ratio = 0, act_peak = 0;
        StepResult last;
        for (int s = 0; s < o.steps; ++s) {
          stage.zero_grad();
          const std::size_t base = alloc.stats(MemCategory::Activations).current;
          alloc.reset_peak();
          last = stage.run_step(mbs, w);
          act_peak = std::max(act_peak, static_cast<double>(alloc.stats(MemCategory::Activations).peak - base));
          idle += last.idle_fraction / o.steps;
          ratio += last.bubble_ratio / o.steps;
        }
        if (m == m_mid) peak[k] = act_peak;
        // Mean (idle, ratio, F, B, W) and max ratio over the pipeline ranks.
        const double f = mean_ms(last.events, PipelineEvent::Forward);
        Tensor t = Tensor::from_vector({5}, {static_cast<float>(idle), static_cast<float>(ratio), static_cast<float>(f),
                                             static_cast<float>(mean_ms(last.events, PipelineEvent::Backward)),
                                             static_cast<float>(mean_ms(last.events, PipelineEvent::Weight))});
        Tensor mx = Tensor::from_vector({1}, {static_cast<float>(ratio)});
        grid.pp_group()->all_reduce(t, ReduceOp::Avg);
        grid.pp_group()->all_reduce(mx, ReduceOp::Max);
        const float* a = t.data<float>();
        if (root)
          std::printf("%-12s %3d %2d  %10.3f  %12.3f %10.3f  %8.3f %8.3f  %7.1f %7.1f %7.1f  %9.2f %9.2f\n",
                      schedule_name(k), m, v, a[0], a[1], mx.data<float>()[0], simulated_bubble(k, pp, v, m),
                      last.theoretical_bubble, a[2], a[3], a[4], a[3] / a[2], a[4] / a[2]);
        if (!o.trace.empty() && m == 2 * pp)
          write_merged_trace(*grid.pp_group(), fmt::format("{}.{}.json", o.trace, schedule_name(k)), last);
      }
    }
    // Per-stage activation peaks at m_mid, gathered on rank 0.
    if (root) std::printf("\nActivations peak per stage (allocator bytes above the step's start), m = %d\n%-6s", m_mid, "stage");
    for (const auto& [k, bytes] : peak)
      if (root) std::printf(" %12s", schedule_name(k));
    const bool ratio_col = peak.count(ScheduleKind::OneFOneB) && peak.count(ScheduleKind::ZeroBubbleH1);
    if (root) std::printf("%s\n", ratio_col ? "  zb-h1/1f1b" : "");
    std::vector<float> mine;
    for (const auto& [k, bytes] : peak) mine.push_back(static_cast<float>(bytes));
    Tensor all = Tensor::zeros({static_cast<int64_t>(mine.size()) * pp});
    if (!mine.empty()) grid.pp_group()->all_gather(Tensor::from_vector({static_cast<int64_t>(mine.size())}, mine), all);
    for (int r = 0; r < pp && root; ++r) {
      std::printf("%-6d", r);
      const float* row = all.data<float>() + r * static_cast<int64_t>(mine.size());
      for (std::size_t i = 0; i < mine.size(); ++i) std::printf(" %12.0f", row[i]);
      if (ratio_col) {
        int i1 = 0, iz = 0, i = 0;
        for (const auto& [k, bytes] : peak) {
          if (k == ScheduleKind::OneFOneB) i1 = i;
          if (k == ScheduleKind::ZeroBubbleH1) iz = i;
          ++i;
        }
        std::printf("  %10.3f", row[iz] / row[i1]);
      }
      std::printf("\n");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "[rank %d] error: %s\n", world->rank(), e.what());
    return 1;
  }
  finalize_world();
  return 0;
}
