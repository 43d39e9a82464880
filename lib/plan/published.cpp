// Published GPT training runs vs the planner (include/pp3d/plan/published.h).
#include "pp3d/plan/published.h"

#include <yaml-cpp/yaml.h>

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
      "published", "dp_overlap"};
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
    l.schedule = sched == "interleaved" ? Schedule::Interleaved : sched == "gpipe" ? Schedule::GPipe : Schedule::OneFOneB;
    l.virtual_stages = get("virtual_stages", l.schedule == Schedule::Interleaved ? 2 : 1);
    const std::string rc = get("recompute", std::string("none"));
    PP3D_CHECK(rc == "none" || rc == "full", "'{}', run '{}': recompute must be none or full, got '{}'", path, r.name,
               rc);
    l.recompute = rc == "full" ? Recompute::Full : Recompute::None;
    l.sequence_parallel = get("sequence_parallel", false);
    r.dp_overlap = get("dp_overlap", true);
    r.global_batch = get("global_batch", int64_t(0));
    r.metric = get("metric", std::string());
    PP3D_CHECK(r.metric == "hardware_tflops" || r.metric == "model_tflops",
               "'{}', run '{}': metric must be hardware_tflops or model_tflops, got '{}'", path, r.name, r.metric);
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
    req.precision = Precision::bf16();
    req.options.flash_attention = false;  // 2021-22 Megatron: materialised softmax
    req.options.dropout = true;           // Megatron's defaults: attention and hidden dropout 0.1
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
    const double peak = cluster.gpu.peak(true) / 1e12;
    c.predicted_tflops = r.metric == "model_tflops" ? c.predicted.time.mfu * peak : c.predicted.time.tflops_per_gpu;
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

std::string published_table(const std::vector<PublishedComparison>& rows) {
  std::string out = "| run | source | GPUs | (t, p, d) | batch | mb | recompute | metric | published | predicted | error |\n"
                    "|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const auto& r : rows) {
    const Layout& l = r.predicted.layout;
    out += fmt::format("| {} | {} | {} | ({}, {}, {}){} | {} | {}{} | {} | {} | {:.1f} | {:.1f} | {:+.1f}% |\n",
                       r.run.name, r.run.source, r.run.gpus, l.tp, l.pp, l.dp, l.sequence_parallel ? " SP" : "",
                       r.run.global_batch, l.micro_batch, r.run.layout.micro_batch == 0 ? "*" : "",
                       recompute_name(l.recompute), r.run.metric == "model_tflops" ? "MFU x 312" : "HW TFLOP/s",
                       r.run.published, r.predicted_tflops, 100 * r.error);
  }
  out += fmt::format("\nmean absolute error {:.1f}% over {} runs (* micro-batch not stated: the planner's fastest)\n",
                     100 * mean_abs_error(rows), rows.size());
  return out;
}

}  // namespace pp3d
