// PipelineStage: this rank's part of a pipeline-parallel GPT and the executor
// of a pipeline schedule (GPipe, 1F1B, interleaved 1F1B) over the pp group.
//
// Ownership: the stage owns its Gpt chunk(s) (v of them with the interleaved
// schedule, else one) built from a PipelineSplit; it shares ownership of the
// pp and embedding communicators. Activations travel as Gpt::hidden_shape
// ([micro_batch, seq, hidden], or the local token slice with sequence
// parallelism) f32 tensors whose shape both sides know from the config (no shape
// exchange); receive buffers and the sent outputs are MemCategory::Activations
// and are released as soon as they are consumed / sent; each micro-batch's
// ActivationCache is freed by its backward.
//
// Tied embeddings: the head chunk of a tied model holds its own copy of "wte"
// (counted_in_norm = false). The constructor checks (bitwise checksum over the
// embedding group) that it equals the embedding chunk's copy; run_step ends
// with an all-reduce (sum) of the wte gradient over the embedding group so both
// copies hold the full gradient. Give the optimizer ALL of parameters() (both
// copies): they receive the same update and stay equal.
//
// Thread-safety: one PipelineStage is used from one thread; every rank of the
// pp group must call the collective members (constructor, run_step,
// reduce_tied_grads, sync_tied_embedding) together.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "pp3d/comm/communicator.h"
#include "pp3d/model/gpt.h"
#include "pp3d/parallel/pipeline_schedule.h"
#include "pp3d/train/optimizer.h"

namespace pp3d {

class ProcessGrid;

struct PipelineConfig {
  ScheduleKind schedule = ScheduleKind::OneFOneB;
  int virtual_stages = 1;        // v: model chunks per rank (interleaved only)
  std::string split;             // "" = balanced, else "5,7,6,6" (one entry per virtual stage)
  int64_t micro_batch_size = 1;  // rows per micro-batch
  int64_t seq_len = 0;           // tokens per row (0: config.max_seq_len)
  bool reduce_tied_grads = true;  // run_step ends with the embedding-group wte gradient all-reduce
  bool timing = true;            // record per-op events and bubble statistics in StepResult
};

// One micro-batch: ids [mb, T] i32 (read on the embedding stage) and targets
// [mb, T] i32 (read on the head stage). Other stages may pass undefined tensors.
struct MicroBatch {
  Tensor ids;
  Tensor targets;
};

// One timed operation of a step; times in microseconds since the stage's clock
// origin (set by a pp-group barrier at construction, so ranks are aligned).
struct PipelineEvent {
  enum Kind { Forward, Backward, Comm, Reduce } kind = Forward;
  std::string name;  // "F3", "B3" (with ".c1" for chunk 1 when v > 1), "send A3 recv G2", "tied-allreduce"
  int chunk = -1;
  int mb = -1;
  double start_us = 0, end_us = 0;
};

struct StepResult {
  // Sum over micro-batches of the head's loss() (loss_weight * token losses),
  // broadcast from the last stage to every stage of the pipeline.
  double loss = 0.0;
  std::vector<PipelineEvent> events;  // this rank's, in execution order (when timing)
  double step_us = 0;                 // wall time of the step on this rank
  double compute_us = 0;              // sum of forward + backward durations
  // Idle time (step - compute) over step time, and over compute time: the
  // latter is what (p-1)/m predicts for uniform stages.
  double idle_fraction = 0;
  double bubble_ratio = 0;
  double theoretical_bubble = 0;  // (p-1)/m, or (p-1)/(v*m) interleaved
};

class PipelineStage {
 public:
  // Builds this rank's chunk(s). pp_group: the pipeline group (rank = stage);
  // embedding_group: first+last stage group (nullptr on middle stages and
  // allowed when pp == 1 or the embeddings are untied). base_layout supplies the
  // tensor-parallel fields (tp_rank, tp_size, ...); the layer range and
  // has_embedding / has_head are set here. Collective over pp_group.
  PipelineStage(const GptConfig& config, Backend& backend, std::shared_ptr<Communicator> pp_group,
                std::shared_ptr<Communicator> embedding_group, const PipelineConfig& pipe,
                const GptLayout& base_layout = {}, const GptOptions& options = {});
  // Same, with the groups, tp_rank / tp_size and (when base_layout has none)
  // tp_group taken from the grid; base_layout.sequence_parallel is kept.
  PipelineStage(const GptConfig& config, Backend& backend, const ProcessGrid& grid, const PipelineConfig& pipe,
                const GptLayout& base_layout = {}, const GptOptions& options = {});
  ~PipelineStage();
  PipelineStage(const PipelineStage&) = delete;
  PipelineStage& operator=(const PipelineStage&) = delete;

