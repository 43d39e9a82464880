// Reshardable checkpoints under mpirun (NP = 4): a run in one layout trains 3
// steps, saves, and continues 2 more steps; the checkpoint is then loaded into
// other layouts (on 2 ranks, on 1 rank, and on all 4 with another ZeRO stage)
// built with a different init seed. Checked: every loaded parameter value and
// Adam m / v element equals the source's (bitwise; the source is gathered
// element by element with the test's own index arithmetic, and its duplicates
// — TP replicas, DP replicas, the tied wte copy — must agree bitwise); the Adam
// step counter and layout are restored; the two steps after the load give the
// source continuation's losses (relative 1e-5).
// Sources: tp2 dp2 ZeRO-1, pp2 dp2 ZeRO-2 and dp4 ZeRO-3. Also: a save that
// fails on one rank throws everywhere and leaves the previous checkpoint and
// `latest` untouched. Models are built directly from
// PipelineStage / ZeroOptimizer / AdamW (no Trainer).
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <fmt/ranges.h>

#include "parallel/tp_test_util.h"
#include "pp3d/comm/bootstrap.h"
#include "pp3d/core/rng.h"
#include "pp3d/model/gpt_pipeline.h"
#include "pp3d/parallel/process_grid.h"
#include "pp3d/parallel/zero_optimizer.h"
#include "pp3d/train/checkpoint.h"

using namespace pp3d;
using namespace pp3d::tptest;
namespace fs = std::filesystem;

namespace {

constexpr int64_t kRows = 8, kT = 16;
constexpr int kSaveAt = 3, kSteps = 5;

GptConfig tiny() {
  GptConfig c;
  c.vocab_size = 61;
  c.max_seq_len = kT;
  c.num_layers = 4;
  c.num_heads = 4;
  c.hidden_size = 32;
  return c;
}

struct Spec {
  int tp, pp;
  int zero;  // ZeRO stage, or -1: plain AdamW (dp must be 1)
  std::string str() const { return fmt::format("tp{} pp{} {}", tp, pp, zero < 0 ? "adamw" : fmt::format("zero{}", zero)); }
};

Tensor tokens(const char* what, int step, int64_t rows, int64_t row0) {
  std::vector<int32_t> v(static_cast<std::size_t>(rows * kT));
  const uint64_t key = rng_key(700 + static_cast<uint64_t>(step), what);
  for (std::size_t i = 0; i < v.size(); ++i)
    v[i] = static_cast<int32_t>(rng_uniform(key, static_cast<uint64_t>(row0 * kT) + i) * 61.0f) % 61;
  return Tensor::from_vector_i32({rows, kT}, v);
}

// One layout on `world`: pipeline stage (tp, pp from the spec), optimizer.
struct Run {
  Spec spec;
  ProcessGrid grid;
  std::unique_ptr<GptPipelineStage> stage;
  std::unique_ptr<ZeroOptimizer> zero;
  std::unique_ptr<AdamW> adam;
  int64_t mb = 0;

  Run(Backend& be, const std::shared_ptr<Communicator>& world, Spec s, uint64_t seed)
      : spec(s), grid(world, s.tp, s.pp) {
    mb = kRows / grid.dp() / 2;  // two micro-batches per DP rank
    PipelineConfig pc;
    pc.micro_batch_size = mb;
    pc.seq_len = kT;
    GptOptions go;
    go.seed = seed;
    stage = std::make_unique<GptPipelineStage>(tiny(), be, grid, pc, GptLayout{}, go);
    AdamWConfig ac;
    ac.eps = 1e-5f;  // see zero_dp_test: eps 1e-8 amplifies reassociation noise of zero gradients
    if (s.zero >= 0) {
      ZeroConfig zc;
      zc.stage = s.zero;
      zc.bucket_mb = 0.02;
      zc.adamw = ac;
      std::vector<Gpt*> chunks;
      for (int c = 0; c < stage->num_chunks(); ++c) chunks.push_back(&stage->chunk(c));
      zero = std::make_unique<ZeroOptimizer>(be, chunks, grid.dp_group(), zc);
      zero->set_micro_batches_per_step(2);
    } else {
      PP3D_CHECK(grid.dp() == 1, "plain AdamW layouts need dp == 1");
      adam = std::make_unique<AdamW>(be, stage->parameters(), ac);
    }
  }

