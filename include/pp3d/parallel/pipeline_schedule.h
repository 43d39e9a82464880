// Pipeline-parallel layer splits and schedules (pure functions, no communication).
//
// PipelineSplit assigns the model's L transformer blocks to S = pp * v
// "virtual stages" (v = 1 except for the interleaved schedule). Virtual stage s
// lives on pipeline rank s % pp as its local chunk s / pp (Megatron's order:
// rank r holds chunks r, r + pp, r + 2pp, ...). Virtual stage 0 also holds the
// embedding, virtual stage S - 1 the final LayerNorm, head and loss.
//
// A schedule is, per rank, the order of its compute actions (forward/backward
// of (chunk, micro-batch); zero-bubble schedules split the backward into its
// input part B and its weight part W). make_pipeline_plan() turns the compute orders of
// ALL ranks into this rank's instruction list: compute actions with
// communication batches between them. The batches are placed from a
// simulated timeline of the whole pipeline (every rank computes the same
// simulation) so that the plan is deadlock-free with blocking batched
// send/recv: a transfer is sent right after the op that produced it and
// received at the receiver's first op boundary at or after the production
// time (see docs/PIPELINE.md for the argument). Adding a schedule = adding a
// compute order in compute_order().
// Thread-safe (no shared state).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace pp3d {

enum class ScheduleKind { GPipe, OneFOneB, Interleaved, ZeroBubbleH1 };

// "gpipe", "1f1b", "interleaved" (also "interleaved-1f1b"), "zb-h1"; anything
// else is a pp3d::Error.
ScheduleKind parse_schedule(std::string_view name);
const char* schedule_name(ScheduleKind k);
// Whether the schedule runs the backward in two parts (input, weight).
bool splits_backward(ScheduleKind k);

// Layer ranges of the S = pp * v virtual stages.
struct PipelineSplit {
  int pp = 1;
  int v = 1;
  std::vector<int64_t> layers_per_stage;  // size pp * v, indexed by virtual stage

  // Balanced: L / S layers each; the L % S extra layers go to the first stages.
  // Requires L >= S (every virtual stage gets >= 1 layer).
  static PipelineSplit balanced(int64_t num_layers, int pp, int v = 1);
  // Explicit "5,7,6,6": one non-negative count per virtual stage (in virtual
  // stage order), summing to num_layers. Middle stages need >= 1 layer; the
  // first and the last virtual stage may hold 0 (embedding-only / head-only
  // stage). "" means balanced(). Errors name the offending entry.
  static PipelineSplit parse(const std::string& spec, int64_t num_layers, int pp, int v = 1);

  int num_stages() const { return pp * v; }
  // First layer of virtual stage s and one past its last.
  int64_t first_layer(int s) const;
  int64_t end_layer(int s) const;
  // Virtual stage of local chunk c on pipeline rank r.
  int stage_of(int rank, int chunk) const { return chunk * pp + rank; }
  // "[0,5) [5,12) [12,18) [18,24)"
  std::string str() const;
};

// One compute action of a rank. Backward is the whole backward; zero-bubble
// schedules run BackwardInput (d(input), sent upstream: the critical path) and
// later BackwardWeight (the parameter gradients; no communication) instead.
struct PipeAction {
  enum Kind { Forward, Backward, BackwardInput, BackwardWeight } kind = Forward;
  int chunk = 0;  // local chunk index on this rank
  int mb = 0;     // micro-batch index
};

// One tensor moved between neighbouring virtual stages.
struct PipeTransfer {
  enum Kind { Activation, Gradient } kind = Activation;
  bool send = false;
  int chunk = 0;  // local chunk on THIS rank that produces (send) or consumes (recv) it
  int mb = 0;
  int peer = 0;   // rank in the pipeline group
  int tag = 0;    // unique per (kind, sending virtual stage, mb) modulo 2^15
};

// An instruction of a rank's plan: a compute action or a batch of transfers.
struct PipeInstr {
  bool is_compute = true;
  PipeAction action;                   // when is_compute
  std::vector<PipeTransfer> transfers;  // when !is_compute (posted together)
};

// Checks (pp, v, m) for the schedule; throws pp3d::Error with the reason:
// gpipe/1f1b/zb-h1 need v == 1; interleaved needs v >= 2, pp >= 2 and m % pp == 0
// (Megatron's requirement); m >= 1 always.
void check_schedule_args(ScheduleKind kind, int pp, int v, int m);

// Compute order of pipeline rank `rank` (forward of every (chunk, mb) exactly
// once, then either its Backward or its BackwardInput and later its
// BackwardWeight).
std::vector<PipeAction> compute_order(ScheduleKind kind, int pp, int rank, int v, int m);

// The instruction list of `rank` (see the header comment).
std::vector<PipeInstr> make_pipeline_plan(ScheduleKind kind, int pp, int rank, int v, int m);

// Theoretical bubble of the schedule relative to the ideal compute time, with
// T_F = T_B = T_W (a full backward costs 2 T_F): (pp - 1) / m, (pp - 1) / (v * m)
// for interleaved, (pp - 1) / (3m) for zb-h1 when m >= pp (with fewer
// micro-batches the W's cannot fill the warm-up: (2pp - m - 1) / (3m)).
double theoretical_bubble(ScheduleKind kind, int pp, int v, int m);

// Bubble of the schedule's compute orders in the plan's ideal simulation
// (F = B = W = 1, full backward 2, zero-latency links): (makespan - compute) / compute.
// Equals theoretical_bubble() for the built-in schedules (tested).
double simulated_bubble(ScheduleKind kind, int pp, int v, int m);
// The same for given compute orders (one per rank); throws pp3d::Error when
// they deadlock or break an order rule (backward before forward, a weight part
// without its input part, an op missing or repeated).
double simulated_bubble(const std::vector<std::vector<PipeAction>>& orders, int pp, int v, int m);

// Maximum number of micro-batches whose forward is done and whose backward
// (its weight part, when split) is not, over the compute order (a proxy for
// activation memory), summed over chunks.
int max_in_flight(const std::vector<PipeAction>& order);
// The same, counting a micro-batch only until its BackwardInput: the full
// activation sets held (the rest of max_in_flight hold only W's inputs).
int max_in_flight_before_input_grad(const std::vector<PipeAction>& order);

}  // namespace pp3d
