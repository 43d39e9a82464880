// Trainer observability helpers: the progress line (ETA arithmetic, width) and
// the model-FLOPs formula against a hand count (lib/train/trainer_progress.h,
// trainer_flops.h).
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "train/trainer_flops.h"
#include "train/trainer_progress.h"

using namespace pp3d;
using namespace pp3d::detail;

TEST_CASE("progress: durations and ETA", "[trainer][progress]") {
  CHECK(format_duration(0) == "0:00");
  CHECK(format_duration(7.4) == "0:07");
  CHECK(format_duration(754) == "12:34");
  CHECK(format_duration(3723) == "1:02:03");
  CHECK(format_duration(-1) == "--:--");
  CHECK(format_duration(NAN) == "--:--");
  ProgressInfo p;
  p.total = 400;
  p.first_step = 100;  // resumed at 100
  p.step = 150;
  p.elapsed_s = 25.0;  // 50 steps in 25 s: 0.5 s per step, 250 steps left
  CHECK(progress_eta_seconds(p) == Approx(125.0));
  p.step = 100;
  CHECK(std::isnan(progress_eta_seconds(p)));  // nothing done in this run yet
  p.step = 400;
  CHECK(progress_eta_seconds(p) == 0.0);
}

TEST_CASE("progress: the line fits the terminal and the bar shows the fraction done", "[trainer][progress]") {
  ProgressInfo p;
  p.step = 30;
  p.total = 120;
  p.loss = 2.31414;
  p.tokens_per_s = 51234.4;
  p.elapsed_s = 42.0;  // 1.4 s per step, 90 left: 126 s
  for (int width : {200, 120, 80, 60, 40, 20, 1}) {
    const std::string line = format_progress_line(p, width);
    INFO(width << ": '" << line << "'");
    CHECK(static_cast<int>(line.size()) <= std::max(0, width - 1));
  }
  const std::string line = format_progress_line(p, 120);
  CHECK(line.rfind("step 30/120 [", 0) == 0);
  CHECK(line.find("loss 2.3141") != std::string::npos);
  CHECK(line.find("51234 tok/s") != std::string::npos);
  CHECK(line.find("0:42 elapsed") != std::string::npos);
  CHECK(line.find("ETA 2:06") != std::string::npos);
  const auto open = line.find('['), close = line.find(']');
  const std::string bar = line.substr(open + 1, close - open - 1);
  const auto filled = std::count(bar.begin(), bar.end(), '#');
  CHECK(static_cast<int>(line.size()) == 119);  // the bar takes the room left
  CHECK(filled == static_cast<long>(std::floor(bar.size() * 0.25)));
  CHECK(std::count(bar.begin(), bar.end(), '-') == static_cast<long>(bar.size()) - filled);
  // Too narrow for a 10-cell bar: the text without one.
  const std::string narrow = format_progress_line(p, 70);
  CHECK(narrow.find('[') == std::string::npos);
  CHECK(narrow.rfind("step 30/120 loss 2.3141", 0) == 0);
}

TEST_CASE("model FLOPs per token: 6 x matmul weights + 12 L T C, by hand", "[trainer][flops]") {
  GptConfig c;
  c.num_layers = 2;
  c.hidden_size = 32;
  c.num_heads = 4;
  c.vocab_size = 256;  // padded: 256
  c.max_seq_len = 16;
  // Per block: qkv 32x96, attention proj 32x32, fc 32x128, fc proj 128x32; head 256x32.
  const int64_t block = 32 * 96 + 32 * 32 + 32 * 128 + 128 * 32;
  CHECK(matmul_parameters(c) == 2 * block + 256 * 32);
  // Forward: 2 FLOPs per weight per token; QK^T and AV: 2 * (2 * T * C) per layer. Backward: 2 x forward.
  const double forward = 2.0 * (2 * block + 256 * 32) + 2 * (2.0 * 2 * 16 * 32);
  CHECK(model_flops_per_token(c, 16) == Approx(3.0 * forward).epsilon(1e-12));
  c.tied_embeddings = false;  // a separate lm_head: the same GEMM
  CHECK(matmul_parameters(c) == 2 * block + 256 * 32);
  c.vocab_size = 50257;       // padded to 50304
  CHECK(matmul_parameters(c) == 2 * block + 50304 * 32);
}

TEST_CASE("peak TFLOP/s: --peak-tflops wins, known GPUs, nothing on CPU", "[trainer][flops]") {
  CHECK(known_peak_tflops("NVIDIA H100 80GB HBM3", true) == Approx(989.0));
  CHECK(known_peak_tflops("NVIDIA H100 PCIe", true) == Approx(756.0));
  CHECK(known_peak_tflops("NVIDIA A100-SXM4-80GB", false) == Approx(19.5));
  CHECK_FALSE(known_peak_tflops("Some Future GPU", true).has_value());
  CHECK_FALSE(peak_tflops_for(Device::cpu(), true, 0.0).has_value());
  CHECK(peak_tflops_for(Device::cpu(), false, 0.15) == Approx(0.15));
}

TEST_CASE("peak TFLOP/s: the GPU model from the NVIDIA driver's /proc files", "[trainer][flops]") {
  namespace fs = std::filesystem;
  const fs::path root = fs::temp_directory_path() / ("pp3d_gpus_" + std::to_string(::getpid()));
  fs::remove_all(root);
  CHECK(local_gpu_model(root.string()).empty());  // no driver
  auto gpu = [&](const char* bus, const char* model) {
    fs::create_directories(root / bus);
    std::ofstream(root / bus / "information") << "Model: \t\t " << model << "\nIRQ:   \t\t 42\n";
  };
  gpu("0000:18:00.0", "NVIDIA H100 80GB HBM3");
  gpu("0000:2a:00.0", "NVIDIA H100 80GB HBM3");
  CHECK(local_gpu_model(root.string()) == "NVIDIA H100 80GB HBM3");
  CHECK(known_peak_tflops(local_gpu_model(root.string()), true) == Approx(989.0));
  gpu("0000:3a:00.0", "NVIDIA A100-SXM4-80GB");  // mixed models: unknown
  CHECK(local_gpu_model(root.string()).empty());
  fs::remove_all(root);
}
