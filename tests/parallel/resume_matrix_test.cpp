// Run under mpirun -n 8: the cross-layout resume matrix of issue 9 with the
// Trainer API (DESIGN.md §1 and §2 "Checkpoints"). An uninterrupted 20-step run
// of the tiny model at (dp, tp, pp) = (2, 2, 2) with ZeRO-1 saves its step-10
// checkpoint (parameters + AdamW state) on the way; that checkpoint is resumed
//   (a) at (1, 4, 2) with ZeRO-0 (sharded Adam state -> one replica per TP slice),
//   (b) at (4, 1, 2) with ZeRO-3 (parameters sharded over 4 DP ranks),
//   (c) at (2, 2, 2) with ZeRO-1, the saving layout (bitwise continuation),
// and each continues to step 20. Steps 11..20's losses and grad norms and the
// final validation loss must match the uninterrupted (2, 2, 2) run and the
// serial Trainer (LocalCommunicator on rank 0) within 1e-5 relative; (c) must
// match the uninterrupted run exactly.
// Resolution check (the test can fail): resume (a) once more with the loaded
// Adam m / v wiped to zero (as if the optimizer state had not been loaded; the
// step counter and the weights are kept); its losses must then miss the
// uninterrupted run by far more than the tolerance.
// `--arch llama` runs the same matrix on pp3d::Llama.
// Prints the measured worst differences on rank 0; exits non-zero if any rank failed.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "parallel/tp_test_util.h"
#include "pp3d/comm/bootstrap.h"
#include "pp3d/comm/collectives_util.h"
#include "pp3d/comm/local_communicator.h"
#include "pp3d/core/error.h"
#include "pp3d/parallel/zero_optimizer.h"
#include "pp3d/train/checkpoint.h"
#include "pp3d/train/trainer.h"

using namespace pp3d;
namespace fs = std::filesystem;

