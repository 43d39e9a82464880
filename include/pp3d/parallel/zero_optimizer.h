// ZeroOptimizer: data-parallel AdamW with ZeRO stage 0, 1, 2 or 3 over one
// data-parallel group (docs/ZERO.md).
//
//  stage 0  gradients all-reduced (summed) in buckets during the last
//           micro-batch's backward; every rank steps every parameter.
//  16-bit parameters (bf16 / f16 Parameter values): the f32 master copy is kept
//           with m and v (sharded like them from stage 1), initialised with
//           the exact f32 init values (master_initial_values); gradients f32,
//           or 16-bit (the parameters' dtype): flat buffers, reductions,
//           norm and the AdamW read of the owned shard then use that dtype.
//  stage 1  Adam m, v (and the f32 master copy of 16-bit parameters) only for
//           the owned 1/N_d range of every bucket's flat buffer; gradients
//           reduce-scattered in buckets; the owned range stepped; parameters
//           all-gathered after the step.
//  stage 2  + the full gradient buffers are freed as soon as their
//           reduce-scatter completes (only the owned gradient shard persists
//           between steps); they are re-allocated (zeroed) at the first
//           backward of the next step.
//  stage 3  + parameters: only the owned shard persists; a layer's buckets are
//           all-gathered just before its forward and its backward (prefetching
//           the next `prefetch_layers` layers asynchronously) and freed after.
//
// Layout of everything: the GradBucketer's buckets (reverse layer order, whole
// layers, about bucket_mb MB; one layer per bucket in stage 3). Parameter
// values and gradients are re-pointed to views of flat per-bucket buffers:
// Params, Grads, Optimizer and Comm (temporaries) in the allocator accounting.
// Consequences a trainer must respect:
//  - use ZeroOptimizer::zero_grad(), not the model's own zero_grad() / PipelineStage::
//    zero_grad() (in stage 2/3 Parameter::grad is undefined between steps);
//  - in stage 3 Parameter::value is undefined outside a layer's forward /
//    backward: call gather_parameters() to read or write full values
//    (checkpoint, export) and release_parameters() after;
//  - the ZeroOptimizer installs itself as the models' LayerHooks (the hooks
//    must stay installed while forward/backward run).
// All ranks of the DP group hold the same model layout and initial values
// (pp3d initialisation is layout independent) and call every member below
// together (collectives). Tensor / pipeline parallelism: one ZeroOptimizer per
// model-parallel rank, over its DP group; the global norm reduction over the
// TP/PP groups is passed in as a SumSquaresReducer. Not thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "pp3d/backend/backend.h"
#include "pp3d/comm/communicator.h"
#include "pp3d/parallel/grad_buckets.h"
#include "pp3d/optim/optimizer.h"

namespace pp3d {

struct ZeroConfig {
  int stage = 0;            // 0, 1, 2 or 3
  double bucket_mb = 25.0;  // gradient bucket size (MB of gradient, in its dtype); > 0
  int prefetch_layers = 1;  // stage 3: layers gathered ahead asynchronously (0: none)
  bool overlap_comm = true; // false: gradient reductions all start in finish_gradient_sync() (benchmarks)
  AdamWConfig adamw;
};

class ZeroOptimizer {
 public:
  // Takes over the storage of every parameter of `models` (the chunks one
  // rank holds: any Module, e.g. one Gpt without pipeline interleaving). The
  // models and the backend must outlive the optimizer. Collective over dp.
  ZeroOptimizer(Backend& backend, std::vector<Module*> models, std::shared_ptr<Communicator> dp,
                const ZeroConfig& config);
  // Any vector of Module subclasses (e.g. std::vector<Gpt*>).
  template <class M, class = std::enable_if_t<std::is_base_of_v<Module, M> && !std::is_same_v<Module, M>>>
  ZeroOptimizer(Backend& backend, const std::vector<M*>& models, std::shared_ptr<Communicator> dp,
                const ZeroConfig& config)
      : ZeroOptimizer(backend, as_modules(models), std::move(dp), config) {}
  ~ZeroOptimizer();
  ZeroOptimizer(const ZeroOptimizer&) = delete;
  ZeroOptimizer& operator=(const ZeroOptimizer&) = delete;

