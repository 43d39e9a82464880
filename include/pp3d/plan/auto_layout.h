// pp3d-train's run in the planner's terms, and the automatic layout choice
// behind `pp3d-train --tp auto --pp auto [--zero-stage auto]` (./train --mode auto).
//
// trainer_plan() describes what Trainer(config, world) will allocate and run
// (model with the trainer's vocabulary and padding, layout, batch, pp3d's
// precision and "pp3d accounting" of memory); resolve_auto_layout() asks the
// planner for the fastest layout the trainer supports that fits, and writes it
// into the TrainConfig. Pure functions of their arguments (no communication,
// no clock, no hardware probing): every rank computes the same choice.
// Thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "pp3d/model/gpt_config.h"
#include "pp3d/plan/planner.h"
#include "pp3d/train/trainer.h"

namespace pp3d {

// The model Trainer builds for `c` with tensor-parallel size tp: the shape
// flags (or the --init-from checkpoint's), the vocabulary (--vocab-size, else
// 50257 for llm.c .bin shards, else 256 for bytes: the embedded corpus and
// text files) and the padding (64, or 64 * tp when 64 does not divide).
GptConfig trainer_model_config(const TrainConfig& c, int tp);

struct TrainerPlan {
  GptConfig model;
  Layout layout;         // dp from the world size; schedule, v, recompute, SP from c
  Workload work;         // global batch and seq_len of c
  Precision precision;   // Precision::pp3d(--bf16 || --fp16, compute16(), --activation-dtype param, --grad-dtype param)
  ModelOptions options;  // pp3d_accounting, --bucket-size-mb, --prefetch-layers, no workspace constant
};
// Requires c.tp, c.pp >= 1 and a layout c.resolve_layout(world_size) accepts.
TrainerPlan trainer_plan(const TrainConfig& c, int world_size);

// The cluster that `ranks` CPU processes on this machine form: the "cpu"
// preset (the whole 2-core machine: 0.15 TFLOP/s fp32, 20 GB/s, 24 GB) shared
// evenly, i.e. peak FLOP/s, memory bandwidth and memory divided by `ranks`,
// all ranks on one node (shared-memory MPI links). See docs/PLANNER.md.
Cluster cpu_ranks_cluster(int ranks);
// The cluster for a run of `world_size` ranks on `device` ("cpu" / "cuda" as
// resolved): cpu_ranks_cluster, or the GPU preset `gpu` ("h100" when empty)
// with min(world_size, 8) GPUs per node.
Cluster trainer_cluster(bool cuda, int world_size, const std::string& gpu);

// Which fields the planner chooses: TrainConfig spells "auto" as tp = 0,
// pp = 0, zero_stage = -1 (pp3d-train's parser maps the word to these) and
// schedule = "auto" (1f1b or zb-h1 where pp > 1; 1f1b where pp = 1).
struct AutoLayoutRequest {
  bool tp = false, pp = false, zero = false, schedule = false;
  bool any() const { return tp || pp || zero || schedule; }
  static AutoLayoutRequest from(const TrainConfig& c) {
    return {c.tp == 0, c.pp == 0, c.zero_stage < 0, c.schedule == "auto"};
  }
};

// Every layout the trainer supports for c on world_size ranks that fits the
// cluster's memory, fastest first (the planner's order: tokens/s, then less
// memory, then enumeration order tp, pp, zero, micro-batch). Fixed fields
// (not in `what`) keep c's value; the search covers tp | world (and heads, MLP,
// padded vocabulary, seq_len with --sequence-parallel), pp | num_layers,
// ZeRO 0-3 (0 when dp = 1), micro-batch rows 1, 2, 4, ... <= --batch-size
// dividing the per-DP-rank batch (exactly --micro-batches when given), c's
// schedule (1f1b when pp = 1; interleaved only where pp*v | layers and pp | m;
// with schedule auto: 1f1b and zb-h1) and recompute. The global batch is --global-batch-size, else --batch-size x
// max(1, --micro-batches) x world_size (the batch of pure data parallelism).
// `considered` receives the number of layouts evaluated.
std::vector<Candidate> rank_trainer_layouts(const TrainConfig& c, int world_size, const Cluster& cluster,
                                            const AutoLayoutRequest& what, int64_t* considered = nullptr);

struct AutoLayoutChoice {
  Candidate best;
  std::optional<Candidate> runner_up;
  int64_t considered = 0, feasible = 0;
  // "auto layout: tp 1 pp 2 dp 2 zero 1 micro-batches 4 of 2 rows (predicted 1.2e+04 tok/s, 0.02 GB/rank);
  //  runner-up: ..."
  std::string summary;
};

// Chooses rank_trainer_layouts(...)[0] and applies it to c: tp, pp,
// zero_stage, global_batch_size, micro_batch_size (micro_batches = 0:
// derived), the chosen schedule with schedule auto, and schedule "1f1b" /
// virtual_stages 1 when the choice has pp = 1.
// Throws pp3d::Error when no supported layout fits (naming the closest one and
// why). Afterwards c.validate(world_size) holds.
AutoLayoutChoice resolve_auto_layout(TrainConfig& c, int world_size, const Cluster& cluster,
                                     const AutoLayoutRequest& what);

}  // namespace pp3d