namespace {

constexpr int kSteps = 20, kSaveAt = 10;
constexpr double kTol = 1e-5;

double rel(double a, double b) { return std::fabs(a - b) / std::max(std::fabs(b), 1e-30); }

// "llama" with --arch llama (argv): the same matrix for pp3d::Llama (4 kv heads: tp 4 divides them).
std::string g_arch = "gpt2";

// L4 C64 H4 T16 (tp 4 divides the heads and the MLP), byte vocabulary, global batch 8.
TrainConfig tiny_run() {
  TrainConfig c;
  c.arch = g_arch;
  c.num_layers = 4;
  c.hidden_size = 64;
  c.num_heads = 4;
  c.seq_len = 16;
  c.micro_batch_size = 2;
  c.global_batch_size = 8;
  c.max_steps = kSteps;
  c.warmup_steps = 4;
  c.lr = 3e-3f;
  c.min_lr = 3e-4f;
  c.grad_clip = 1.0f;  // active early on
  c.eval_interval = 0;
  c.eval_batches = 2;
  c.quiet = true;
  return c;
}

struct Trajectory {
  std::vector<double> loss;      // steps 1..kSteps (index s = step s + 1)
  std::vector<double> grad_norm;
  double val_loss = NAN;         // after the last step
};

struct Case {
  const char* name;
  int tp, pp, zero;
  bool wipe_adam;  // the resolution check
};

// Resumes `ckpt` in the case's layout on `world` and trains to kSteps.
Trajectory resume_run(const Case& c, const std::string& ckpt, const std::shared_ptr<Communicator>& world) {
  TrainConfig r = tiny_run();
  r.tp = c.tp;
  r.pp = c.pp;
  r.zero_stage = c.zero;
  r.resume_from = ckpt;
  r.output_dir = ckpt + "-unused";  // train_step / evaluate never write it
  Trainer t(r, world);
  TP_EXPECT(t.step() == kSaveAt, "{}: resumed at step {}, want {}", c.name, t.step(), kSaveAt);
  TP_EXPECT(t.optimizer().step_count() == kSaveAt, "{}: Adam step count {}, want {}", c.name,
            t.optimizer().step_count(), kSaveAt);
  if (c.wipe_adam) {
    int wiped = 0;
    for (CheckpointTensor& ct : checkpoint_tensors(t.optimizer())) {
      const std::string& n = ct.name;
      const bool state = n.ends_with(".exp_avg") || n.ends_with(".exp_avg_sq");
      if (state && ct.data.numel() > 0) ct.data.zero_(), ++wiped;
    }
    TP_EXPECT(wiped > 0, "{}: no Adam state found to wipe", c.name);
  }
  Trajectory tr;
  tr.loss.assign(kSaveAt, NAN);
  tr.grad_norm.assign(kSaveAt, NAN);
  while (t.step() < kSteps) {
    const StepMetrics m = t.train_step();
    tr.loss.push_back(m.loss);
    tr.grad_norm.push_back(m.grad_norm);
  }
  tr.val_loss = t.evaluate();
  return tr;
}

struct Worst {
  double loss = 0, grad_norm = 0, val = 0;
};

// Worst relative differences of steps kSaveAt+1..kSteps.
Worst compare(const Trajectory& a, const Trajectory& ref) {
  Worst w;
  for (int s = kSaveAt; s < kSteps; ++s) {
    w.loss = std::max(w.loss, rel(a.loss[s], ref.loss[s]));
    w.grad_norm = std::max(w.grad_norm, rel(a.grad_norm[s], ref.grad_norm[s]));
  }
  w.val = rel(a.val_loss, ref.val_loss);
  // NaN never passes a <= comparison: make it fail loudly.
  if (!std::isfinite(w.loss) || !std::isfinite(w.grad_norm) || !std::isfinite(w.val))
    w = {INFINITY, INFINITY, INFINITY};
  return w;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::string(argv[1]) == "--arch") g_arch = argv[2];
  PP3D_CHECK(argc == 1 || argc == 3, "usage: resume_matrix_test [--arch gpt2|llama]");
  auto world = init_world();
  const int rank = world->rank();
  PP3D_CHECK(world->size() == 8, "resume_matrix_test needs 8 ranks, got {}", world->size());
  const double pid0 = broadcast_double(*world, static_cast<double>(getpid()), 0);
  const std::string dir = (fs::temp_directory_path() / fmt::format("pp3d_resume_matrix_{}", pid0)).string();

  // The serial Trainer (one process, plain AdamW through ZeRO-0 over dp 1), on rank 0 only.
  Trajectory serial;
  if (rank == 0) {
    Trainer t(tiny_run(), std::make_shared<LocalCommunicator>("serial", rank));
    while (t.step() < kSteps) {
      const StepMetrics m = t.train_step();
      serial.loss.push_back(m.loss);
      serial.grad_norm.push_back(m.grad_norm);
    }
    serial.val_loss = t.evaluate();
  }