  double step(int s) {
    const int64_t rows = kRows / grid.dp(), r0 = grid.dp_rank() * rows;
    std::vector<MicroBatch> mbs;
    for (int m = 0; m < 2; ++m)
      mbs.push_back({tokens("ids", s, mb, r0 + m * mb), tokens("tgt", s, mb, r0 + m * mb)});
    const auto mp = grid.mp_group();
    const SumSquaresReducer over_mp = [mp](double x) { return all_reduce_double(*mp, x); };
    const float w = 1.0f / static_cast<float>(kRows * kT);
    if (zero) {
      zero->zero_grad();
      const StepResult r = stage->run_step(mbs, w);
      zero->finish_gradient_sync();
      zero->clip_grad_norm(1.0f, over_mp);
      zero->step(3e-3f);
      return all_reduce_double(*grid.dp_group(), r.loss);
    }
    stage->zero_grad();
    const StepResult r = stage->run_step(mbs, w);
    clip_grad_norm(stage->chunk(0).backend(), stage->parameters(), 1.0f, over_mp);
    adam->step(3e-3f);
    return r.loss;
  }

  std::vector<CheckpointTensor> tensors() {
    return zero ? checkpoint_tensors(*zero) : checkpoint_tensors(*adam, grid.dp_rank() == 0);
  }
  int64_t opt_step() const { return zero ? zero->step_count() : adam->step_count(); }
  void set_opt_step(int64_t s) { zero ? zero->set_step_count(s) : adam->set_step_count(s); }
  CheckpointLayout layout() const {
    CheckpointLayout l;
    l.tp = grid.tp();
    l.pp = grid.pp();
    l.dp = grid.dp();
    l.zero_stage = std::max(spec.zero, 0);
    return l;
  }
};

// Tensor ids: 3 * (index of the parameter in the serial model) + {0 value, 1 m, 2 v}.
struct Table {
  std::vector<std::string> names;
  std::vector<Shape> shapes;
  std::map<std::string, int> id;
  explicit Table(Backend& be) {
    Gpt ref(tiny(), be);
    for (Parameter* p : ref.parameters()) {
      id[p->name] = static_cast<int>(names.size());
      names.push_back(p->name);
      shapes.push_back(p->global_shape);
    }
  }
};

// Local element l of shard s of `g` -> global flat index (the test's own arithmetic).
int64_t global_index(const Shape& g, const ShardSpec& s, int64_t l) {
  const Shape local = shard_local_shape(g, s);
  const int64_t cols = local.size() == 2 ? local[1] : 1, gcols = g.size() == 2 ? g[1] : 1;
  int64_t r = l / cols, c = l % cols;
  auto map = [&](int64_t i, int64_t extent) { return (i / s.length) * (extent / s.segments) + s.offset + i % s.length; };
  if (s.dim == 0) r = map(r, g[0]);
  if (s.dim == 1) c = map(c, g[1]);
  return r * gcols + c;
}

// (tensor id, global index, f32 bits) of everything this rank holds, duplicates included.
std::vector<int32_t> holdings(Run& run, const Table& tab) {
  std::vector<int32_t> out;
  auto add = [&](const Parameter& p, int kind, const Tensor& t, int64_t begin) {
    const std::vector<float> v = t.to_vector();
    const int id = 3 * tab.id.at(p.name) + kind;
    for (std::size_t i = 0; i < v.size(); ++i) {
      int32_t bits;
      std::memcpy(&bits, &v[i], 4);
      out.insert(out.end(), {id, static_cast<int32_t>(global_index(p.global_shape, p.shard, begin + int64_t(i))), bits});
    }
  };
  if (run.adam) {
    for (std::size_t i = 0; i < run.adam->params().size(); ++i) {
      const Parameter& p = *run.adam->params()[i];
      add(p, 0, p.value, 0);
      add(p, 1, run.adam->state()[i].m, 0);
      add(p, 2, run.adam->state()[i].v, 0);
    }
    return out;
  }
  if (run.zero->stage() < 3)
    for (Parameter* p : run.zero->all_parameters()) add(*p, 0, p->value, 0);
  for (const auto& r : run.zero->owned_ranges()) {
    if (run.zero->stage() == 3) add(*r.param, 0, r.value, r.begin);
    add(*r.param, 1, r.m, r.begin);
    add(*r.param, 2, r.v, r.begin);
  }
  return out;
}

// The source state gathered from every rank: full tensors per id.
std::map<int, std::vector<float>> gather_source(Communicator& world, const std::vector<int32_t>& mine, const Table& tab) {
  Tensor n = Tensor::from_vector_i32({1}, {static_cast<int32_t>(mine.size())});
  Tensor ns = Tensor::zeros({world.size()}, DType::I32);
  world.all_gather(n, ns);
  int64_t max_n = 1;
  for (int r = 0; r < world.size(); ++r) max_n = std::max<int64_t>(max_n, ns.data<int32_t>()[r]);
  std::vector<int32_t> padded(mine);
  padded.resize(static_cast<std::size_t>(max_n), 0);
  Tensor all = Tensor::zeros({max_n * world.size()}, DType::I32);
  world.all_gather(Tensor::from_vector_i32({max_n}, padded), all);
  std::map<int, std::vector<float>> full;
  std::map<int, std::vector<char>> seen;
  for (std::size_t i = 0; i < tab.names.size(); ++i)
    for (int k = 0; k < 3; ++k) {
      full[3 * int(i) + k].assign(static_cast<std::size_t>(shape_numel(tab.shapes[i])), 0.0f);
      seen[3 * int(i) + k].assign(static_cast<std::size_t>(shape_numel(tab.shapes[i])), 0);
    }
  for (int r = 0; r < world.size(); ++r) {
    const int32_t* d = all.data<int32_t>() + r * max_n;
    for (int32_t j = 0; j + 2 < ns.data<int32_t>()[r]; j += 3) {
      float x;
      std::memcpy(&x, &d[j + 2], 4);
      float& slot = full.at(d[j])[static_cast<std::size_t>(d[j + 1])];
      char& s = seen.at(d[j])[static_cast<std::size_t>(d[j + 1])];
      if (s && std::memcmp(&slot, &x, 4) != 0)
        TP_EXPECT(false, "source duplicates of {}[{}] differ: {} vs {}", tab.names[d[j] / 3], d[j + 1], slot, x);
      slot = x;
      s = 1;
    }
  }
  for (const auto& [id, s] : seen)
    for (std::size_t e = 0; e < s.size(); ++e)
      if (!s[e]) {
        TP_EXPECT(false, "source element {}[{}] (kind {}) held by no rank", tab.names[id / 3], e, id % 3);
        break;
      }
  return full;
}

int64_t check_against(const std::vector<int32_t>& mine, const std::map<int, std::vector<float>>& src, const Table& tab,
                   const std::string& what) {
  int64_t bad = 0;
  for (std::size_t j = 0; j + 2 < mine.size(); j += 3) {
    const float want = src.at(mine[j])[static_cast<std::size_t>(mine[j + 1])];
    int32_t wb;
    std::memcpy(&wb, &want, 4);
    if (wb != mine[j + 2] && bad++ == 0) {
      float got;
      std::memcpy(&got, &mine[j + 2], 4);
      TP_EXPECT(false, "{}: {}{}[{}] loaded as {} but the source holds {}", what, tab.names[mine[j] / 3],
                std::array<const char*, 3>{"", ".exp_avg", ".exp_avg_sq"}[mine[j] % 3], mine[j + 1], got, want);
    }
  }
  TP_EXPECT(bad == 0, "{}: {} of {} loaded elements differ from the source", what, bad, mine.size() / 3);
  return bad;
}

void scenario(Backend& be, const std::shared_ptr<Communicator>& world, const std::string& base, const Spec& src_spec,
              const std::vector<std::pair<int, Spec>>& targets) {
  const Table tab(be);
  const std::string out = base + "/" + fmt::format("tp{}pp{}z{}", src_spec.tp, src_spec.pp, src_spec.zero);
  std::vector<double> src_losses;
  std::map<int, std::vector<float>> src_state;
  {
    Run src(be, world, src_spec, 1337);
    for (int s = 0; s < kSaveAt; ++s) src_losses.push_back(src.step(s));
    src_state = gather_source(*world, holdings(src, tab), tab);
    CheckpointInfo info;
    info.step = kSaveAt;
    info.seed = 1337;
    info.optimizer_step = src.opt_step();
    info.model = tiny();
    info.layout = src.layout();
    save_checkpoint(out, info, src.tensors(), *world);
    // A save that fails on one rank (rank 2, after writing its shard) throws
    // on every rank and leaves checkpoint-3 and `latest` as they were.
    CheckpointSaveOptions so;
    so.fault_hook = [&](const std::string& phase) {
      if (phase == "shard_written" && world->rank() == 2) throw std::runtime_error("injected failure on rank 2");
    };
    info.step = kSaveAt + 1;
    std::string err = "(no error)";
    try {
      save_checkpoint(out, info, src.tensors(), *world, so);
    } catch (const Error& e) {
      err = e.what();
    }
    TP_EXPECT(err.find("rank 2: injected failure on rank 2") != std::string::npos, "failed save: error '{}'", err);
    world->barrier();
    if (world->rank() == 0) {
      std::vector<std::string> entries;
      for (const auto& e : fs::directory_iterator(out)) entries.push_back(e.path().filename().string());
      std::sort(entries.begin(), entries.end());
      TP_EXPECT((entries == std::vector<std::string>{"checkpoint-3", "latest"}), "after a failed save the output holds "
                "{}", fmt::join(entries, ", "));
    }
    for (int s = kSaveAt; s < kSteps; ++s) src_losses.push_back(src.step(s));
  }
  for (const auto& [np, spec] : targets) {
    const auto sub = world->split(world->rank() < np ? 0 : -1, world->rank(), "target");
    if (sub) {
      const std::string what = fmt::format("{} (dp{}) -> {} on {} rank(s)", src_spec.str(),
                                           world->size() / (src_spec.tp * src_spec.pp), spec.str(), np);
      try {
        Run t(be, sub, spec, 4242);
        const CheckpointInfo info = load_checkpoint(resolve_checkpoint("latest", out), t.tensors());
        t.set_opt_step(info.optimizer_step);
        TP_EXPECT(info.optimizer_step == kSaveAt && info.step == kSaveAt, "{}: step {} / {}", what, info.step,
                  info.optimizer_step);
        TP_EXPECT(info.layout.tp == src_spec.tp && info.layout.pp == src_spec.pp, "{}: layout not recorded", what);
        const int64_t bad = check_against(holdings(t, tab), src_state, tab, what);
        double worst = 0;
        for (int s = kSaveAt; s < kSteps; ++s) {
          const double l = t.step(s), want = src_losses[static_cast<std::size_t>(s)];
          worst = std::max(worst, std::fabs(l - want) / std::fabs(want));
          TP_EXPECT(std::fabs(l - want) <= 1e-5 * std::fabs(want), "{}: step {} loss {} vs source {}", what, s, l,
                    want);
        }
        if (sub->rank() == 0)
          std::printf("%s: state %s, next-step loss rel diff %.3g\n", what.c_str(),
                      bad == 0 ? "bitwise equal" : "DIFFERS", worst);
      } catch (const std::exception& e) {
        failures().push_back(what + ": " + e.what());
      }
    }
    world->barrier();
  }
}

}  // namespace

int main() {
  auto world = init_world();
  PP3D_CHECK(world->size() == 4, "checkpoint_reshard_test runs with 4 ranks, got {}", world->size());
  auto be = make_cpu_backend();
  Tensor pid = Tensor::from_vector_i32({1}, {static_cast<int32_t>(::getpid())});
  world->broadcast(pid, 0);
  const std::string base = (fs::temp_directory_path() / fmt::format("pp3d_ckpt_mpi_{}", pid.data<int32_t>()[0])).string();
  try {
    scenario(*be, world, base, {2, 1, 1}, {{2, {1, 2, -1}}, {1, {1, 1, -1}}, {4, {1, 2, 3}}});
    scenario(*be, world, base, {1, 2, 2}, {{2, {2, 1, -1}}, {1, {1, 1, -1}}, {4, {2, 1, 3}}});
    scenario(*be, world, base, {1, 1, 3}, {{1, {1, 1, -1}}, {4, {2, 2, -1}}});
  } catch (const std::exception& e) {
    failures().push_back(e.what());
  }
  world->barrier();
  if (world->rank() == 0) fs::remove_all(base);
  return finish(*world, "checkpoint_reshard_test");
}
