// How much of the data-parallel gradient reduction hides behind the backward.
//
// For each bucket size, a GPT (default L4 C384 T64, micro-batch 4 rows per rank)
// trains `steps` steps with a ZeroOptimizer (stage 0 = bucketed all-reduce by
// default) twice in this one invocation: overlap OFF (every bucket's reduction
// starts in finish_gradient_sync, after the backward: the communication is fully
// exposed) and overlap ON (each bucket starts as soon as its layers' backward
// is done, on the last micro-batch). Per step, GradBucketer::last_comm_stats():
//   comm     wall time with a reduction in flight (launch -> completion observed)
//   exposed  time the step blocks in finish_gradient_sync
//   hidden   1 - exposed / comm
// plus the forward+backward+sync step time, and for ON rows
//   saved    1 - exposed(ON) / exposed(OFF): the blocking time overlap removed.
// Each of these with MpiCommunicator's progress thread (lib/comm/mpi_progress.cpp,
// advancing the reductions during compute) on and off (then they advance only
// when a layer hook polls them): 4 variants whose steps are interleaved, so a
// changing machine load affects them alike. Medians over the steps after one
// warm-up step, max over ranks. Needs MpiCommunicator (mpirun).
// Run: mpirun -n 4 ./dp_overlap_bench [--layers 4] [--hidden 384] [--seq 64] [--rows 4]
//        [--steps 5] [--stage 0] [--buckets 1,4,16,1000]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "comm/mpi_detail.h"  // mpi_progress_set_enabled (internal)
#include "pp3d/comm/bootstrap.h"
#include "pp3d/model/gpt.h"
#include "pp3d/parallel/zero_optimizer.h"

using namespace pp3d;

namespace {

struct Args {
  int64_t layers = 4, hidden = 384, seq = 64, rows = 4;
  int steps = 5, stage = 0;
  std::vector<double> buckets{1, 4, 16, 1000};
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--layers") a.layers = std::stoll(v);
    else if (k == "--hidden") a.hidden = std::stoll(v);
    else if (k == "--seq") a.seq = std::stoll(v);
    else if (k == "--rows") a.rows = std::stoll(v);
    else if (k == "--steps") a.steps = std::stoi(v);
    else if (k == "--stage") a.stage = std::stoi(v);
    else if (k == "--buckets") {
      a.buckets.clear();
      for (std::size_t p = 0; p <= v.size();) {
        const std::size_t q = std::min(v.find(',', p), v.size());
        a.buckets.push_back(std::stod(v.substr(p, q - p)));
        p = q + 1;
      }
    } else PP3D_CHECK(false, "unknown argument '{}'", k);
  }
  return a;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

struct Row {
  double step_ms = 0, comm_ms = 0, exposed_ms = 0, hidden = 0;
  int buckets = 0;
};

// One training setup (model + optimizer) of a variant; steps are interleaved
// over the variants so that a changing machine load hits all of them alike.
struct Variant {
  bool thread, overlap;
  std::unique_ptr<Gpt> model;
  std::unique_ptr<ZeroOptimizer> zero;
  std::vector<double> step_ms, comm_ms, exposed_ms, hidden;
};

void one_step(Variant& v, const std::shared_ptr<Communicator>& dp, const Args& a, const Tensor& ids,
              const Tensor& tgt, bool record) {
  detail::mpi_progress_set_enabled(v.thread);
  v.zero->zero_grad();
  dp->barrier();
  const auto t0 = std::chrono::steady_clock::now();
  v.zero->set_last_micro_batch(true);
  {
    ActivationCache cache;
    v.model->forward(ids, tgt, 1.0f / static_cast<float>(a.rows * a.seq * dp->size()), cache);
    v.model->backward(Tensor(), cache);
  }
  v.zero->finish_gradient_sync();
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  v.zero->step(1e-4f);
  detail::mpi_progress_set_enabled(true);
  if (!record) return;
  const GradCommStats& st = v.zero->buckets().last_comm_stats();
  v.step_ms.push_back(ms);
  v.comm_ms.push_back(st.comm_ms);
  v.exposed_ms.push_back(st.exposed_ms);
  v.hidden.push_back(st.hidden_fraction());
}

std::vector<Row> run(Backend& be, const std::shared_ptr<Communicator>& dp, const Args& a, double bucket_mb) {
  GptConfig c;
  c.vocab_size = 256;
  c.max_seq_len = a.seq;
  c.num_layers = a.layers;
  c.hidden_size = a.hidden;
  c.num_heads = std::max<int64_t>(1, a.hidden / 64);
  std::vector<Variant> vs;
  for (bool thread : {true, false})
    for (bool overlap : {false, true}) {
      Variant v{thread, overlap, std::make_unique<Gpt>(c, be), nullptr, {}, {}, {}, {}};
      ZeroConfig zc;
      zc.stage = a.stage;
      zc.bucket_mb = bucket_mb;
      zc.overlap_comm = overlap;
      v.zero = std::make_unique<ZeroOptimizer>(be, std::vector<Gpt*>{v.model.get()}, dp, zc);
      vs.push_back(std::move(v));
    }
  std::mt19937 gen(7u + static_cast<unsigned>(dp->rank()));
  std::uniform_int_distribution<int32_t> tok(0, 255);
  std::vector<int32_t> ids(static_cast<std::size_t>(a.rows * a.seq)), tgt(ids.size());
  for (int s = 0; s <= a.steps; ++s) {
    for (auto& x : ids) x = tok(gen);
    for (auto& x : tgt) x = tok(gen);
    const Tensor ti = Tensor::from_vector_i32({a.rows, a.seq}, ids), tt = Tensor::from_vector_i32({a.rows, a.seq}, tgt);
    for (Variant& v : vs) one_step(v, dp, a, ti, tt, s > 0);  // step 0: warm-up
  }
  std::vector<Row> rows;
  for (Variant& v : vs) {
    // Max over ranks of the medians (hidden: min, the worst rank).
    Tensor t = Tensor::from_vector({4}, {static_cast<float>(median(v.step_ms)), static_cast<float>(median(v.comm_ms)),
                                         static_cast<float>(median(v.exposed_ms)),
                                         static_cast<float>(-median(v.hidden))});
    dp->all_reduce(t, ReduceOp::Max);
    const float* x = t.data<float>();
    rows.push_back({x[0], x[1], x[2], -x[3], v.zero->buckets().num_buckets()});
  }
  return rows;
}

}  // namespace