  // The uninterrupted run at (2, 2, 2) ZeRO-1 through Trainer::run, saving checkpoint-10 (and -20).
  Trajectory full;
  {
    TrainConfig c = tiny_run();
    c.tp = 2;
    c.pp = 2;
    c.zero_stage = 1;
    c.output_dir = dir;
    c.save_interval = kSaveAt;
    Trainer t(c, world);
    TP_EXPECT(t.layout().dp == 2, "uninterrupted run: layout {}", t.layout().str());
    const StepMetrics last = t.run();
    full.val_loss = last.val_loss.value_or(NAN);
    if (rank == 0) {
      std::ifstream in(dir + "/metrics.jsonl");
      for (std::string line; std::getline(in, line);) {
        const auto j = nlohmann::json::parse(line);
        full.loss.push_back(j.at("loss").get<double>());
        full.grad_norm.push_back(j.at("grad_norm").get<double>());
      }
      TP_EXPECT(full.loss.size() == static_cast<std::size_t>(kSteps), "metrics.jsonl has {} lines, want {}",
                full.loss.size(), kSteps);
      full.loss.resize(kSteps, NAN);  // a short file fails above; keep the indexing below valid
      full.grad_norm.resize(kSteps, NAN);
    }
  }
  world->barrier();
  const std::string ckpt = dir + "/checkpoint-" + std::to_string(kSaveAt);
  TP_EXPECT(fs::exists(ckpt + "/manifest.json"), "no checkpoint at {}", ckpt);
  if (rank == 0) {
    const CheckpointInfo info = read_checkpoint_info(ckpt);
    TP_EXPECT(info.layout.tp == 2 && info.layout.pp == 2 && info.layout.dp == 2 && info.layout.zero_stage == 1,
              "checkpoint layout tp {} pp {} dp {} ZeRO {}", info.layout.tp, info.layout.pp, info.layout.dp,
              info.layout.zero_stage);
    // The uninterrupted (2, 2, 2) run itself equals the serial run.
    const Worst w = compare(full, serial);
    double w_all = 0;
    for (int s = 0; s < kSteps; ++s) w_all = std::max(w_all, rel(full.loss[s], serial.loss[s]));
    TP_EXPECT(w_all <= kTol && w.val <= kTol, "(2,2,2) uninterrupted vs serial: loss {:.3g}, val {:.3g}", w_all, w.val);
    std::printf("uninterrupted (2,2,2) ZeRO-1 vs serial, steps 1..%d: loss %.3g, grad norm (steps 11..20) %.3g, "
                "val loss %.3g\n", kSteps, w_all, w.grad_norm, w.val);
  }

  const Case cases[] = {{"(1,4,2) ZeRO-0", 4, 2, 0, false},
                        {"(4,1,2) ZeRO-3", 1, 2, 3, false},
                        {"(2,2,2) ZeRO-1", 2, 2, 1, false},
                        {"(1,4,2) ZeRO-0, Adam m/v wiped", 4, 2, 0, true}};
  for (const Case& c : cases) {
    const Trajectory tr = resume_run(c, ckpt, world);
    if (rank != 0) continue;
    const Worst vf = compare(tr, full), vs = compare(tr, serial);
    std::printf("resumed %-32s steps %d..%d vs uninterrupted (2,2,2): loss %.3g, grad norm %.3g, val loss %.3g | "
                "vs serial: loss %.3g, grad norm %.3g, val loss %.3g\n", c.name, kSaveAt + 1, kSteps, vf.loss,
                vf.grad_norm, vf.val, vs.loss, vs.grad_norm, vs.val);
    if (c.wipe_adam) {
      // Without the Adam state the continuation must be visibly different.
      TP_EXPECT(vf.loss > 100 * kTol, "{}: losses still within {:.3g} of the uninterrupted run: the test cannot "
                "tell a lost optimizer state", c.name, vf.loss);
      continue;
    }
    for (const auto& [w, what] : {std::pair{vf, "uninterrupted (2,2,2)"}, std::pair{vs, "serial"}}) {
      TP_EXPECT(w.loss <= kTol, "{}: step losses {:.3g} from the {} run", c.name, w.loss, what);
      TP_EXPECT(w.grad_norm <= kTol, "{}: grad norms {:.3g} from the {} run", c.name, w.grad_norm, what);
      TP_EXPECT(w.val <= kTol, "{}: final val loss {:.3g} from the {} run", c.name, w.val, what);
    }
    if (c.tp == 2 && c.zero == 1) {
      // Same layout: bitwise the uninterrupted run.
      TP_EXPECT(vf.loss == 0 && vf.grad_norm == 0 && vf.val == 0,
                "{}: same-layout resume is not bitwise (loss {:.3g}, grad norm {:.3g}, val {:.3g})", c.name, vf.loss,
                vf.grad_norm, vf.val);
    }
  }
  world->barrier();
  if (rank == 0) fs::remove_all(dir);
  const std::string name = "resume_matrix_test --arch " + g_arch;
  const int rc = pp3d::tptest::finish(*world, name.c_str());
  finalize_world();
  return rc;
}
