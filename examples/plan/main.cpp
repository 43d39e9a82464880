// pp3d-plan: which (tp, pp, dp, ZeRO stage, micro-batch, schedule, recompute)
// fits in memory and runs fastest for a GPT model on a cluster.
//
//   pp3d-plan --model configs/models/large.yaml --gpus 64 --gpu h100 --gpus-per-node 8 --global-batch 512
//   pp3d-plan ... --explain "tp=2,pp=4,zero=1,mb=2"
//   pp3d-plan ... --json            (machine-readable; "best" is what --layout auto uses)
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cstdio>
#include <iostream>

#include "json_output.h"
#include "pp3d/core/error.h"
#include "pp3d/plan/model_file.h"
#include "pp3d/plan/planner.h"
#include "pp3d/plan/published.h"

namespace {

void print_table(const pp3d::PlanResult& res, int top) {
  fmt::print("{:>4} {:>3} {:>3} {:>4} {:>4} {:>3} {:>15} {:>5} {:>8} {:>9} {:>11} {:>8} {:>6} {:>7}\n", "rank", "tp",
             "pp", "dp", "zero", "mb", "schedule", "rc", "mem GB", "step ms", "tokens/s", "TFLOP/s", "MFU%",
             "bubble%");
  for (int i = 0; i < top && i < int(res.feasible.size()); ++i) {
    const auto& c = res.feasible[i];
    const auto& l = c.layout;
    std::string sched = pp3d::schedule_name(l.schedule);
    if (l.schedule == pp3d::Schedule::Interleaved) sched += fmt::format("(v={})", l.virtual_stages);
    if (l.pp == 1) sched = "-";
    fmt::print("{:>4} {:>3} {:>3} {:>4} {:>4} {:>3} {:>15} {:>5} {:>8.2f} {:>9.1f} {:>11.0f} {:>8.4g} {:>6.1f} {:>7.1f}\n",
               i + 1, l.tp, l.pp, l.dp, l.zero_stage, l.micro_batch, sched, pp3d::recompute_name(l.recompute),
               c.memory.total() / 1e9, c.time.step * 1e3, c.time.tokens_per_s, c.time.tflops_per_gpu,
               100 * c.time.mfu, 100 * c.time.bubble_fraction);
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"pp3d-plan: predict memory per GPU and throughput of GPT and Llama training layouts, rank them"};
  std::string model_path, gpu = "h100", cluster_path, calib_path, explain;
  int gpus = 8, gpus_per_node = 8, top = 10;
  int64_t global_batch = 512, seq_len = 0, max_mb = 64;
  bool json = false, auto_mode = false, fp32 = false, no_flash = false, dropout = false, uneven = false, gpipe = false;
  bool fp8 = false, tp_overlap = false, pp_overlap = false;
  double exposed = 0.3, mem_fraction = 1.0, workspace_gb = 1.0, bucket_mb = 25;
  std::string published_path;
  app.add_option("--validate-published", published_path,
                 "compare the planner with the published runs of FILE (docs/data/published_runs.yaml) and exit")
      ->check(CLI::ExistingFile);
  auto* model_opt =
      app.add_option("--model", model_path, "model YAML (configs/models/*.yaml; arch gpt2 or llama)")->check(CLI::ExistingFile);
  app.add_option("--gpus", gpus, "total number of GPUs")->check(CLI::PositiveNumber);
  app.add_option("--gpu", gpu, "GPU preset: h100, h200, a100, cpu");
  auto* gpn_opt = app.add_option("--gpus-per-node", gpus_per_node, "GPUs per node")->check(CLI::PositiveNumber);
  app.add_option("--global-batch", global_batch, "sequences per optimizer step")->check(CLI::PositiveNumber);
  app.add_option("--seq-len", seq_len, "training sequence length (default: the model's seq_len)");
  app.add_option("--top", top, "how many layouts to print")->check(CLI::PositiveNumber);
  app.add_option("--cluster", cluster_path, "cluster YAML (overrides --gpu; see docs/PLANNER.md)")
      ->check(CLI::ExistingFile);
  app.add_option("--gemm-calibration", calib_path, "YAML with gemm_efficiency (from the GPU GEMM benchmark)")
      ->check(CLI::ExistingFile);
  app.add_option("--explain", explain, "print the full breakdown of one layout, e.g. \"tp=2,pp=4,zero=1,mb=2\"");
  app.add_flag("--json", json, "machine-readable output: ranked layouts, rejection counts");
  app.add_flag("--auto", auto_mode,
               "print only the best layout as one line of JSON (for the trainer's --layout auto); exit 2 if none fits");
  app.add_flag("--fp32", fp32, "fp32 training instead of bf16 mixed precision");
  auto* fp8_flag = app.add_flag("--fp8", fp8,
                                "FP8 linear layers (Transformer Engine): the GPU's FP8 peak, casts and FP8 weight copies");
  fp8_flag->excludes(app.get_option("--fp32"));
  app.add_flag("--tp-overlap", tp_overlap,
               "overlap tensor-parallel all-gather/reduce-scatter with the adjacent GEMMs (needs SP; userbuffers)");
  app.add_flag("--pp-overlap", pp_overlap,
               "overlap interleaved-pipeline send/receive with the next chunk's compute (Megatron --overlap-p2p-communication)");
  app.add_flag("--no-flash", no_flash, "attention materialises the s x s scores");
  app.add_flag("--dropout", dropout, "count dropout masks (Korthikanti et al.'s model)");
  app.add_flag("--uneven", uneven, "also try pp that does not divide num_layers");
  app.add_flag("--gpipe", gpipe, "also try the GPipe schedule");
  app.add_option("--max-micro-batch", max_mb, "largest micro-batch size tried");
  app.add_option("--exposed-comm", exposed, "fraction of DP/ZeRO communication not overlapped")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--memory-fraction", mem_fraction, "usable fraction of GPU memory")->check(CLI::Range(0.01, 1.0));
  auto* ws_opt = app.add_option("--workspace-gb", workspace_gb, "constant workspace per GPU (GB; default 1, cpu 0.05)");
  app.add_option("--bucket-mb", bucket_mb, "gradient bucket size (MB)");
  CLI11_PARSE(app, argc, argv);

  try {
    if (!published_path.empty()) {
      const auto rows = pp3d::compare_published(pp3d::load_published_runs(published_path));
      std::cout << pp3d::published_table(rows);
      return 0;
    }
    PP3D_CHECK(model_opt->count() > 0, "--model is required (or --validate-published FILE)");
    const pp3d::GptConfig cfg = pp3d::load_gpt_config_yaml(model_path);
    pp3d::Cluster cluster =
        cluster_path.empty() ? pp3d::cluster_preset(gpu, gpus_per_node) : pp3d::load_cluster_yaml(cluster_path);
    if (!cluster_path.empty() && gpn_opt->count() > 0) cluster.gpus_per_node = gpus_per_node;
    if (!calib_path.empty()) cluster.gpu.gemm.table = pp3d::load_gemm_efficiency_yaml(calib_path).table;
    pp3d::PlanRequest req;
    req.gpus = gpus;
    req.work.global_batch = global_batch;
    req.work.seq_len = seq_len;
    req.precision = fp32 ? pp3d::Precision::fp32() : fp8 ? pp3d::Precision::fp8() : pp3d::Precision::bf16();
    PP3D_CHECK(!fp8 || cluster.gpu.fp8_peak_flops > 0, "--fp8: GPU '{}' has no FP8 tensor cores (use --gpu h100/h200 "
               "or set fp8_peak_tflops in the cluster file)", cluster.gpu.name);
    req.options.tp_overlap = tp_overlap;
    req.options.pp_overlap = pp_overlap;
    req.options.flash_attention = !no_flash;
    req.options.dropout = dropout;
    req.options.dp_exposed_fraction = exposed;
    if (gpu == "cpu" && cluster_path.empty() && ws_opt->count() == 0) workspace_gb = 0.05;
    req.options.workspace_bytes = workspace_gb * 1e9;
    req.options.bucket_bytes = bucket_mb * 1e6;
    req.allow_uneven_pp = uneven;
    req.include_gpipe = gpipe;
    req.max_micro_batch = max_mb;
    req.memory_fraction = mem_fraction;
    const pp3d::Planner planner(cfg, cluster, req);

    if (!explain.empty()) {
      const pp3d::Layout layout = pp3d::parse_layout(explain);
      if (json) std::cout << pp3d::candidate_json(planner.evaluate(layout)).dump(2) << "\n";
      else std::cout << planner.explain(layout);
      return 0;
    }
    const pp3d::PlanResult res = planner.search();
    if (auto_mode) {
      if (res.feasible.empty()) {
        std::fprintf(stderr, "pp3d-plan: no layout fits\n");
        return 2;
      }
      std::cout << pp3d::candidate_json(res.feasible[0]).dump() << "\n";
      return 0;
    }
    if (json) {
      std::cout << pp3d::plan_json(planner, res, top).dump(2) << "\n";
      return res.feasible.empty() ? 2 : 0;
    }
    fmt::print("{} ({:.1f} M params) on {} x {} ({} per node), global batch {}, seq {}\n", cfg.str(),
               cfg.num_parameters() / 1e6, gpus, cluster.gpu.name, cluster.gpus_per_node, global_batch,
               seq_len > 0 ? seq_len : cfg.max_seq_len);
    fmt::print("{} layouts considered, {} fit in {:.1f} GB\n\n", res.considered, res.feasible.size(),
               planner.memory_limit() / 1e9);
    print_table(res, top);
    fmt::print("\nWhy: {}\n", planner.explain_winner(res));
    fmt::print("\nRejected:\n");
    for (const auto& [reason, n] : res.rejected) fmt::print("  {:6}  {}\n", n, reason);
    for (const auto& r : res.rejection_examples)
      if (r.reason != "out of memory") fmt::print("  e.g. {}: {}\n", r.layout.str(), r.message);
    for (std::size_t i = 0; i < res.out_of_memory.size() && i < 3; ++i)
      fmt::print("  e.g. {}: {}\n", res.out_of_memory[i].layout.str(), res.out_of_memory[i].message);
    return res.feasible.empty() ? 2 : 0;
  } catch (const pp3d::Error& e) {
    std::fprintf(stderr, "pp3d-plan: %s\n", e.what());
    return 1;
  }
}
