// GradBucketer: data-parallel gradient reduction in buckets, overlapped with
// the backward of the last micro-batch of a step (DDP-style), all-reduce
// (ZeRO-0) or reduce-scatter (ZeRO-1/2/3).
//
// Buckets: the parameters of one or more Modules (pipeline chunks; any model
// implementing pp3d/parallel/module.h) are grouped, in REVERSE layer order
// (by the layer that owns each parameter), into buckets of whole layers of about `bucket_mb` MB each (a bucket is closed as soon as it
// reaches the size; one layer per bucket with layer_per_bucket). Each bucket
// owns ONE contiguous gradient buffer (MemCategory::Grads; f32, or the
// models' 16-bit gradient dtype) and the
// parameters' `grad` tensors are re-pointed to views of it ("grads live in the
// flat buffer": no copy in or out). The buffer is padded to a multiple of the
// DP size so it reduce-scatters in equal chunks: rank r owns elements
// [r*padded/N, (r+1)*padded/N) of every bucket (the "owned range").
//
// A bucket is ready when every layer using its parameters has run backward
// (LayerHooks::after_backward of its lowest layer; a parameter listed by two
// layers, e.g. a tied embedding, is final after the first in forward order) for
// every backward pass started this step: with a split backward (zero-bubble
// schedules) after_backward fires after a layer's weight part, which may run
// after later micro-batches' input parts have begun. On the LAST
// micro-batch (set_last_micro_batch(true) before that micro-batch's backward)
// a ready bucket's reduction is launched asynchronously at once; finish()
// waits for all of them. Earlier micro-batches only accumulate (no
// communication). Gradients are SUMMED over DP (the model's loss_weight is
// 1/global tokens already).
// Modes:
//  AllReduce               the whole buffer is summed in place (ZeRO-0).
//  ReduceScatter           the owned range of the buffer receives the sum (via
//                          a Comm temporary); the rest keeps local partial sums (ZeRO-1).
//  ReduceScatterRelease    the sum goes to a persistent owned-range buffer
//                          shard(b) (Grads) and the full buffer is FREED as
//                          soon as its reduce-scatter completes; the model's
//                          grad tensors are then undefined until the next
//                          backward re-allocates them (zeroed) in
//                          before_backward (ZeRO-2/3).
// Reductions in flight are polled from every layer hook (completing them in
// launch order); with MpiCommunicator a background progress thread advances
// them during compute (lib/comm/mpi_progress.cpp). last_comm_stats() times
// them: how much of the communication was hidden behind the backward.
// ReduceScatterRelease frees the full buffers at construction too, so the
// state between steps (and before the first) is the owned shard only.
// Pipeline + shared parameters (Module::shared_parameters, e.g. a tied
// embedding split over the first and last stage): a bucket holding one is
// "deferred": it is reduced in finish(), after PipelineStage::run_step has
// summed it over the pipeline's shared group.
//
// The bucketer installs itself as the models' LayerHooks when
// install_hooks is set (standalone data parallelism); ZeroOptimizer forwards
// its own hooks instead. Used from the model's thread only.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "pp3d/comm/communicator.h"
#include "pp3d/parallel/module.h"

namespace pp3d {

// One bucket: whole layers [lo_layer, hi_layer] (positions in the module's
// layers()) of model `model`.
struct GradBucket {
  int model = 0;
  int64_t lo_layer = 0, hi_layer = 0;
  std::vector<Parameter*> params;
  std::vector<int64_t> offsets;  // element offset of each parameter in the flat buffer
  int64_t numel = 0;             // real elements
  int64_t padded = 0;            // numel rounded up to a multiple of the DP size
  bool deferred = false;         // reduced in finish() (tied wte copy under pipeline parallelism)
  DType dtype = DType::F32;      // gradient dtype of every parameter in it (f32, or 16-bit gradients)
};

// The bucket layout of a list of models, and which buckets each layer uses.
struct BucketPlan {
  std::vector<GradBucket> buckets;
  // uses[model][layer]: the buckets holding parameters that layer lists
  // (its own, plus e.g. the embedding bucket for the head of a tied whole model).
  std::vector<std::map<int64_t, std::vector<int>>> uses;
  // layers[model]: the model's layer positions in forward order (0 .. n-1).
  std::vector<std::vector<int64_t>> layers;
};

// Groups the models' parameters (see the header comment). bucket_bytes is in
// bytes of gradient (in the gradients' own dtype); pad_multiple is the DP size.
BucketPlan plan_grad_buckets(const std::vector<Module*>& models, int64_t bucket_bytes, int pad_multiple,
                             bool layer_per_bucket);

enum class BucketMode { AllReduce, ReduceScatter, ReduceScatterRelease };

struct GradBucketConfig {
  double bucket_mb = 25.0;        // bucket size in MB (1e6 bytes) of gradient (its dtype); > 0
  BucketMode mode = BucketMode::AllReduce;
  bool layer_per_bucket = false;  // ZeRO-3: one layer per bucket (matches parameter gathering)
  bool install_hooks = true;      // set the models' LayerHooks to this bucketer
  bool overlap = true;            // false: every reduction is launched in finish() (no overlap; benchmarks)
};

// Timing of one step's gradient reductions (steady clock, ms). A reduction is
// "in flight" from its launch until its completion is observed (a poll from a
// layer hook or the wait in finish(), so an upper bound on its true duration).
//  comm_ms     the union of the in-flight intervals (wall time with a reduction running)
//  exposed_ms  the time finish() spent launching deferred buckets and waiting
//              (the step is blocked on communication only there)
//  hidden_fraction() = 1 - exposed / comm (clamped to [0, 1]; 0 without communication)
struct GradCommStats {
  int reductions = 0;
  int launched_in_backward = 0;
  double comm_ms = 0.0;
  double exposed_ms = 0.0;
  std::vector<double> launch_ms, done_ms;  // per bucket, relative to the step's first launch (-1: none)
  double hidden_fraction() const;
};

class GradBucketer {
 public:
  // Re-points every parameter's grad into the bucket buffers (current values
  // copied). dp: the data-parallel group (size 1 allowed). The models must
  // outlive the bucketer; with install_hooks the destructor uninstalls them.
  GradBucketer(std::vector<Module*> models, std::shared_ptr<Communicator> dp, const GradBucketConfig& config);
  // Any vector of Module subclasses (e.g. std::vector<Gpt*>).
  template <class M, class = std::enable_if_t<std::is_base_of_v<Module, M> && !std::is_same_v<Module, M>>>
  GradBucketer(const std::vector<M*>& models, std::shared_ptr<Communicator> dp, const GradBucketConfig& config)
      : GradBucketer(as_modules(models), std::move(dp), config) {}
  ~GradBucketer();
  GradBucketer(const GradBucketer&) = delete;
  GradBucketer& operator=(const GradBucketer&) = delete;

