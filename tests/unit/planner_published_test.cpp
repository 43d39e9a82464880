// The planner against published large-scale GPT training runs
// (docs/data/published_runs.yaml): A100 (Narayanan et al. 2021 Table 1, Smith
// et al. 2022 MT-NLG, Korthikanti et al. 2022), H100 (NVIDIA NeMo 24.07 FP8
// GPT3, MosaicML llm-foundry MPT bf16/FP8), a held-out H100 set (llm-foundry's
// >= 128-GPU table, first evaluated after the model's terms were fixed), Llama
// on H100 (NeMo 24.07 Llama 2) and held-out Llama on H200 (torchtitan). Each
// set has its own gates on the mean and the worst absolute error of the
// predicted TFLOP/s per GPU (docs/PLANNER.md, "Validation"); a change to the
// time model or a preset that makes any set worse than its gate fails here.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>

#include "pp3d/plan/published.h"

using namespace pp3d;

TEST_CASE("planner vs published GPT training runs: per-GPU-family error gates", "[planner][published]") {
  const std::string path = std::string(PP3D_SOURCE_DIR) + "/docs/data/published_runs.yaml";
  const std::vector<PublishedRun> runs = load_published_runs(path);
  REQUIRE(runs.size() >= 52);
  const std::vector<PublishedComparison> rows = compare_published(runs);
  REQUIRE(rows.size() == runs.size());
  for (const PublishedComparison& r : rows) {
    INFO(r.run.name << ": published " << r.run.published << ", predicted " << r.predicted_tflops);
    CHECK(std::isfinite(r.error));
    CHECK(r.predicted.layout.gpus() == r.run.gpus);
    CHECK(r.predicted.layout.micro_batch >= 1);
  }
  INFO(published_table(rows));
  const auto a100 = rows_on(rows, {"a100"});
  const auto hopper = rows_on(rows, {"h100", "h200"});
  const auto held_out = rows_on(rows, {"h100", "h200"}, true);
  REQUIRE(a100.size() == 17);
  REQUIRE(hopper.size() >= 12);
  REQUIRE(held_out.size() >= 18);
  // Issue 20's gates. A100: 7.8% mean / 32.9% worst (MT-NLG 3360) before the
  // Hopper work; 6.2% / 28.5% now. H100: 10% / 20%; 8.2% / 18.1% now.
  CHECK(mean_abs_error(a100) <= 0.078);
  CHECK(max_abs_error(a100) <= 0.329);
  CHECK(mean_abs_error(hopper) <= 0.100);
  CHECK(max_abs_error(hopper) <= 0.200);
  // Held out (never used to choose a term): 8.5% mean / 23.6% worst when first
  // evaluated (MPT-1B on 512 GPUs; docs/PLANNER.md, "What remains").
  CHECK(mean_abs_error(held_out) <= 0.090);
  CHECK(max_abs_error(held_out) <= 0.240);
  // Llama (SwiGLU, GQA, untied head) is a set of its own, with the H100 gates:
  // NeMo's Llama 2 7B/13B/70B, 9.7% mean / 16.3% worst when added. Held out:
  // torchtitan's Llama 3.1 8B on H200, 8.9% / 9.1% when first evaluated.
  const auto llama = rows_on(rows, {"h100", "h200"}, false, ModelArch::Llama);
  const auto llama_held_out = rows_on(rows, {"h100", "h200"}, true, ModelArch::Llama);
  REQUIRE(llama.size() >= 3);
  REQUIRE(llama_held_out.size() >= 2);
  CHECK(mean_abs_error(llama) <= 0.100);
  CHECK(max_abs_error(llama) <= 0.200);
  CHECK(mean_abs_error(llama_held_out) <= 0.090);
  CHECK(max_abs_error(llama_held_out) <= 0.100);
}

