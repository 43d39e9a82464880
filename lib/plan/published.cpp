// Published GPT training runs vs the planner (include/pp3d/plan/published.h).
#include "pp3d/plan/published.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <set>

#include <fmt/format.h>

#include "pp3d/core/error.h"

namespace pp3d {

std::vector<PublishedRun> load_published_runs(const std::string& path) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    PP3D_FAIL("cannot read published-runs file '{}': {}", path, e.what());
  }
  PP3D_CHECK(root.IsMap() && root["runs"] && root["runs"].IsSequence(), "'{}': expected a map with a 'runs:' list",
             path);
  static const std::set<std::string> known = {
      "name", "source", "gpu", "gpus_per_node", "layers", "hidden", "heads", "vocab", "seq_len", "gpus", "tp", "pp",
      "zero", "micro_batch", "schedule", "virtual_stages", "recompute", "sequence_parallel", "global_batch", "metric",
      "published", "dp_overlap", "precision", "flash_attention", "dropout", "tp_overlap", "holdout", "arch",
      "kv_heads", "ffn", "pp_overlap"};
  std::vector<PublishedRun> out;
  for (const YAML::Node& n : root["runs"]) {
    PublishedRun r;
    PP3D_CHECK(n.IsMap() && n["name"], "'{}': every run needs a name", path);
    r.name = n["name"].as<std::string>();
    for (const auto& kv : n)
      PP3D_CHECK(known.count(kv.first.as<std::string>()), "'{}', run '{}': unknown key '{}'", path, r.name,
                 kv.first.as<std::string>());
    auto get = [&](const char* key, auto fallback) {
      using T = decltype(fallback);
      if (!n[key]) return fallback;
      try {
        return n[key].as<T>();
      } catch (const YAML::Exception&) {
        PP3D_FAIL("'{}', run '{}': bad value for '{}'", path, r.name, key);
      }
    };
    for (const char* req : {"layers", "hidden", "heads", "gpus", "tp", "pp", "global_batch", "metric", "published"})
      PP3D_CHECK(n[req], "'{}', run '{}': missing key '{}'", path, r.name, req);
    r.source = get("source", std::string());
    r.gpu = get("gpu", std::string("a100"));
    r.gpus_per_node = get("gpus_per_node", 8);
    r.model.num_layers = get("layers", int64_t(0));
    r.model.hidden_size = get("hidden", int64_t(0));
    r.model.num_heads = get("heads", int64_t(0));
    r.model.vocab_size = get("vocab", int64_t(51200));
    r.model.max_seq_len = get("seq_len", int64_t(2048));
    r.model.tied_embeddings = false;  // Megatron's GPT unties nothing, but counts the head once: FLOPs are the same
    const std::string arch = get("arch", std::string("gpt2"));
    PP3D_CHECK(arch == "gpt2" || arch == "llama", "'{}', run '{}': arch must be gpt2 or llama, got '{}'", path, r.name,
               arch);
    if (arch == "llama") {  // Llama 2/3: SwiGLU of width ffn, grouped-query attention, untied head
      PP3D_CHECK(n["ffn"], "'{}', run '{}': arch llama needs 'ffn' (the SwiGLU width)", path, r.name);
      r.model.arch = ModelArch::Llama;
      r.model.num_kv_heads = get("kv_heads", int64_t(0));
      r.model.mlp_hidden_size = get("ffn", int64_t(0));
    } else {
      PP3D_CHECK(!n["kv_heads"] && !n["ffn"], "'{}', run '{}': kv_heads and ffn need arch: llama", path, r.name);
    }
    r.gpus = get("gpus", 0);
    Layout& l = r.layout;
    l.tp = get("tp", 1);
    l.pp = get("pp", 1);
    PP3D_CHECK(l.tp >= 1 && l.pp >= 1 && r.gpus % (l.tp * l.pp) == 0, "'{}', run '{}': gpus {} not divisible by "
               "tp {} x pp {}", path, r.name, r.gpus, l.tp, l.pp);
    l.dp = r.gpus / (l.tp * l.pp);
    l.zero_stage = get("zero", 0);
    l.micro_batch = get("micro_batch", int64_t(0));
    const std::string sched = get("schedule", std::string("1f1b"));
    l.schedule = sched == "interleaved" ? Schedule::Interleaved
                 : sched == "gpipe"     ? Schedule::GPipe
                 : sched == "zb-h1"     ? Schedule::ZeroBubbleH1
                                        : Schedule::OneFOneB;
    l.virtual_stages = get("virtual_stages", l.schedule == Schedule::Interleaved ? 2 : 1);
    const std::string rc = get("recompute", std::string("none"));
    PP3D_CHECK(rc == "none" || rc == "full", "'{}', run '{}': recompute must be none or full, got '{}'", path, r.name,
               rc);
    l.recompute = rc == "full" ? Recompute::Full : Recompute::None;
    l.sequence_parallel = get("sequence_parallel", false);
    r.dp_overlap = get("dp_overlap", true);
    r.precision = get("precision", std::string("bf16"));
    PP3D_CHECK(r.precision == "bf16" || r.precision == "fp8", "'{}', run '{}': precision must be bf16 or fp8, got '{}'",
               path, r.name, r.precision);
    r.flash_attention = get("flash_attention", false);
    r.dropout = get("dropout", true);
    r.tp_overlap = get("tp_overlap", false);
    r.pp_overlap = get("pp_overlap", false);
    r.holdout = get("holdout", false);
    r.global_batch = get("global_batch", int64_t(0));
    r.metric = get("metric", std::string());
    PP3D_CHECK(r.metric == "hardware_tflops" || r.metric == "model_tflops" || r.metric == "tokens_per_gpu",
               "'{}', run '{}': metric must be hardware_tflops, model_tflops or tokens_per_gpu, got '{}'", path, r.name,
               r.metric);
    r.published = get("published", 0.0);
    PP3D_CHECK(r.published > 0, "'{}', run '{}': published must be > 0", path, r.name);
    out.push_back(std::move(r));
  }
  return out;
}