int main(int argc, char** argv) {
  auto world = init_world();
  const bool root = world->rank() == 0;
  int rc = 0;
  try {
    const Args a = parse(argc, argv);
    auto be = make_cpu_backend();
    if (root)
      std::printf("# pp3d dp_overlap_bench: dp %d, ZeRO stage %d, GPT L%lld C%lld T%lld, %lld rows/rank, %d steps "
                  "(median, max over ranks; the 4 variants' steps interleaved)\n"
                  "# %-9s %7s %7s %8s %9s %9s %11s %7s %7s\n",
                  world->size(), a.stage, static_cast<long long>(a.layers), static_cast<long long>(a.hidden),
                  static_cast<long long>(a.seq), static_cast<long long>(a.rows), a.steps, "bucketMB", "buckets",
                  "thread", "overlap", "step_ms", "comm_ms", "exposed_ms", "hidden", "saved");
    for (double mb : a.buckets) {
      const std::vector<Row> r = run(*be, world, a, mb);  // thread on: off, on; thread off: off, on
      if (!root) continue;
      for (int i = 0; i < 4; ++i) {
        const Row& x = r[static_cast<std::size_t>(i)];
        const Row& off = r[static_cast<std::size_t>(i / 2 * 2)];
        std::printf("  %-9g %7d %7s %8s %9.2f %9.2f %11.2f %7.3f %7s\n", mb, x.buckets, i < 2 ? "on" : "off",
                    i % 2 ? "on" : "off", x.step_ms, x.comm_ms, x.exposed_ms, x.hidden,
                    i % 2 ? fmt::format("{:.3f}", off.exposed_ms > 0 ? 1.0 - x.exposed_ms / off.exposed_ms : 0.0).c_str()
                          : "-");
      }
      std::fflush(stdout);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "[rank %d] %s\n", world->rank(), e.what());
    rc = 1;
  }
  finalize_world();
  return rc;
}
