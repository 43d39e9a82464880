// Planner: human-readable explanations of a layout and of the ranking.
#include <algorithm>
#include <functional>

#include <fmt/format.h>

#include "pp3d/plan/planner.h"
#include "plan/plan_detail.h"

namespace pp3d {
namespace {

double gb(double b) { return b / 1e9; }
double ms(double s) { return s * 1e3; }

std::vector<std::pair<std::string, double>> step_parts(const TimeBreakdown& t) {
  const double m = double(t.num_micro_batches);
  return {{"compute (GEMM + memory-bound)", m * (t.gemm + t.elementwise)},
          {"tensor-parallel communication", m * t.tp_comm},
          {"pipeline p2p", m * t.pp_p2p},
          {"pipeline bubble", t.bubble},
          {"exposed DP/ZeRO communication", t.dp_exposed},
          {"tied-embedding sync", t.embedding_sync},
          {"optimizer step", t.optimizer}};
}

}  // namespace

std::string Planner::explain(const Layout& layout) const {
  const Candidate c = evaluate(layout);
  const Layout& l = c.layout;
  const MemoryBreakdown& m = c.memory;
  const TimeBreakdown& t = c.time;
  const int64_t seq = detail::plan_seq_len(cfg_, req_.work);
  std::string o;
  auto line = [&]<typename... A>(fmt::format_string<A...> f, A&&... a) {
    o += fmt::format(f, std::forward<A>(a)...) + "\n";
  };
  line("layout     {}", l.str());
  line("model      {}  ({:.1f} M parameters), seq {} x global batch {} = {} tokens/step",
       cfg_.str(), cfg_.num_parameters() / 1e6, seq, req_.work.global_batch, req_.work.global_batch * seq);
  line("cluster    {} x {} ({} per node), peak {:.0f} TFLOP/s, {:.0f} GB, HBM {:.2f} TB/s ({:.2f} streaming), "
       "intra {:.0f} GB/s, inter {:.0f} GB/s",
       req_.gpus, cluster_.gpu.name, cluster_.gpus_per_node, cluster_.gpu.peak(req_.precision.mixed) / 1e12,
       gb(cluster_.gpu.memory_bytes), cluster_.gpu.hbm_bw / 1e12, cluster_.gpu.hbm_stream_bw() / 1e12,
       cluster_.intra.beta / 1e9, cluster_.inter.beta / 1e9);
  line("precision  {}{}; flash attention {}, dropout {}{}{}",
       req_.precision.mixed ? "mixed (bf16 + fp32 master, K=12)" : "fp32",
       req_.precision.fp8_gemm ? fmt::format(", FP8 linear layers at {:.0f} TFLOP/s", cluster_.gpu.fp8_peak_flops / 1e12)
                               : std::string(),
       req_.options.flash_attention ? "on" : "off", req_.options.dropout ? "on" : "off",
       req_.options.tp_overlap ? ", TP comm overlapped with GEMMs" : "",
       req_.options.pp_overlap ? ", PP p2p overlapped with compute" : "");
  line("");
  line("memory per GPU (stage {} of {}, the largest)", m.stage, l.pp);
  line("  params       {:9.3f} GB   ({:.1f} M parameters on this rank, ZeRO-{})", gb(m.params), m.psi / 1e6,
       l.zero_stage);
  line("  grads        {:9.3f} GB", gb(m.grads));
  line("  optimizer    {:9.3f} GB", gb(m.optimizer));
  line("  activations  {:9.3f} GB   ({:.1f} MB/layer/micro-batch x {} layers x {:g} in flight{}{})",
       gb(m.activations), m.activation_per_layer / 1e6, m.layers, m.in_flight,
       m.logits > 0 ? fmt::format(" + logits {:.2f} GB", gb(m.logits)) : "",
       m.recompute_working > 0 ? fmt::format(" + recompute working set {:.2f} GB", gb(m.recompute_working)) : "");
  line("  comm         {:9.3f} GB", gb(m.comm));
  line("  workspace    {:9.3f} GB", gb(m.workspace));
  const std::string oom = memory_verdict(m);
  line("  total        {:9.3f} GB   of {:.1f} GB: {}", gb(m.total()), gb(memory_limit()),
       oom.empty() ? "fits" : "DOES NOT FIT (" + oom + ")");
  if (l.pp > 1) {
    std::string per;
    for (int st = 0; st < l.pp; ++st)
      per += fmt::format(" {:.2f}", gb(predict_stage_memory(cfg_, l, req_.precision, req_.work, req_.options, st).total()));
    line("  per stage  {} GB", per);
  }
  line("");
  line("step time (slowest stage {}, {} micro-batches of {})", t.slowest_stage, t.num_micro_batches, l.micro_batch);
  line("  per micro-batch  {:8.3f} ms = GEMM {:.3f} + memory-bound {:.3f} + TP comm {:.3f} + PP p2p {:.3f}",
       ms(t.per_micro_batch), ms(t.gemm), ms(t.elementwise), ms(t.tp_comm), ms(t.pp_p2p));
  line("  pipeline         {:8.3f} ms (bubble {:.3f} ms, fraction {:.3f})", ms(t.pipeline), ms(t.bubble),
       t.bubble_fraction);
  line("  DP/ZeRO comm     {:8.3f} ms, exposed {:.3f} ms", ms(t.dp_comm), ms(t.dp_exposed));
  line("  embedding sync   {:8.3f} ms", ms(t.embedding_sync));
  line("  optimizer        {:8.3f} ms", ms(t.optimizer));
  line("  step             {:8.3f} ms", ms(t.step));
  line("");
  line("throughput {:.0f} tokens/s, {:.4g} TFLOP/s per GPU (hardware, recompute included), MFU {:.1f}%",
       t.tokens_per_s, t.tflops_per_gpu, 100 * t.mfu);
  return o;
}

std::string Planner::explain_winner(const PlanResult& res) const {
  if (res.feasible.empty()) return "no layout fits.";
  const Candidate& top = res.feasible[0];
  std::string o = fmt::format("{} wins: step {:.1f} ms, bubble {:.1f}%, communication on the critical path {:.1f} ms, "
                              "{:.1f} GB per GPU.",
                              top.layout.str(), ms(top.time.step), 100 * top.time.bubble_fraction,
                              ms(top.time.dp_exposed + top.time.num_micro_batches * top.time.tp_comm),
                              gb(top.memory.total()));
  auto compare = [&](const char* what, const std::function<bool(const Layout&)>& differs) {
    const auto it = std::find_if(res.feasible.begin() + 1, res.feasible.end(),
                                 [&](const Candidate& c) { return differs(c.layout); });
    if (it == res.feasible.end()) return;
    const double speedup = top.time.tokens_per_s / it->time.tokens_per_s - 1;
    if (speedup < 0.005) {
      o += fmt::format("\n  vs best {} ({}): a tie within the model's accuracy ({:+.2f}%); memory {:.1f} GB vs "
                       "{:.1f} GB.",
                       what, it->layout.str(), 100 * speedup, gb(top.memory.total()), gb(it->memory.total()));
      return;
    }
    const auto a = step_parts(top.time), b = step_parts(it->time);
    std::size_t k = 0;
    for (std::size_t i = 1; i < a.size(); ++i)
      if (b[i].second - a[i].second > b[k].second - a[k].second) k = i;
    o += fmt::format("\n  vs best {} ({}): {:.1f}% faster; the main difference is {} ({:.1f} ms vs {:.1f} ms).",
                     what, it->layout.str(), 100 * speedup, a[k].first, ms(a[k].second), ms(b[k].second));
  };
  const Layout& w = top.layout;
  compare("other tp/pp", [&](const Layout& l) { return l.tp != w.tp || l.pp != w.pp; });
  compare("other ZeRO stage", [&](const Layout& l) { return l.zero_stage != w.zero_stage; });
  compare("other recompute", [&](const Layout& l) { return l.recompute != w.recompute; });
  compare("other micro-batch", [&](const Layout& l) { return l.micro_batch != w.micro_batch; });
  return o;
}

}  // namespace pp3d