  // ---- per step, in this order ------------------------------------------------
  // Clears the accumulated gradients (start of a step).
  void zero_grad();
  // Call with true before the backward of the step's last micro-batch, false
  // (the default) otherwise.
  void set_last_micro_batch(bool last) { buckets_->set_last_micro_batch(last); }
  // Or, once: the number of micro-batches per step (each model's m-th
  // backward since the last finish is then the last; for pipeline schedules
  // that run every micro-batch inside one call). 0 turns it off.
  void set_micro_batches_per_step(int m) { buckets_->set_micro_batches_per_step(m); }
  // Waits for (and launches the deferred) gradient reductions: after it the
  // owned gradients hold the sum over DP. Call after the last backward (and
  // after PipelineStage::run_step's tied-embedding reduction).
  void finish_gradient_sync();
  // Global L2 norm of the reduced gradients, counting each parameter once
  // (counted_in_norm): owned ranges summed over DP here, then `reduce_other`
  // (TP / PP groups). Does not modify gradients.
  float grad_norm(const SumSquaresReducer& reduce_other = {});
  // grad_norm, then scales the owned gradients by clip_coefficient when the
  // norm exceeds max_norm (> 0). Returns the norm before clipping.
  float clip_grad_norm(float max_norm, const SumSquaresReducer& reduce_other = {});
  // Multiplies the owned reduced gradients by `factor` (clipping, loss-scale
  // removal; local, no communication).
  void scale_gradients(float factor);
  // True when any owned reduced gradient is inf/NaN on THIS rank (local; the
  // DynamicLossScaler agrees over all ranks).
  bool local_grads_nonfinite();
  // AdamW on the owned ranges (gradients multiplied by grad_scale first),
  // then (stage 1/2) all-gather of the parameters. Increments step_count().
  void step(float lr, float grad_scale = 1.0f);

  // ---- stage 3 helpers (no-ops in stages 0-2) ----------------------------------
  // Gathers every parameter's full value (collective); release_parameters()
  // frees them again. Values written while gathered are NOT kept (the owned
  // shard is the truth) unless write_back is true.
  void gather_parameters();
  void release_parameters(bool write_back = false);

  int stage() const { return cfg_.stage; }
  int64_t step_count() const { return step_; }
  void set_step_count(int64_t s) { step_ = s; }
  GradBucketer& buckets() { return *buckets_; }
  const GradBucketer& buckets() const { return *buckets_; }
  // dtype of the parameter values (f32, or bf16 / f16 with f32 masters).
  DType param_dtype() const { return param_dtype_; }
  const ZeroConfig& config() const { return cfg_; }
  // Elements (real, not padding) whose optimizer state this rank holds.
  int64_t owned_numel() const;

  // What this rank owns of one parameter (checkpointing, inspection): the
  // element range [begin, end) of the parameter's LOCAL tensor (row-major,
  // i.e. its TP shard as described by Parameter::shard) and views of the
  // matching optimizer state and values. Stage 0 owns every element of every
  // parameter. value: the owned values (stage 3: the persistent shard; else a
  // view of the parameter's value). master undefined for f32 parameters.
  // Writing through the views changes the optimizer's state.
  struct OwnedRange {
    Parameter* param;
    int64_t begin, end;
    Tensor value, m, v, master;
  };
  // One entry per (parameter, bucket) this rank owns a non-empty range of, in bucket order.
  std::vector<OwnedRange> owned_ranges();
  // Every parameter of the models (all buckets), in bucket order.
  std::vector<Parameter*> all_parameters() const;

  class Hooks;  // the per-model LayerHooks (lib/parallel/zero_params.cpp)

 private:
  struct Segment {
    Parameter* p;
    int64_t begin, end;  // flat bucket coordinates, inside the owned range
    int64_t offset;      // the parameter's first element in flat bucket coordinates
  };
  struct BucketState {
    Tensor value_full;   // stage 0-2 persistent; stage 3 while gathered
    Tensor value_shard;  // stage 3: owned range, persistent (Params)
    Tensor m, v, master; // owned range (Optimizer); master only for 16-bit params
    std::vector<Segment> segments;
    std::unique_ptr<CommHandle> gather;  // stage 3 prefetch in flight
    int refs = 0;                        // stage 3: layers currently using the gathered values
  };

  // hooks and stage 3 (zero_params.cpp)
  void install_hooks();
  void acquire(int b);
  void release(int b);
  void prefetch(int b);
  void point_values(int b);
  void on_before(int model, int64_t layer, bool forward);
  void on_after(int model, int64_t layer, bool backward);
  void drop_all_gathered();

  Tensor owned_values(int b);

  Backend* backend_;
  std::vector<Module*> models_;
  std::shared_ptr<Communicator> dp_;
  ZeroConfig cfg_;
  std::unique_ptr<GradBucketer> buckets_;
  std::vector<BucketState> state_;
  std::vector<std::unique_ptr<Hooks>> hooks_;
  int64_t step_ = 0;
  DType param_dtype_ = DType::F32;
};

// Forwards one model's layer hooks to its ZeroOptimizer (internal).
class ZeroOptimizer::Hooks final : public LayerHooks {
 public:
  Hooks(ZeroOptimizer& z, int model) : z_(z), model_(model) {}
  void before_forward(int64_t layer) override { z_.on_before(model_, layer, true); }
  void after_forward(int64_t layer) override { z_.on_after(model_, layer, false); }
  void before_backward(int64_t layer) override { z_.on_before(model_, layer, false); }
  void after_backward(int64_t layer) override { z_.on_after(model_, layer, true); }

 private:
  ZeroOptimizer& z_;
  int model_;
};

}  // namespace pp3d