std::vector<PublishedComparison> compare_published(const std::vector<PublishedRun>& runs) {
  std::vector<PublishedComparison> rows;
  for (const PublishedRun& r : runs) {
    const Cluster cluster = cluster_preset(r.gpu, r.gpus_per_node);
    PlanRequest req;
    req.gpus = r.gpus;
    req.work.global_batch = r.global_batch;
    req.precision = r.precision == "fp8" ? Precision::fp8() : Precision::bf16();
    req.options.flash_attention = r.flash_attention;
    req.options.dropout = r.dropout;
    req.options.tp_overlap = r.tp_overlap;
    req.options.pp_overlap = r.pp_overlap;
    if (!r.dp_overlap) req.options.dp_exposed_fraction = 1.0;
    const Planner planner(r.model, cluster, req);
    PublishedComparison c;
    c.run = r;
    if (r.layout.micro_batch > 0) {
      c.predicted = planner.evaluate(r.layout);
    } else {
      bool found = false;
      for (int64_t mb = 1; mb <= 8; mb *= 2) {
        Layout l = r.layout;
        l.micro_batch = mb;
        if (!check_layout(r.model, l, cluster, req).empty()) continue;
        const Candidate k = planner.evaluate(l);
        if (!planner.memory_verdict(k.memory).empty()) continue;
        if (!found || k.time.tokens_per_s > c.predicted.time.tokens_per_s) c.predicted = k;
        found = true;
      }
      PP3D_CHECK(found, "published run '{}': no micro-batch of 1..8 fits or divides the batch", r.name);
    }
    const TimeBreakdown& t = c.predicted.time;
    c.predicted_tflops = r.metric == "model_tflops"    ? t.model_flops / (t.step * r.gpus) / 1e12
                         : r.metric == "tokens_per_gpu" ? t.tokens_per_s / r.gpus
                                                        : t.tflops_per_gpu;
    c.error = c.predicted_tflops / r.published - 1;
    rows.push_back(std::move(c));
  }
  return rows;
}

