// Chrome trace JSON (chrome://tracing, Perfetto) of pipeline step events.
#include <cstring>
#include <fstream>

#include <nlohmann/json.hpp>

#include "pp3d/parallel/pipeline.h"

namespace pp3d {

namespace {

nlohmann::json event_json(const PipelineEvent& e, int pid) {
  const char* cat = e.kind == PipelineEvent::Forward    ? "forward"
                    : e.kind == PipelineEvent::Backward ? "backward"
                    : e.kind == PipelineEvent::Weight   ? "weight"
                    : e.kind == PipelineEvent::Comm     ? "comm"
                                                        : "reduce";
  nlohmann::json j = {{"name", e.name},
                      {"cat", cat},
                      {"ph", "X"},
                      {"ts", e.start_us},
                      {"dur", e.end_us - e.start_us},
                      {"pid", pid},
                      {"tid", e.is_compute() ? 0 : 1}};
  if (e.mb >= 0) j["args"] = {{"mb", e.mb}, {"chunk", e.chunk}};
  return j;
}

nlohmann::json events_json(const std::vector<PipelineEvent>& events, int pid) {
  nlohmann::json arr = nlohmann::json::array();
  for (const auto& e : events) arr.push_back(event_json(e, pid));
  return arr;
}

void write_json(const std::string& path, const nlohmann::json& arr) {
  std::ofstream f(path);
  PP3D_CHECK(f.good(), "cannot open trace file '{}' for writing", path);
  f << nlohmann::json{{"traceEvents", arr}, {"displayTimeUnit", "ms"}}.dump() << '\n';
  PP3D_CHECK(f.good(), "failed writing trace file '{}'", path);
}

}  // namespace

void write_chrome_trace(const std::string& path, const std::vector<std::vector<PipelineEvent>>& per_rank) {
  nlohmann::json arr = nlohmann::json::array();
  for (std::size_t r = 0; r < per_rank.size(); ++r)
    for (auto& e : events_json(per_rank[r], static_cast<int>(r))) arr.push_back(std::move(e));
  write_json(path, arr);
}

void PipelineStage::write_trace(const std::string& path, const StepResult& result) const {
  write_json(path, events_json(result.events, pp_rank_));
}

void write_merged_trace(Communicator& pp_group, const std::string& path, const StepResult& result) {
  const int me = pp_group.rank();
  const std::string mine = events_json(result.events, me).dump();
  // Lengths first (all-gather), then each rank's bytes to rank 0 as i32 words.
  Tensor len = Tensor::from_vector_i32({1}, {static_cast<int32_t>(mine.size())});
  Tensor lens = Tensor::zeros({pp_group.size()}, DType::I32);
  pp_group.all_gather(len, lens);
  auto words = [](std::size_t bytes) { return static_cast<int64_t>((bytes + 3) / 4 + 1); };
  if (me != 0) {
    Tensor buf = Tensor::zeros({words(mine.size())}, DType::I32);
    std::memcpy(buf.raw(), mine.data(), mine.size());
    pp_group.send(buf, 0, 7001);
    return;
  }
  nlohmann::json arr = nlohmann::json::parse(mine);
  for (int r = 1; r < pp_group.size(); ++r) {
    const auto n = static_cast<std::size_t>(lens.data<int32_t>()[r]);
    Tensor buf = Tensor::zeros({words(n)}, DType::I32);
    pp_group.recv(buf, r, 7001);
    for (auto& e : nlohmann::json::parse(std::string(static_cast<const char*>(buf.raw()), n))) arr.push_back(e);
  }
  write_json(path, arr);
}

}  // namespace pp3d
