// The module contract: what pp3d's primitives (PipelineStage, GradBucketer,
// ZeroOptimizer) need from a model. It knows nothing of GPT; any model made of
// layers implements it (docs/LIBRARY.md has a complete small example).
//
//  Layer   one unit of computation with its parameters: forward and backward
//          of one micro-batch, saving what backward needs in a LayerState it
//          creates. Backward may be split into an input-gradient part and a
//          weight-gradient part (zero-bubble schedules run them apart).
//  Module  one pipeline chunk: an ordered list of layers (forward order), the
//          shapes it exchanges with its neighbours, and the parameters it
//          shares with another pipeline stage (a tied embedding).
//  ActivationCache  everything one micro-batch of one module keeps between
//          forward and backward (the layers' states, loss, published output).
//
// The library runs the layer loop (module_forward / module_backward below)
// and fires the module's LayerHooks around every layer: that is where ZeRO-3
// gathers and releases parameters and where gradient buckets learn that a
// layer's gradients are complete. Hooks receive the layer's position in
// Module::layers() (0 = first in forward order).
//
// A parameter may be listed by several layers of one module (a tied embedding
// used by the input embedding and the output head); its gradient is complete
// after the backward of the first such layer in forward order (the last one
// to run backward), which "owns" it.
#pragma once

#include <cstdint>
#include <memory>
#include <type_traits>
#include <vector>

#include "pp3d/backend/backend.h"
#include "pp3d/core/parameter.h"
#include "pp3d/core/tensor.h"

namespace pp3d {

// Callbacks around each layer's forward and backward, fired by the library.
// `layer` is the position in Module::layers(). The default does nothing.
class LayerHooks {
 public:
  virtual ~LayerHooks() = default;
  virtual void before_forward(int64_t layer) {}
  virtual void after_forward(int64_t layer) {}
  virtual void before_backward(int64_t layer) {}
  // The layer's parameter gradients have received this micro-batch's
  // contribution and its parameters are no longer needed for it (after the
  // weight-gradient part when the backward is split).
  virtual void after_backward(int64_t layer) {}
};

enum class ForwardMode {
  Train,  // keep what backward needs
  Eval,   // keep nothing (loss only); backward on this cache throws
};

// What a layer saves between its forward and backward (subclass it).
struct LayerState {
  virtual ~LayerState() = default;
};

// Per micro-batch values every layer of a module may read or write.
struct MicroBatchContext {
  Tensor targets;            // read by the loss layer (last stage); may be undefined elsewhere
  float loss_weight = 0.0f;  // the loss layer adds loss_weight * (sum of its per-sample losses) to loss
  ForwardMode mode = ForwardMode::Train;
  double loss = 0.0;         // accumulated by the loss layer
  Tensor output;             // optional tensor the last layer publishes (e.g. logits); Train mode only
  bool train() const { return mode == ForwardMode::Train; }
};

class Layer {
 public:
  virtual ~Layer() = default;
  // The parameters this layer reads (a shared one may be listed by several layers).
  virtual std::vector<Parameter*> parameters() = 0;
  // Forward of one micro-batch. In Train mode put what backward needs into
  // `saved` (the library keeps it in the ActivationCache); in Eval mode keep
  // nothing. Returns the output (undefined for a loss layer).
  virtual Tensor forward(const Tensor& x, MicroBatchContext& ctx, std::unique_ptr<LayerState>& saved) = 0;
  // Full backward: ACCUMULATES parameter gradients, returns d(input)
  // (undefined when the input needs none, e.g. token ids). `saved` is consumed.
  virtual Tensor backward(const Tensor& dy, MicroBatchContext& ctx, LayerState& saved) = 0;
  // Split backward (optional): backward_input returns d(input) and keeps in
  // `saved` what backward_weight needs; backward_weight then accumulates the
  // parameter gradients. Must equal backward() in sum.
  virtual bool splits_backward() const { return false; }
  virtual Tensor backward_input(const Tensor& dy, MicroBatchContext& ctx, LayerState& saved);
  virtual void backward_weight(MicroBatchContext& ctx, LayerState& saved);
};

class Module {
 public:
  virtual ~Module() = default;
  // The layers in forward order; stable for the module's lifetime.
  virtual std::vector<Layer*> layers() = 0;
  // Every parameter once, in layer order (the default deduplicates layers()).
  virtual std::vector<Parameter*> parameters();
  // Parameters another pipeline stage holds a copy of (a tied embedding):
  // PipelineStage sums their gradients over its shared group after the
  // micro-batches, and gradient buckets reduce them only after that.
  virtual std::vector<Parameter*> shared_parameters() { return {}; }
  // The activation this module sends to the next stage for a micro-batch of
  // `batch` rows of `seq` positions, and the one it receives (same as the
  // output by default). Gradients travel in f32 with the same shapes.
  virtual Shape output_shape(int64_t batch, int64_t seq) const = 0;
  virtual Shape input_shape(int64_t batch, int64_t seq) const { return output_shape(batch, seq); }
  virtual DType activation_dtype() const { return DType::F32; }
  virtual Backend& backend() const = 0;
  // Checks / adapts the module's input before the first layer (default: as is).
  virtual Tensor prepare_input(const Tensor& input, MicroBatchContext& ctx) { return input; }

