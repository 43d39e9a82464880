#include "json_output.h"

namespace pp3d {

nlohmann::json candidate_json(const Candidate& c) {
  const Layout& l = c.layout;
  const MemoryBreakdown& m = c.memory;
  const TimeBreakdown& t = c.time;
  return {
      {"layout", l.spec()},
      {"tp", l.tp}, {"pp", l.pp}, {"dp", l.dp}, {"zero_stage", l.zero_stage}, {"micro_batch", l.micro_batch},
      {"schedule", schedule_name(l.schedule)}, {"virtual_stages", l.virtual_stages},
      {"recompute", recompute_name(l.recompute)}, {"sequence_parallel", l.sequence_parallel},
      {"memory_bytes",
       {{"params", m.params}, {"grads", m.grads}, {"optimizer", m.optimizer}, {"activations", m.activations},
        {"comm", m.comm}, {"workspace", m.workspace}, {"total", m.total()}, {"stage", m.stage}}},
      {"time_s",
       {{"step", t.step}, {"per_micro_batch", t.per_micro_batch}, {"pipeline", t.pipeline}, {"bubble", t.bubble},
        {"dp_comm", t.dp_comm}, {"dp_exposed", t.dp_exposed}, {"optimizer", t.optimizer}}},
      {"num_micro_batches", t.num_micro_batches},
      {"bubble_fraction", t.bubble_fraction},
      {"tokens_per_s", t.tokens_per_s},
      {"tflops_per_gpu", t.tflops_per_gpu},
      {"mfu", t.mfu},
  };
}

nlohmann::json plan_json(const Planner& planner, const PlanResult& res, int top) {
  nlohmann::json ranked = nlohmann::json::array();
  for (int i = 0; i < top && i < int(res.feasible.size()); ++i) ranked.push_back(candidate_json(res.feasible[i]));
  nlohmann::json rejected = nlohmann::json::object();
  for (const auto& [reason, n] : res.rejected) rejected[reason] = n;
  const auto& req = planner.request();
  return {
      {"model", planner.config().str()},
      {"arch", planner.config().is_llama() ? "llama" : "gpt2"},
      {"parameters", planner.config().num_parameters()},
      {"model_flops_per_token", model_flops_per_token(planner.config(), req.work.seq_len > 0
                                                                             ? req.work.seq_len
                                                                             : planner.config().max_seq_len)},
      {"gpus", req.gpus},
      {"gpu", planner.cluster().gpu.name},
      {"gpus_per_node", planner.cluster().gpus_per_node},
      {"global_batch", req.work.global_batch},
      {"memory_limit_bytes", planner.memory_limit()},
      {"considered", res.considered},
      {"feasible", res.feasible.size()},
      {"best", res.feasible.empty() ? nlohmann::json(nullptr) : candidate_json(res.feasible[0])},
      {"ranked", ranked},
      {"rejected", rejected},
  };
}

}  // namespace pp3d
