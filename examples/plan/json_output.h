// JSON rendering of planner results for pp3d-plan --json (read by the trainer's
// --layout auto). Schema in docs/PLANNER.md.
#pragma once

#include <nlohmann/json.hpp>

#include "pp3d/plan/planner.h"

namespace pp3d {

nlohmann::json candidate_json(const Candidate& c);
nlohmann::json plan_json(const Planner& planner, const PlanResult& res, int top);

}  // namespace pp3d
