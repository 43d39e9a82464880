// Trainer failure handling and metrics: a NaN loss stops before the update
// (naming the step and the last checkpoint) or is skipped under --fp16;
// SIGTERM during run() saves a checkpoint at the next step boundary and
// returns; metrics.jsonl's FLOPs and time-split fields are consistent.
#include <catch2/catch.hpp>

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "pp3d/core/error.h"
#include "pp3d/train/checkpoint.h"
#include "pp3d/train/trainer.h"

namespace fs = std::filesystem;
using namespace pp3d;

namespace {

TrainConfig small(const std::string& name) {
  TrainConfig c;
  c.num_layers = 1;
  c.hidden_size = 32;
  c.num_heads = 2;
  c.seq_len = 16;
  c.micro_batch_size = 4;
  c.max_steps = 4;
  c.warmup_steps = 1;
  c.eval_batches = 1;
  c.eval_interval = 0;
  c.quiet = true;
  c.output_dir = (fs::temp_directory_path() / ("pp3d_failure_" + std::to_string(::getpid()) + "_" + name)).string();
  fs::remove_all(c.output_dir);
  return c;
}

struct EnvVar {  // sets a variable for one scope
  std::string name;
  EnvVar(const char* n, const char* v) : name(n) { ::setenv(n, v, 1); }
  ~EnvVar() { ::unsetenv(name.c_str()); }
};

std::vector<nlohmann::json> read_metrics(const std::string& dir) {
  std::vector<nlohmann::json> rows;
  std::ifstream in(dir + "/metrics.jsonl");
  std::string line;
  while (std::getline(in, line)) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

std::vector<float> all_weights(Trainer& t) {
  std::vector<float> w;
  for (Parameter* p : t.model().parameters()) {
    const auto v = p->value.to_vector();
    w.insert(w.end(), v.begin(), v.end());
  }
  return w;
}

int g_test_handler_calls = 0;
extern "C" void test_handler(int) { ++g_test_handler_calls; }

}  // namespace

TEST_CASE("Trainer: a NaN loss stops before the update, naming the step and the last checkpoint", "[trainer][failure]") {
  TrainConfig c = small("nan");
  c.save_interval = 2;
  std::string what = "<no error>";
  std::vector<float> poisoned;
  int64_t steps_done = -1;
  {
    const EnvVar nan("PP3D_TEST_NAN_AT_STEP", "3");
    Trainer t(c);
    try {
      t.run();
    } catch (const Error& e) {
      what = e.what();
    }
    poisoned = all_weights(t);
    steps_done = t.step();
  }
  INFO(what);
  CHECK(what.find("loss is NaN at step 3") != std::string::npos);
  CHECK(what.find("the weights were not updated") != std::string::npos);
  CHECK(what.find("last checkpoint: '" + checkpoint_dir_name(c.output_dir, 2) + "'") != std::string::npos);
  CHECK(what.find("--lr") != std::string::npos);
  CHECK(steps_done == 2);
  CHECK(read_checkpoint_info(checkpoint_dir_name(c.output_dir, 2)).step == 2);
  CHECK_FALSE(fs::exists(checkpoint_dir_name(c.output_dir, 3)));
  // The same run without the NaN, stopped after 2 steps: bitwise the weights the failed run kept.
  Trainer clean(small("nan_ref"));
  clean.train_step();
  clean.train_step();
  CHECK(all_weights(clean) == poisoned);
  // Without a checkpoint the message says so.
  TrainConfig d = small("nan_none");
  const EnvVar nan("PP3D_TEST_NAN_AT_STEP", "1");
  Trainer t2(d);
  try {
    t2.train_step();
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("last checkpoint: none") != std::string::npos);
  }
}

TEST_CASE("Trainer: under --fp16 a NaN loss skips the step and the run goes on", "[trainer][failure][mixed]") {
  TrainConfig c = small("nan_fp16");
  c.fp16 = true;
  const EnvVar nan("PP3D_TEST_NAN_AT_STEP", "2");
  Trainer t(c);
  t.run();
  const auto rows = read_metrics(c.output_dir);
  REQUIRE(rows.size() == 4);
  CHECK(rows[1]["skipped"] == true);
  CHECK(rows[1]["loss"].is_null());  // NaN in JSON
  CHECK(rows[2]["skipped"] == false);
  CHECK(std::isfinite(rows[3]["loss"].get<double>()));
}