  // Zeroes every parameter's gradient (gradients accumulate across backward calls).
  void zero_grad();

  // Installs hooks (nullptr removes them); they must outlive their use.
  void set_layer_hooks(LayerHooks* hooks) { hooks_ = hooks; }
  LayerHooks* layer_hooks() const { return hooks_; }

 private:
  LayerHooks* hooks_ = nullptr;
};

// What one micro-batch of one module keeps between forward and backward.
class ActivationCache {
 public:
  // True when a Train-mode forward filled the cache and no backward consumed it.
  bool active() const { return active_; }
  // After forward on the module with the loss layer: loss_weight * sum of losses.
  double loss() const { return ctx_.loss; }
  // What the last layer published (MicroBatchContext::output, e.g. logits);
  // throws when there is none.
  Tensor logits() const;
  // Frees everything (a forward that will not be backwarded).
  void clear();

  MicroBatchContext& context() { return ctx_; }
  std::vector<std::unique_ptr<LayerState>>& states() { return states_; }
  void set_active(bool a) { active_ = a; }
  // Backward split: layers whose weight-gradient part is still pending.
  bool weight_pending() const { return weight_pending_; }
  void set_weight_pending(bool p) { weight_pending_ = p; }

 private:
  MicroBatchContext ctx_;
  std::vector<std::unique_ptr<LayerState>> states_;
  bool active_ = false;
  bool weight_pending_ = false;
};

enum class BackwardPart {
  Full,   // input and weight gradients (the default)
  Input,  // input gradients only; run module_backward_weight later
};

// The library's forward of one micro-batch through the module's layers,
// firing its hooks. Returns the last layer's output.
Tensor module_forward(Module& m, const Tensor& input, const Tensor& targets, float loss_weight,
                      ActivationCache& cache, ForwardMode mode = ForwardMode::Train);
// Backward of a cache filled by module_forward (layers in reverse order,
// hooks fired). Full: consumes the cache. Input: layers that split their
// backward keep their state for module_backward_weight, which consumes it.
// Returns d(input) of the first layer.
Tensor module_backward(Module& m, const Tensor& dout, ActivationCache& cache,
                       BackwardPart part = BackwardPart::Full);
void module_backward_weight(Module& m, ActivationCache& cache);

// A list of Module subclasses (e.g. std::vector<Gpt*>) as Module pointers.
template <class M>
std::vector<Module*> as_modules(const std::vector<M*>& models) {
  static_assert(std::is_base_of_v<Module, M>, "as_modules needs Module subclasses");
  return std::vector<Module*>(models.begin(), models.end());
}

// The layer that owns each parameter of m (position of the first layer in
// forward order that lists it), in Module::parameters() order.
std::vector<int64_t> parameter_owner_layers(Module& m);

}  // namespace pp3d
