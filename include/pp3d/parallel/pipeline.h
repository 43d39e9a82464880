// PipelineStage: this rank's part of a pipeline-parallel model and the
// executor of a pipeline schedule (GPipe, 1F1B, interleaved 1F1B, ZB-H1) over
// the pp group. Any model implementing the module contract (pp3d/parallel/module.h)
// can be pipelined: the caller builds this rank's chunk(s) (v of them with the
// interleaved schedule, else one; chunk c is virtual stage c * pp + pp_rank)
// and hands them over. GptPipelineStage (pp3d/model/gpt_pipeline.h) does that
// for pp3d's GPT.
//
// Ownership: the stage owns its chunks; it shares ownership of the pp and
// shared-parameter communicators. Activations travel as Module::output_shape /
// input_shape tensors (the receiver allocates input_shape in the module's
// activation dtype, gradients f32) whose shape both sides know (no shape
// exchange); receive buffers and the sent outputs are MemCategory::Activations
// and are released as soon as they are consumed / sent; each micro-batch's
// ActivationCache is freed by its backward.
//
// Shared parameters (Module::shared_parameters, e.g. a tied embedding whose
// copies live on the first and the last stage): the constructor checks
// (bitwise checksum over the shared group) that every copy is equal; run_step
// ends with an all-reduce (sum) of their gradients over the shared group so
// every copy holds the full gradient. Give the optimizer ALL of parameters()
// (every copy): they receive the same update and stay equal.
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
#include "pp3d/optim/optimizer.h"
#include "pp3d/parallel/module.h"
#include "pp3d/parallel/pipeline_schedule.h"

namespace pp3d {

class ProcessGrid;

struct PipelineConfig {
  ScheduleKind schedule = ScheduleKind::OneFOneB;
  int virtual_stages = 1;        // v: model chunks per rank (interleaved only)
  std::string split;             // layers per virtual stage: "" = balanced, else "5,7,6,6" (model builders read it)
  int64_t micro_batch_size = 1;  // rows per micro-batch
  int64_t seq_len = 0;           // positions per row, passed to Module::input_shape (GPT: 0 = max_seq_len)
  bool reduce_tied_grads = true;  // run_step ends with the shared-parameter gradient all-reduce
  bool timing = true;            // record per-op events and bubble statistics in StepResult
};

// One micro-batch: the first stage's input (GPT: token ids [mb, T] i32; any
// tensor the first chunk's layers take) and the targets the last stage's loss
// layer reads (GPT: [mb, T] i32). Other stages may pass undefined tensors.
struct MicroBatch {
  Tensor ids;
  Tensor targets;
};

// One timed operation of a step; times in microseconds since the stage's clock
// origin (set by a pp-group barrier at construction, so ranks are aligned).
struct PipelineEvent {
  // Backward: the whole backward, or its input part with zb-h1; Weight: zb-h1's weight part.
  enum Kind { Forward, Backward, Weight, Comm, Reduce } kind = Forward;
  std::string name;  // "F3", "B3", "W3" (with ".c1" for chunk 1 when v > 1), "send A3 recv G2", "tied-allreduce"
  int chunk = -1;
  int mb = -1;
  double start_us = 0, end_us = 0;
  bool is_compute() const { return kind == Forward || kind == Backward || kind == Weight; }
};

struct StepResult {
  // Sum over micro-batches of the last stage's loss() (loss_weight * losses),
  // broadcast from the last stage to every stage of the pipeline.
  double loss = 0.0;
  std::vector<PipelineEvent> events;  // this rank's, in execution order (when timing)
  double step_us = 0;                 // wall time of the step on this rank
  double compute_us = 0;              // sum of forward + backward (+ weight-part) durations
  // Idle time (step - compute) over step time, and over compute time: the
  // latter is what (p-1)/m predicts for uniform stages.
  double idle_fraction = 0;
  double bubble_ratio = 0;
  double theoretical_bubble = 0;  // (p-1)/m, (p-1)/(v*m) interleaved, (p-1)/(3m) zb-h1 (theoretical_bubble())
};

class PipelineStage {
 public:
  // Takes this rank's chunks (chunk c is virtual stage c * pp + pp_rank of
  // pp * chunks.size(); one chunk unless the schedule is interleaved).
  // pp_group: the pipeline group (rank = stage). shared_group: the ranks
  // holding copies of shared parameters (ProcessGrid::embedding_group(); may be
  // null where no chunk has shared parameters). pipe.seq_len must be > 0.
  // split: the layer split the chunks were built with (informational; empty:
  // none). Collective over pp_group.
  PipelineStage(std::vector<std::unique_ptr<Module>> chunks, std::shared_ptr<Communicator> pp_group,
                std::shared_ptr<Communicator> shared_group, const PipelineConfig& pipe,
                const PipelineSplit& split = {});
  virtual ~PipelineStage();
  PipelineStage(const PipelineStage&) = delete;
  PipelineStage& operator=(const PipelineStage&) = delete;

  // Forward and backward of every micro-batch with the configured schedule;
  // gradients ACCUMULATE into the chunks' parameters (call zero_grad() between
  // optimizer steps). loss_weight as in MicroBatchContext (1 / samples or
  // tokens of the global batch gives the mean). With reduce_tied_grads, call
  // run_step once per optimizer step (a second call would all-reduce the
  // first one's shared gradients again). Collective over the pp group.
  StepResult run_step(const std::vector<MicroBatch>& micro_batches, float loss_weight);

  // Sums the shared parameters' gradients over the shared group (no-op when
  // this rank holds none).
  void reduce_tied_grads();
  // Copies the first holder's shared parameter values into every other copy
  // (e.g. after loading weights that only set one copy). Collective over the shared group.
  void sync_tied_embedding();
  // Throws pp3d::Error unless all copies are bitwise equal (checksum over the shared group).
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
  Module& module(int c) { return *chunks_.at(static_cast<std::size_t>(c)); }
  // The chunks as Module pointers (GradBucketer / ZeroOptimizer input).
  std::vector<Module*> modules();
  bool has_embedding() const;  // holds virtual stage 0 (the first stage)
  bool has_head() const;       // holds virtual stage pp*v - 1 (the loss)
  const PipelineSplit& split() const { return split_; }
  const PipelineConfig& config() const { return pipe_; }
  const std::vector<PipeInstr>& plan(int num_micro_batches);

  // Writes Chrome trace JSON ({"traceEvents": [...]}, one "X" event per op,
  // pid = pp rank, tid 0 compute / 1 communication) of `result`'s events.
  void write_trace(const std::string& path, const StepResult& result) const;

 private:
  std::vector<Parameter*> shared_copies();
  double now_us() const;

  PipelineConfig pipe_;
  std::shared_ptr<Communicator> pp_group_, shared_group_;
  int pp_rank_ = 0, pp_size_ = 1;
  PipelineSplit split_;
  std::vector<std::unique_ptr<Module>> chunks_;
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