  // Whether the coming backward(s) are the last micro-batch of the step
  // (launch reductions as buckets become ready). Reset by finish().
  void set_last_micro_batch(bool last) { last_ = last; }
  bool last_micro_batch() const { return last_; }
  // Alternative for schedules that run all micro-batches in one call (e.g.
  // PipelineStage::run_step): with m > 0 the bucketer counts each model's
  // backward passes since finish() and treats the m-th as the last. 0: off.
  void set_micro_batches_per_step(int m);

  // Hook entry points (called by the installed hooks or by ZeroOptimizer).
  void before_backward(int model, int64_t layer);
  void after_backward(int model, int64_t layer);
  // Completes the reductions that have finished (launch order); cheap when none is in flight.
  void progress() {
    if (!in_flight_.empty()) poll();
  }

  // Launches the deferred buckets, waits for every reduction and completes it.
  // Throws when a bucket was never launched (no last micro-batch backward seen).
  void finish();
  // Zeroes every allocated full gradient buffer (Release mode: the owned shards
  // are overwritten by the next reduction and need no zeroing).
  void zero_grad();

  const BucketPlan& plan() const { return plan_; }
  int num_buckets() const { return static_cast<int>(plan_.buckets.size()); }
  // Owned element range [begin, end) of bucket b in flat coordinates
  // (AllReduce: the whole bucket [0, numel)).
  std::pair<int64_t, int64_t> owned_range(int b) const;
  // The reduced gradient of the owned range after finish(): AllReduce: the
  // whole buffer; ReduceScatter: a view of the buffer's owned range;
  // ReduceScatterRelease: the persistent shard buffer.
  Tensor reduced(int b) const;
  // The full buffer (undefined when released).
  const Tensor& full(int b) const { return state_[static_cast<std::size_t>(b)].full; }
  Communicator& dp() const { return *dp_; }
  BucketMode mode() const { return cfg_.mode; }
  // Number of reductions launched during backward (not in finish) in the last step.
  int launched_in_backward() const { return launched_in_backward_; }
  // Timing of the last finished step's reductions (valid after finish()).
  const GradCommStats& last_comm_stats() const { return stats_; }

 private:
  struct State {
    Tensor full;   // [padded] Grads
    Tensor shard;  // Release: [padded/N] Grads persistent
    Tensor tmp;    // ReduceScatter: [padded/N] Comm while in flight
    std::unique_ptr<CommHandle> handle;
    bool launched = false;
    double t_launch = -1.0, t_done = -1.0;  // ms on the steady clock
  };
  class Hooks;

  void allocate(int b);
  void launch(int b);
  void complete(int b);
  void poll();
  void record_stats(double exposed_ms);
  bool is_last(int model) const;

  std::vector<Module*> models_;
  std::shared_ptr<Communicator> dp_;
  GradBucketConfig cfg_;
  BucketPlan plan_;
  std::vector<State> state_;
  std::vector<int> in_flight_;  // launch order
  std::vector<std::unique_ptr<Hooks>> hooks_;
  bool last_ = false;
  int micro_batches_ = 0;
  std::vector<int> backward_count_;  // per model, since finish(): backward passes started
  std::vector<std::vector<int>> after_count_;  // [model][layer], since finish(): after_backward calls
  std::vector<std::vector<int64_t>> bucket_layers_;  // [bucket]: the layers whose backward completes it
  bool complete_for_step(int b) const;
  int launched_in_backward_ = 0;
  GradCommStats stats_;
};

}  // namespace pp3d