TEST_CASE("Trainer: SIGTERM during run() saves a checkpoint at the step boundary and returns", "[trainer][failure]") {
  TrainConfig c = small("sigterm");
  c.max_steps = 100000;  // never ends on its own
  struct sigaction mine {}, before {}, after {};
  mine.sa_handler = test_handler;
  sigemptyset(&mine.sa_mask);
  REQUIRE(sigaction(SIGTERM, &mine, &before) == 0);
  Trainer t(c);
  std::thread killer([&] {
    const auto t0 = std::chrono::steady_clock::now();
    while (read_metrics(c.output_dir).size() < 2 && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(30))
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    ::kill(::getpid(), SIGTERM);
  });
  const StepMetrics last = t.run();
  killer.join();
  sigaction(SIGTERM, nullptr, &after);
  sigaction(SIGTERM, &before, nullptr);
  CHECK(after.sa_handler == test_handler);  // run() restored the handler it found
  CHECK(g_test_handler_calls == 0);         // ... and the signal went to run()'s handler
  CHECK(t.stop_signal() == SIGTERM);
  CHECK(t.step() >= 2);
  CHECK(t.step() < 100000);
  CHECK(last.step + 1 == t.step());
  const std::string dir = checkpoint_dir_name(c.output_dir, t.step());
  REQUIRE(fs::exists(dir + "/manifest.json"));
  CHECK(read_checkpoint_info(dir).step == t.step());
  CHECK(read_metrics(c.output_dir).size() == static_cast<std::size_t>(t.step()));
  // The checkpoint continues: --resume-from latest for two more steps.
  TrainConfig r = c;
  r.max_steps = t.step() + 2;
  r.resume_from = "latest";
  Trainer resumed(r);
  CHECK(resumed.step() == t.step());
  resumed.run();
  CHECK(resumed.stop_signal() == 0);
  CHECK(read_metrics(c.output_dir).front()["step"] == t.step() + 1);
}

TEST_CASE("Trainer: metrics.jsonl carries model FLOPs, TFLOP/s, MFU (with a peak) and a consistent time split",
          "[trainer][flops]") {
  TrainConfig c = small("flops");
  c.max_steps = 3;
  c.peak_tflops = 0.5;
  Trainer(c).run();
  auto rows = read_metrics(c.output_dir);
  REQUIRE(rows.size() == 3);
  // Hand count for L 1, C 32, F 128, Vp 256, T 16: matmul weights 32*96 + 32*32 + 2*32*128 + 256*32 = 20480;
  // per token 6 * 20480 + 12 * 1 * 16 * 32; 4 rows x 16 tokens per step.
  const double flops = (6.0 * 20480 + 12.0 * 16 * 32) * 4 * 16;
  for (const auto& j : rows) {
    CHECK(j["model_flops"].get<double>() == Approx(flops).epsilon(1e-12));
    CHECK(j["gemm_dtype"] == "f32");  // f32 run: the peak (here the flag) is the fp32 one
    CHECK(j["attention_impl"] == "cpu");
    const double step_ms = j["step_ms"].get<double>();
    CHECK(j["tflops"].get<double>() == Approx(flops / (step_ms * 1e-3) * 1e-12).epsilon(1e-6));
    CHECK(j["mfu"].get<double>() == Approx(j["tflops"].get<double>() / 0.5).epsilon(1e-9));
    double parts = 0.0;
    for (const char* k : {"compute_ms", "bubble_ms", "grad_sync_ms", "optimizer_ms", "data_wait_ms"}) {
      CHECK(j[k].get<double>() >= 0.0);
      parts += j[k].get<double>();
    }
    CHECK(j["compute_ms"].get<double>() > 0.0);
    CHECK(j["bubble_ms"].get<double>() == 0.0);  // pp = 1
    CHECK(parts <= step_ms + 1e-3);
    // The split covers most of the step; steps here take a few ms, so allow 5 ms of
    // scheduling noise on a loaded machine (threads not yet running are not timed).
    CHECK(parts >= 0.5 * step_ms - 5.0);
  }
  c.peak_tflops = 0.0;  // CPU: no known peak, no mfu
  Trainer(c).run();
  rows = read_metrics(c.output_dir);
  CHECK_FALSE(rows.front().contains("mfu"));
}