double mean_abs_error(const std::vector<PublishedComparison>& rows) {
  PP3D_CHECK(!rows.empty(), "mean_abs_error of no rows");
  double s = 0;
  for (const auto& r : rows) s += std::fabs(r.error);
  return s / double(rows.size());
}

double max_abs_error(const std::vector<PublishedComparison>& rows) {
  PP3D_CHECK(!rows.empty(), "max_abs_error of no rows");
  double m = 0;
  for (const auto& r : rows) m = std::max(m, std::fabs(r.error));
  return m;
}

std::vector<PublishedComparison> rows_on(const std::vector<PublishedComparison>& rows,
                                         const std::vector<std::string>& gpus, bool holdout, ModelArch arch) {
  std::vector<PublishedComparison> out;
  for (const auto& r : rows)
    if (r.run.holdout == holdout && r.run.model.arch == arch &&
        std::find(gpus.begin(), gpus.end(), r.run.gpu) != gpus.end())
      out.push_back(r);
  return out;
}

namespace {
const char* metric_label(const std::string& metric) {
  return metric == "model_tflops" ? "model" : metric == "tokens_per_gpu" ? "tok/s" : "HW";
}
}  // namespace

std::string published_table(const std::vector<PublishedComparison>& rows) {
  std::string out = "| run | source | GPU | GPUs | (t, p, d) | batch | mb | recompute | precision | metric | published | "
                    "predicted | error |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const auto& r : rows) {
    const Layout& l = r.predicted.layout;
    std::string extras = l.sequence_parallel ? " SP" : "";
    if (l.schedule == Schedule::Interleaved) extras += fmt::format(" v{}", l.virtual_stages);
    if (l.zero_stage > 0) extras += fmt::format(" Z{}", l.zero_stage);
    if (r.run.tp_overlap) extras += " ovl";
    out += fmt::format("| {} | {} | {} | {} | ({}, {}, {}){} | {} | {}{} | {} | {} | {} | {:.1f} | {:.1f} | {:+.1f}% |\n",
                       r.run.name + (r.run.holdout ? " †" : ""), r.run.source, r.run.gpu, r.run.gpus, l.tp, l.pp,
                       l.dp, extras, r.run.global_batch, l.micro_batch, r.run.layout.micro_batch == 0 ? "*" : "",
                       recompute_name(l.recompute), r.run.precision, metric_label(r.run.metric), r.run.published, r.predicted_tflops, 100 * r.error);
  }
  out += "\n";
  for (const ModelArch arch : {ModelArch::Gpt2, ModelArch::Llama}) {
    for (const bool holdout : {false, true}) {
      for (const auto& [label, gpus] : std::vector<std::pair<std::string, std::vector<std::string>>>{
               {"A100", {"a100"}}, {"H100/H200", {"h100", "h200"}}}) {
        const auto part = rows_on(rows, gpus, holdout, arch);
        if (part.empty()) continue;
        out += fmt::format("{}{}{}: mean absolute error {:.1f}%, max {:.1f}% over {} runs\n", label,
                           arch == ModelArch::Llama ? " Llama" : "", holdout ? " held out" : "",
                           100 * mean_abs_error(part), 100 * max_abs_error(part), part.size());
      }
    }
  }
  out += fmt::format("all: mean absolute error {:.1f}% over {} runs (* micro-batch not stated: the planner's fastest; "
                     "metric HW = hardware TFLOP/s with recompute, model = model TFLOP/s, tok/s = tokens/s per GPU; † held out)\n",
                     100 * mean_abs_error(rows), rows.size());
  return out;
}

}  // namespace pp3d
