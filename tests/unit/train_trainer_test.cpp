// Trainer: loss falls, gradient accumulation is layout-independent, runs are
// bitwise reproducible, init-from loads a checkpoint, bad configs are rejected.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "pp3d/core/error.h"
#include "pp3d/train/interop.h"
#include "pp3d/train/trainer.h"

namespace fs = std::filesystem;
using namespace pp3d;

namespace {

TrainConfig tiny() {
  TrainConfig c;
  c.num_layers = 2;
  c.hidden_size = 32;
  c.num_heads = 2;
  c.seq_len = 32;
  c.micro_batch_size = 8;
  c.max_steps = 30;
  c.lr = 3e-3f;
  c.min_lr = 3e-4f;
  c.warmup_steps = 5;
  c.eval_batches = 2;
  c.eval_interval = 10;
  c.quiet = true;
  return c;
}

std::string tmp(const std::string& name) {
  return (fs::temp_directory_path() / ("pp3d_trainer_" + std::to_string(::getpid()) + "_" + name)).string();
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

}  // namespace

TEST_CASE("Trainer: loss on the embedded corpus falls from ln(256)", "[trainer]") {
  Trainer t(tiny());
  CHECK(t.unigram_entropy_bits() > 3.0);
  std::vector<double> losses;
  for (int i = 0; i < 30; ++i) {
    const StepMetrics m = t.train_step();
    CHECK(m.step == i);
    CHECK(std::isfinite(m.grad_norm));
    losses.push_back(m.loss);
  }
  // Small-std init gives nearly uniform logits: the first loss is about ln(256).
  CHECK(losses[0] == Approx(std::log(256.0)).margin(0.1));
  double tail = 0.0;
  for (int i = 25; i < 30; ++i) tail += losses[i] / 5.0;
  CHECK(tail < 0.75 * losses[0]);
  CHECK(t.evaluate() < 0.8 * std::log(256.0));
}

TEST_CASE("Trainer: gradient accumulation equals one big micro-batch", "[trainer]") {
  TrainConfig a = tiny();
  a.num_layers = 1;
  a.seq_len = 16;
  a.micro_batch_size = 8;
  a.global_batch_size = 8;
  TrainConfig b = a;
  b.micro_batch_size = 2;  // 4 micro-batches
  Trainer ta(a), tb(b);
  for (int i = 0; i < 4; ++i) {
    const StepMetrics ma = ta.train_step(), mb = tb.train_step();
    CHECK(mb.loss == Approx(ma.loss).epsilon(1e-5));
    CHECK(mb.grad_norm == Approx(ma.grad_norm).epsilon(1e-4));
  }
  const auto wa = ta.model().find_parameter("h.0.mlp.c_fc.weight")->value.to_vector();
  const auto wb = tb.model().find_parameter("h.0.mlp.c_fc.weight")->value.to_vector();
  double max_diff = 0.0;
  for (std::size_t i = 0; i < wa.size(); ++i) max_diff = std::max(max_diff, double(std::fabs(wa[i] - wb[i])));
  CHECK(max_diff < 1e-5);
}

TEST_CASE("Trainer: two runs with the same seed write identical metrics", "[trainer]") {
  TrainConfig c = tiny();
  c.num_layers = 1;
  c.max_steps = 6;
  c.warmup_steps = 2;
  c.eval_interval = 3;
  c.global_batch_size = 16;
  auto read_metrics = [](const std::string& dir) {
    std::vector<nlohmann::json> rows;
    std::ifstream in(dir + "/metrics.jsonl");
    std::string line;
    while (std::getline(in, line)) rows.push_back(nlohmann::json::parse(line));
    return rows;
  };
  c.output_dir = tmp("run1");
  Trainer(c).run();
  c.output_dir = tmp("run2");
  Trainer(c).run();
  c.output_dir = tmp("run3");
  c.seed = 99;
  Trainer(c).run();
  const auto r1 = read_metrics(tmp("run1")), r2 = read_metrics(tmp("run2")), r3 = read_metrics(tmp("run3"));
  REQUIRE(r1.size() == 6);
  REQUIRE(r2.size() == 6);
  for (std::size_t i = 0; i < r1.size(); ++i) {
    CHECK(r1[i]["step"] == i + 1);
    for (const char* k : {"step", "loss", "lr", "grad_norm"}) CHECK(r1[i][k] == r2[i][k]);
    CHECK(r1[i].contains("tokens_per_s"));
    CHECK(r1[i].contains("val_loss") == (i == 2 || i == 5));
  }
  CHECK(r1[5]["val_loss"] == r2[5]["val_loss"]);
  CHECK(r1[0]["loss"] != r3[0]["loss"]);  // another seed is another run
  for (const char* d : {"run1", "run2", "run3"}) fs::remove_all(tmp(d));
}

TEST_CASE("Trainer: --init-from loads an llm.c checkpoint, --export-safetensors writes one", "[trainer]") {
  TrainConfig c = tiny();
  c.num_layers = 1;
  c.max_steps = 2;
  c.warmup_steps = 0;
  c.seed = 5;
  Trainer src(c);
  const std::string ckpt = tmp("init.bin");
  save_llmc_checkpoint(ckpt, src.model_config(), src.model().parameters());
  TrainConfig d = c;
  d.seed = 6;  // different init, overwritten by the checkpoint
  d.init_from = ckpt;
  d.num_layers = 7;  // ignored: the checkpoint's shape wins
  d.output_dir = tmp("init_out");
  d.export_safetensors = tmp("final.safetensors");
  Trainer t(d);
  CHECK(t.model_config().num_layers == 1);
  for (Parameter* p : src.model().parameters())
    CHECK(p->value.to_vector() == t.model().find_parameter(p->name)->value.to_vector());
  t.run();
  CHECK(fs::file_size(d.export_safetensors) > 8);
  fs::remove(ckpt);
  fs::remove(d.export_safetensors);
  fs::remove_all(d.output_dir);
}

TEST_CASE("TrainConfig: inconsistent settings are rejected naming the flag", "[trainer]") {
  TrainConfig c = tiny();
  c.hidden_size = 30;
  c.num_heads = 4;
  CHECK_THAT(error_of([&] { Trainer t(c); }), Catch::Contains("--hidden-size 30 is not divisible by --num-heads 4"));
  c = tiny();
  c.global_batch_size = 12;
  CHECK_THAT(error_of([&] { c.validate(); }), Catch::Contains("--global-batch-size 12 is not a multiple"));
  c = tiny();
  c.device = "tpu";
  CHECK_THAT(error_of([&] { c.validate(); }), Catch::Contains("--device 'tpu'"));
  c = tiny();
  c.vocab_size = 100;  // byte data needs 256
  CHECK_THAT(error_of([&] { Trainer t(c); }), Catch::Contains("raise --vocab-size"));
  if (!cuda_compiled()) CHECK_THAT(error_of([] { resolve_device("cuda"); }), Catch::Contains("no CUDA backend"));
  CHECK(resolve_device("cpu").is_cpu());
}

TEST_CASE("Trainer: trains on llm.c shards and text files", "[trainer]") {
  const fs::path dir = tmp("shard_dir");
  fs::create_directories(dir);
  std::vector<uint16_t> train, val;
  for (int i = 0; i < 4000; ++i) train.push_back(static_cast<uint16_t>((i * 7) % 300));
  for (int i = 0; i < 600; ++i) val.push_back(static_cast<uint16_t>((i * 7) % 300));
  write_llmc_shard((dir / "d_train_000.bin").string(), train);
  write_llmc_shard((dir / "d_val_000.bin").string(), val);
  TrainConfig c = tiny();
  c.num_layers = 1;
  c.max_steps = 3;
  c.warmup_steps = 0;
  c.data = dir.string();
  c.vocab_size = 300;
  Trainer t(c);
  CHECK(t.model_config().vocab_size == 300);
  CHECK(t.data().dataset().train.to_vector() == std::vector<uint32_t>(train.begin(), train.end()));
  for (int i = 0; i < 3; ++i) CHECK(std::isfinite(t.train_step().loss));
  c.vocab_size = 200;  // tokens up to 299 do not fit
  CHECK_THAT(error_of([&] { Trainer bad(c); }), Catch::Contains("d_train_000.bin") && Catch::Contains("byte offset"));

  const fs::path text = dir / "corpus.txt";
  {
    std::ofstream o(text);
    for (int i = 0; i < 200; ++i) o << "the quick brown fox jumps over the lazy dog " << i << "\n";
  }
  c = tiny();
  c.num_layers = 1;
  c.max_steps = 2;
  c.warmup_steps = 0;
  c.data = text.string();
  Trainer tt(c);
  CHECK(tt.model_config().vocab_size == 256);
  CHECK(tt.data().dataset().val.size() == static_cast<int64_t>(fs::file_size(text) / 10));
  fs::remove_all(dir);
}

TEST_CASE("Trainer: --bf16 / --fp16 runs follow the fp32 losses, metrics carry the loss scale", "[trainer][mixed]") {
  // Per-step losses of run() from metrics.jsonl (evaluation included: 16-bit forward).
  auto run = [](TrainConfig c, const std::string& name) {
    c.max_steps = 10;
    c.warmup_steps = 2;
    c.eval_interval = 5;
    c.seq_len = 16;
    c.micro_batch_size = 4;
    c.eval_batches = 1;
    c.output_dir = tmp(name);
    Trainer t(c);
    const StepMetrics last = t.run();
    CHECK(last.val_loss.has_value());
    CHECK(std::isfinite(last.val_loss.value_or(NAN)));
    std::vector<nlohmann::json> rows;
    std::ifstream in(fs::path(c.output_dir) / "metrics.jsonl");
    for (std::string line; std::getline(in, line);) rows.push_back(nlohmann::json::parse(line));
    fs::remove_all(c.output_dir);
    return rows;
  };
  TrainConfig c = tiny();
  const auto f32 = run(c, "f32");
  TrainConfig b = c;
  b.bf16 = true;
  const auto bf = run(b, "bf16");
  TrainConfig h = c;
  h.fp16 = true;
  h.loss_scaler.scale_window = 4;  // the scale grows during the run
  const auto fp = run(h, "fp16");
  REQUIRE(f32.size() == 10);
  REQUIRE(bf.size() == 10);
  REQUIRE(fp.size() == 10);
  CHECK_FALSE(f32[0].contains("loss_scale"));
  for (std::size_t i = 0; i < 10; ++i) {
    const double ref = f32[i]["loss"].get<double>();
    INFO("step " << i << " f32 " << ref << " bf16 " << bf[i]["loss"] << " fp16 " << fp[i]["loss"]);
    CHECK(std::fabs(bf[i]["loss"].get<double>() - ref) <= 1e-2 * ref);
    CHECK(std::fabs(fp[i]["loss"].get<double>() - ref) <= 1e-2 * ref);
    CHECK(bf[i]["loss_scale"].get<double>() == 1.0);
    CHECK_FALSE(bf[i]["skipped"].get<bool>());
    CHECK_FALSE(fp[i]["skipped"].get<bool>());  // f32 gradients: no overflow on this run
    // DeepSpeed window rule: x2 after every 4 clean steps, from 2^16.
    CHECK(fp[i]["loss_scale"].get<double>() == std::ldexp(65536.0, static_cast<int>(i / 4)));
  }
  for (const auto* rows : {&bf, &fp}) CHECK((*rows)[9]["loss"].get<double>() < 0.9 * (*rows)[0]["loss"].get<double>());
}

TEST_CASE("TrainConfig: --bf16 with --fp16 is rejected", "[trainer][mixed]") {
  TrainConfig c = tiny();
  c.bf16 = c.fp16 = true;
  CHECK_THAT(error_of([&] { c.validate(); }), Catch::Contains("--bf16 and --fp16 are mutually exclusive"));
  c.bf16 = false;
  c.loss_scaler.scale_window = 0;
  CHECK_THAT(error_of([&] { c.validate(); }), Catch::Contains("--loss-scale-window must be >= 1"));
}

TEST_CASE("TrainConfig: --grad-dtype param needs --bf16 / --fp16", "[trainer][mixed][grad16]") {
  TrainConfig c = tiny();
  c.grad_dtype = "param";
  CHECK_THAT(error_of([&] { c.validate(); }), Catch::Contains("it needs --bf16 or --fp16"));
  c.grad_dtype = "bf16";
  CHECK_THAT(error_of([&] { c.validate(); }), Catch::Contains("--grad-dtype must be f32 or param"));
  c.grad_dtype = "param";
  c.bf16 = true;
  CHECK_NOTHROW(c.validate());
}

TEST_CASE("TrainConfig: --activation-dtype param needs --bf16 / --fp16", "[trainer][mixed][act16]") {
  TrainConfig c = tiny();
  c.activation_dtype = "param";
  CHECK_THAT(error_of([&] { c.validate(); }), Catch::Contains("--activation-dtype param stores activations"));
  c.activation_dtype = "f16";
  CHECK_THAT(error_of([&] { c.validate(); }), Catch::Contains("--activation-dtype must be f32 or param"));
  c.activation_dtype = "param";
  c.fp16 = true;
  CHECK_NOTHROW(c.validate());
}

TEST_CASE("TrainConfig: --compute-dtype param needs --bf16 / --fp16, --bf16 computes in 16 bits unless "
          "--compute-dtype f32 (metrics say which)",
          "[trainer][mixed][gemm16]") {
  TrainConfig c = tiny();
  CHECK(c.compute_dtype == "auto");
  CHECK_FALSE(c.compute16());  // auto with f32 parameters: f32
  c.compute_dtype = "param";
  CHECK_THAT(error_of([&] { c.validate(); }), Catch::Contains("--compute-dtype param runs the GEMMs"));
  c.compute_dtype = "bf16";
  CHECK_THAT(error_of([&] { c.validate(); }), Catch::Contains("--compute-dtype must be auto, f32 or param"));
  c.bf16 = true;
  c.max_steps = 2;
  c.warmup_steps = 0;
  // The first metrics row of a run with this --compute-dtype.
  auto first_row = [&](const std::string& compute) {
    TrainConfig r = c;
    r.compute_dtype = compute;
    r.output_dir = tmp("compute_" + compute);
    Trainer(r).run();
    std::ifstream in(r.output_dir + "/metrics.jsonl");
    std::string line;
    REQUIRE(std::getline(in, line));
    fs::remove_all(r.output_dir);
    return nlohmann::json::parse(line);
  };
  for (const std::string compute : {"param", "auto"}) {  // --bf16 alone (auto) is 16-bit compute, as in Megatron
    INFO("--compute-dtype " << compute);
    const auto row = first_row(compute);
    CHECK(row["gemm_dtype"] == "bf16");
    CHECK(row["attention_impl"] == "cpu_emulation_16bit");  // 16-bit q/k/v, P, O
  }
  const auto f32 = first_row("f32");  // bf16 parameters widened into f32 GEMMs
  CHECK(f32["gemm_dtype"] == "f32");
  CHECK(f32["attention_impl"] != "cpu_emulation_16bit");
}

TEST_CASE("Trainer: --fp16 checkpoints carry the loss scaler state", "[trainer][mixed]") {
  TrainConfig c = tiny();
  c.fp16 = true;
  c.loss_scaler.scale_window = 2;  // x2 after steps 2 and 4
  c.max_steps = 3;
  c.warmup_steps = 0;
  c.seq_len = 8;
  c.micro_batch_size = 2;
  c.eval_batches = 1;
  c.save_interval = 2;
  c.output_dir = tmp("fp16_ckpt");
  {
    Trainer t(c);
    t.run();
    CHECK(t.mixed_precision().loss_scale() == 131072.0f);
  }
  TrainConfig r = c;
  r.resume_from = (fs::path(c.output_dir) / "checkpoint-2").string();
  Trainer t(r);
  CHECK(t.step() == 2);
  CHECK(t.mixed_precision().loss_scale() == 131072.0f);  // not the initial 65536
  fs::remove_all(c.output_dir);
}