  // Forward and backward of every micro-batch with the configured schedule;
  // gradients ACCUMULATE into the chunks' parameters (call zero_grad() between
  // optimizer steps). loss_weight as in Gpt::forward (1 / tokens of the global
  // batch gives the mean). With reduce_tied_grads, call run_step once per
  // optimizer step (a second call would all-reduce the first one's wte
  // gradient again). Collective over the pp group.
  StepResult run_step(const std::vector<MicroBatch>& micro_batches, float loss_weight);

  // Sums the tied wte gradient over the embedding group (no-op when this rank
  // holds no copy, pp == 1 or the embeddings are untied).
  void reduce_tied_grads();
  // Copies the embedding stage's wte values into the head stage's copy (e.g.
  // after loading weights that only set one copy). Collective over the embedding group.
  void sync_tied_embedding();
  // Throws pp3d::Error unless both wte copies are bitwise equal (checksum over the embedding group).
  void check_tied_embedding();

  // Every local parameter of every chunk (the optimizer's list).
  std::vector<Parameter*> parameters();
  void zero_grad();
  // Sum-of-squares reducer over the pp group, for clip_grad_norm / grad_norm
  // (compose with the TP/DP reductions in a 3D trainer).
  SumSquaresReducer sum_squares_reducer() const;

  int pp_rank() const { return pp_rank_; }
  int pp_size() const { return pp_size_; }
  int num_chunks() const { return static_cast<int>(chunks_.size()); }
  Gpt& chunk(int c) { return *chunks_.at(static_cast<std::size_t>(c)); }
  bool has_embedding() const;  // holds virtual stage 0
  bool has_head() const;       // holds virtual stage pp*v - 1
  const PipelineSplit& split() const { return split_; }
  const PipelineConfig& config() const { return pipe_; }
  const std::vector<PipeInstr>& plan(int num_micro_batches);

  // Writes Chrome trace JSON ({"traceEvents": [...]}, one "X" event per op,
  // pid = pp rank, tid 0 compute / 1 communication) of `result`'s events.
  void write_trace(const std::string& path, const StepResult& result) const;

 private:
  void build(const GptConfig& config, Backend& backend, const GptLayout& base_layout, const GptOptions& options);
  Parameter* tied_copy();
  double now_us() const;

  PipelineConfig pipe_;
  std::shared_ptr<Communicator> pp_group_, embedding_group_;
  int pp_rank_ = 0, pp_size_ = 1;
  PipelineSplit split_;
  std::vector<std::unique_ptr<Gpt>> chunks_;
  std::map<int, std::vector<PipeInstr>> plans_;  // by number of micro-batches
  double clock_origin_ = 0;
  int64_t seq_ = 0;
};

using PipelineEngine = PipelineStage;

// Writes several ranks' events into one Chrome trace file (pid = rank).
void write_chrome_trace(const std::string& path, const std::vector<std::vector<PipelineEvent>>& per_rank);
// Gathers every pp rank's events on pp rank 0 and writes one merged trace there
// (collective over the pp group; other ranks write nothing).
void write_merged_trace(Communicator& pp_group, const std::string& path, const StepResult& result);

}  // namespace pp3d
