// Internal helpers shared by the planner's memory, time and search files.
#pragma once

#include <cstdint>
#include <string>

#include "pp3d/model/gpt_config.h"
#include "pp3d/plan/layout.h"

namespace pp3d::detail {

// Training sequence length: work.seq_len, or the model's context when 0.
int64_t plan_seq_len(const GptConfig& cfg, const Workload& work);
// Why (cfg, layout, work) cannot be modelled ("" when it can): divisibility of
// heads, MLP, vocab, layers, batch; zero stage; v. dp must be set (>= 1).
std::string model_fit_reason(const GptConfig& cfg, const Layout& layout, const Workload& work);
// Throws pp3d::Error with model_fit_reason() when non-empty.
void check_model_fit(const GptConfig& cfg, const Layout& layout, const Workload& work);
// m = global_batch / (dp * micro_batch); requires check_model_fit().
int64_t plan_micro_batches(const Layout& layout, const Workload& work);
// Parameters of one block per tensor-parallel rank.
double block_parameters(const GptConfig& cfg, int tp);

}  // namespace pp3d::detail