TEST_CASE("published Llama rows: the Llama shape, its FLOPs and the tokens/s metric", "[planner][published]") {
  const std::string path = std::string(PP3D_SOURCE_DIR) + "/docs/data/published_runs.yaml";
  std::vector<PublishedRun> runs;
  for (const PublishedRun& r : load_published_runs(path))
    if (r.name == "NeMo Llama2-70B fp8" || r.name == "torchtitan Llama3.1-8B fp8 (32)") runs.push_back(r);
  REQUIRE(runs.size() == 2);
  const GptConfig& l70 = runs[0].model;
  CHECK(l70.is_llama());
  CHECK(l70.kv_heads() == 8);
  CHECK(l70.mlp_hidden() == 28672);
  CHECK_FALSE(l70.tied_embeddings);
  // NeMo's "Model TFLOP" for Llama 2 70B: 759 TFLOP/s at 1707 tokens/s/GPU,
  // i.e. 444.6 GFLOP per token; the planner's Llama FLOPs give the same.
  CHECK(model_flops_per_token(l70, 4096) == Approx(759e12 / 1707).epsilon(0.002));
  const auto rows = compare_published(runs);
  const TimeBreakdown& t = rows[1].predicted.time;
  CHECK(rows[1].predicted_tflops == Approx(t.tokens_per_s / 32).epsilon(1e-12));
  const TimeBreakdown& t70 = rows[0].predicted.time;
  CHECK(rows[0].predicted_tflops == Approx(t70.model_flops / (t70.step * 64) / 1e12).epsilon(1e-12));
}

TEST_CASE("published runs: FP8 and TP-overlap rows use those model terms", "[planner][published]") {
  const std::string path = std::string(PP3D_SOURCE_DIR) + "/docs/data/published_runs.yaml";
  std::vector<PublishedRun> runs;
  for (const PublishedRun& r : load_published_runs(path))
    if (r.name == "NeMo GPT3-175B fp8 (128)") runs.push_back(r);
  REQUIRE(runs.size() == 1);
  REQUIRE(runs[0].precision == "fp8");
  REQUIRE(runs[0].tp_overlap);
  PublishedRun bf16 = runs[0];
  bf16.precision = "bf16";
  PublishedRun no_overlap = runs[0];
  no_overlap.tp_overlap = false;
  const auto rows = compare_published({runs[0], bf16, no_overlap});
  // FP8 linear layers are faster than bf16 ones, but less than 2x end to end
  // (attention, LM head, elementwise and communication stay).
  CHECK(rows[0].predicted.time.step < 0.8 * rows[1].predicted.time.step);
  CHECK(rows[0].predicted.time.step > 0.5 * rows[1].predicted.time.step);
  CHECK(rows[0].predicted.time.tp_comm < rows[2].predicted.time.tp_comm);
}

TEST_CASE("published-runs file errors name the run and the key", "[planner][published]") {
  CHECK_THROWS_WITH(load_published_runs("/nonexistent/runs.yaml"), Catch::Contains("cannot read published-runs file"));
  const std::string path = "planner_published_test_bad.yaml";
  {
    std::ofstream f(path);
    f << "runs:\n  - {name: x, layers: 2, hidden: 64, heads: 4, gpus: 8, tp: 2, pp: 1, global_batch: 8, "
         "metric: hardware_tflops, published: 1, tensor_parallel: 2}\n";
  }
  CHECK_THROWS_WITH(load_published_runs(path), Catch::Contains("run 'x': unknown key 'tensor_parallel'"));
  {
    std::ofstream f(path);
    f << "runs:\n  - {name: y, layers: 2, hidden: 64, heads: 4, gpus: 6, tp: 4, pp: 1, global_batch: 8, "
         "metric: hardware_tflops, published: 1}\n";
  }
  CHECK_THROWS_WITH(load_published_runs(path), Catch::Contains("run 'y': gpus 6 not divisible by tp 4"));
  {
    std::ofstream f(path);
    f << "runs:\n  - {name: z, layers: 2, hidden: 64, heads: 4, gpus: 8, tp: 2, pp: 1, global_batch: 8, "
         "metric: hardware_tflops, published: 1, precision: fp4}\n";
  }
  CHECK_THROWS_WITH(load_published_runs(path), Catch::Contains("run 'z': precision must be bf16 or fp8, got 'fp4'"));
  {
    std::ofstream f(path);
    f << "runs:\n  - {name: w, layers: 2, hidden: 64, heads: 4, gpus: 8, tp: 2, pp: 1, global_batch: 8, "
         "metric: tokens_per_gpu, published: 1, arch: llama}\n";
  }
  CHECK_THROWS_WITH(load_published_runs(path), Catch::Contains("run 'w': arch llama needs 'ffn'"));
  {
    std::ofstream f(path);
    f << "runs:\n  - {name: v, layers: 2, hidden: 64, heads: 4, gpus: 8, tp: 2, pp: 1, global_batch: 8, "
         "metric: tokens_per_gpu, published: 1, kv_heads: 2}\n";
  }
  CHECK_THROWS_WITH(load_published_runs(path), Catch::Contains("run 'v': kv_heads and ffn need arch: llama"));
  std::remove(path.c_str());
}
