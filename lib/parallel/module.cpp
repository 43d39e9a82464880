// The module contract's library side: the layer loop with hooks, split
// backward, and parameter ownership (include/pp3d/parallel/module.h).
#include "pp3d/parallel/module.h"

#include <map>
#include <set>

#include "pp3d/core/error.h"

namespace pp3d {

Tensor Layer::backward_input(const Tensor& dy, MicroBatchContext& ctx, LayerState& saved) {
  return backward(dy, ctx, saved);
}

void Layer::backward_weight(MicroBatchContext&, LayerState&) {}

std::vector<Parameter*> Module::parameters() {
  std::vector<Parameter*> out;
  std::set<Parameter*> seen;
  for (Layer* l : layers())
    for (Parameter* p : l->parameters())
      if (seen.insert(p).second) out.push_back(p);
  return out;
}

void Module::zero_grad() {
  for (Parameter* p : parameters()) backend().fill(p->grad, 0.0f);
}

Tensor ActivationCache::logits() const {
  PP3D_CHECK(ctx_.output.defined(), "no logits in this cache (head stage, Train mode, before backward only)");
  return ctx_.output;
}

void ActivationCache::clear() {
  ctx_ = MicroBatchContext{};
  states_.clear();
  active_ = weight_pending_ = false;
}

Tensor module_forward(Module& m, const Tensor& input, const Tensor& targets, float loss_weight,
                      ActivationCache& cache, ForwardMode mode) {
  PP3D_CHECK(!cache.active() && !cache.weight_pending(),
             "forward into an ActivationCache that still holds a micro-batch (run backward or clear() first)");
  PP3D_CHECK(input.defined(), "module forward: input is undefined");
  cache.clear();
  MicroBatchContext& ctx = cache.context();
  ctx.targets = targets;
  ctx.loss_weight = loss_weight;
  ctx.mode = mode;
  const std::vector<Layer*> layers = m.layers();
  LayerHooks* hooks = m.layer_hooks();
  Tensor x = m.prepare_input(input, ctx);
  auto& states = cache.states();
  states.resize(layers.size());
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const auto l = static_cast<int64_t>(i);
    if (hooks) hooks->before_forward(l);
    std::unique_ptr<LayerState> saved;
    x = layers[i]->forward(x, ctx, saved);
    if (ctx.train()) states[i] = std::move(saved);
    if (hooks) hooks->after_forward(l);
  }
  if (!ctx.train()) states.clear();
  cache.set_active(ctx.train());
  return x;
}

Tensor module_backward(Module& m, const Tensor& dout, ActivationCache& cache, BackwardPart part) {
  PP3D_CHECK(cache.active(), "backward on a cache without a pending Train-mode forward");
  MicroBatchContext& ctx = cache.context();
  const std::vector<Layer*> layers = m.layers();
  auto& states = cache.states();
  PP3D_CHECK(states.size() == layers.size(), "module backward: the cache holds {} layer states for {} layers",
             states.size(), layers.size());
  LayerHooks* hooks = m.layer_hooks();
  Tensor dx = dout;
  bool pending = false;
  for (std::size_t i = layers.size(); i-- > 0;) {
    const auto l = static_cast<int64_t>(i);
    PP3D_CHECK(states[i] != nullptr, "module backward: layer {} saved no state in forward", i);
    if (hooks) hooks->before_backward(l);
    if (part == BackwardPart::Input && layers[i]->splits_backward()) {
      dx = layers[i]->backward_input(dx, ctx, *states[i]);
      pending = true;  // after_backward fires once the weight part ran
      continue;
    }
    dx = layers[i]->backward(dx, ctx, *states[i]);
    states[i].reset();
    if (hooks) hooks->after_backward(l);
  }
  cache.set_active(false);
  cache.set_weight_pending(pending);
  ctx.output = Tensor();
  if (!pending) states.clear();
  return dx;
}

void module_backward_weight(Module& m, ActivationCache& cache) {
  if (!cache.weight_pending()) return;
  MicroBatchContext& ctx = cache.context();
  const std::vector<Layer*> layers = m.layers();
  auto& states = cache.states();
  LayerHooks* hooks = m.layer_hooks();
  for (std::size_t i = layers.size(); i-- > 0;) {
    if (states[i] == nullptr) continue;  // a layer without a split ran its full backward already
    layers[i]->backward_weight(ctx, *states[i]);
    states[i].reset();
    if (hooks) hooks->after_backward(static_cast<int64_t>(i));
  }
  states.clear();
  cache.set_weight_pending(false);
}

std::vector<int64_t> parameter_owner_layers(Module& m) {
  std::map<const Parameter*, int64_t> owner;
  const std::vector<Layer*> layers = m.layers();
  for (std::size_t i = 0; i < layers.size(); ++i)
    for (Parameter* p : layers[i]->parameters()) owner.emplace(p, static_cast<int64_t>(i));
  std::vector<int64_t> out;
  for (Parameter* p : m.parameters()) {
    auto it = owner.find(p);
    PP3D_CHECK(it != owner.end(), "parameter '{}' of the module belongs to none of its layers", p->name);
    out.push_back(it->second);
  }
  return out;
}

}  // namespace pp3d
