// Planner: evaluation of one layout and the search over layouts.
#include <algorithm>
#include <cctype>

#include <fmt/format.h>

#include "pp3d/core/error.h"
#include "pp3d/plan/planner.h"
#include "plan/plan_detail.h"

namespace pp3d {
namespace {

// "tp=3 does not divide num_heads=16" -> "tp does not divide num_heads".
std::string reason_class(const std::string& msg) {
  std::string out;
  for (std::size_t i = 0; i < msg.size(); ++i) {
    if (msg[i] == '=' && i + 1 < msg.size() && std::isdigit(static_cast<unsigned char>(msg[i + 1]))) {
      while (i + 1 < msg.size() && std::isdigit(static_cast<unsigned char>(msg[i + 1]))) ++i;
      continue;
    }
    if (std::isdigit(static_cast<unsigned char>(msg[i]))) {
      while (i + 1 < msg.size() && (std::isdigit(static_cast<unsigned char>(msg[i + 1])) || msg[i + 1] == '.')) ++i;
      out += 'N';
      continue;
    }
    if (msg[i] == '(') break;  // drop parenthesised details
    out += msg[i];
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

double gb(double bytes) { return bytes / 1e9; }

}  // namespace

Planner::Planner(GptConfig cfg, Cluster cluster, PlanRequest request)
    : cfg_(std::move(cfg)), cluster_(std::move(cluster)), req_(std::move(request)) {
  cfg_.validate();
  cluster_.validate();
  PP3D_CHECK(req_.gpus >= 1, "planner: gpus must be >= 1, got {}", req_.gpus);
  PP3D_CHECK(req_.work.global_batch >= 1, "planner: global batch must be >= 1, got {}", req_.work.global_batch);
  PP3D_CHECK(req_.work.seq_len >= 0 && detail::plan_seq_len(cfg_, req_.work) <= cfg_.max_seq_len,
             "planner: seq_len {} must be in [1, max_seq_len={}]", req_.work.seq_len, cfg_.max_seq_len);
  PP3D_CHECK(req_.memory_fraction > 0 && req_.memory_fraction <= 1, "planner: memory_fraction must be in (0, 1]");
  PP3D_CHECK(req_.options.dp_exposed_fraction >= 0 && req_.options.dp_exposed_fraction <= 1,
             "planner: dp_exposed_fraction must be in [0, 1], got {}", req_.options.dp_exposed_fraction);
}

Candidate Planner::evaluate(Layout l) const {
  if (l.dp == 0) {
    PP3D_CHECK(l.tp >= 1 && l.pp >= 1 && req_.gpus % (l.tp * l.pp) == 0,
               "layout {}: tp*pp = {} does not divide {} GPUs", l.str(), l.tp * l.pp, req_.gpus);
    l.dp = req_.gpus / (l.tp * l.pp);
  }
  const std::string why = check_layout(cfg_, l, cluster_, req_);
  PP3D_CHECK(why.empty(), "layout {} is invalid: {}", l.str(), why);
  Candidate c;
  c.layout = l;
  c.memory = predict_memory(cfg_, l, req_.precision, req_.work, req_.options);
  c.time = predict_time(cfg_, l, req_.precision, req_.work, cluster_, req_.options);
  return c;
}

std::string Planner::memory_verdict(const MemoryBreakdown& m) const {
  if (m.total() <= memory_limit()) return {};
  std::vector<std::pair<double, std::string>> parts = {
      {m.activations, fmt::format("activations {:.1f} GB ({:g} micro-batches in flight x {} layers)", gb(m.activations),
                                  m.in_flight, m.layers)},
      {m.optimizer, fmt::format("optimizer {:.1f} GB", gb(m.optimizer))},
      {m.params, fmt::format("params {:.1f} GB", gb(m.params))},
      {m.grads, fmt::format("grads {:.1f} GB", gb(m.grads))},
      {m.comm + m.workspace, fmt::format("comm+workspace {:.1f} GB", gb(m.comm + m.workspace))}};
  std::stable_sort(parts.begin(), parts.end(), [](auto& a, auto& b) { return a.first > b.first; });
  return fmt::format("needs {:.1f} GB > {:.1f} GB on stage {}: {}, {}, {}", gb(m.total()), gb(memory_limit()),
                     m.stage, parts[0].second, parts[1].second, parts[2].second);
}

PlanResult Planner::search() const {
  PlanResult res;
  const int G = req_.gpus, gpn = cluster_.gpus_per_node;
  const int64_t L = cfg_.num_layers, B = req_.work.global_batch;
  std::vector<std::pair<double, Rejection>> oom_list;
  auto reject = [&](const Layout& l, const std::string& msg) {
    const std::string cls = reason_class(msg);
    if (res.rejected[cls]++ == 0) res.rejection_examples.push_back({l, cls, msg});
  };
  for (int tp = 1; tp <= std::min(gpn, G); ++tp) {
    if (gpn % tp != 0 || G % tp != 0) continue;
    for (int pp = 1; pp <= std::min<int64_t>(G / tp, L); ++pp) {
      if ((G / tp) % pp != 0) continue;
      const int dp = G / (tp * pp);
      std::vector<std::pair<Schedule, int>> scheds = {{Schedule::OneFOneB, 1}};
      if (pp > 1 && req_.include_gpipe) scheds.push_back({Schedule::GPipe, 1});
      if (pp > 1) scheds.push_back({Schedule::ZeroBubbleH1, 1});
      if (pp > 1 && L % pp == 0)
        for (int v = 2; v <= L / pp; ++v)
          if ((L / pp) % v == 0) scheds.push_back({Schedule::Interleaved, v});
      for (int zero = 0; zero <= (dp > 1 ? 3 : 0); ++zero)
        for (int64_t mb = 1; mb <= std::min(req_.max_micro_batch, std::max<int64_t>(B / dp, 1)); mb *= 2)
          for (const auto& [sched, v] : scheds)
            for (Recompute rc : {Recompute::None, Recompute::Full}) {
              Layout l;
              l.tp = tp, l.pp = pp, l.dp = dp, l.zero_stage = zero, l.micro_batch = mb;
              l.schedule = sched, l.virtual_stages = v, l.recompute = rc;
              l.sequence_parallel = tp > 1;
              l.uneven_pp = req_.allow_uneven_pp && L % pp != 0;
              ++res.considered;
              const std::string why = check_layout(cfg_, l, cluster_, req_);
              if (!why.empty()) {
                reject(l, why);
                continue;
              }
              Candidate c = evaluate(l);
              const std::string oom = memory_verdict(c.memory);
              if (!oom.empty()) {
                reject(l, "out of memory");
                oom_list.push_back({c.time.tokens_per_s, {l, "out of memory", oom}});
                continue;
              }
              res.feasible.push_back(std::move(c));
            }
    }
  }
  std::stable_sort(res.feasible.begin(), res.feasible.end(), [](const Candidate& a, const Candidate& b) {
    if (a.time.tokens_per_s != b.time.tokens_per_s) return a.time.tokens_per_s > b.time.tokens_per_s;
    return a.memory.total() < b.memory.total();
  });
  std::stable_sort(oom_list.begin(), oom_list.end(), [](auto& a, auto& b) { return a.first > b.first; });
  for (std::size_t i = 0; i < std::min<std::size_t>(oom_list.size(), 5); ++i)
    res.out_of_memory.push_back(oom_list[i].second);
  return res;
}

}  // namespace pp3d
