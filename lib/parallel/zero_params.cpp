// ZeroOptimizer layer hooks and ZeRO-3 parameter gathering: a layer's buckets
// are all-gathered before its forward/backward (reference counted, so a tied
// wte used by the embedding and the head, or overlapping pipeline
// micro-batches, are handled), the next prefetch_layers layers are gathered
// asynchronously, and the full values are freed when no layer uses them.
#include <algorithm>

#include "pp3d/core/error.h"
#include "pp3d/parallel/zero_optimizer.h"

namespace pp3d {

void ZeroOptimizer::install_hooks() {
  for (std::size_t m = 0; m < models_.size(); ++m) {
    hooks_.push_back(std::make_unique<Hooks>(*this, static_cast<int>(m)));
    models_[m]->set_layer_hooks(hooks_.back().get());
  }
}

ZeroOptimizer::~ZeroOptimizer() {
  for (std::size_t m = 0; m < hooks_.size(); ++m)
    if (models_[m]->layer_hooks() == hooks_[m].get()) models_[m]->set_layer_hooks(nullptr);
}

namespace {
const std::vector<int>& uses_of(const BucketPlan& plan, int model, int64_t layer) {
  static const std::vector<int> none;
  const auto& u = plan.uses[static_cast<std::size_t>(model)];
  auto it = u.find(layer);
  return it == u.end() ? none : it->second;
}
}  // namespace

void ZeroOptimizer::on_before(int model, int64_t layer, bool forward) {
  if (!forward) buckets_->before_backward(model, layer);
  else buckets_->progress();  // reductions still in flight during a pipeline's next forward
  if (cfg_.stage != 3) return;
  const BucketPlan& plan = buckets_->plan();
  for (int b : uses_of(plan, model, layer)) acquire(b);
  // Prefetch the next layers in execution order (forward: up, backward: down).
  const auto& order = plan.layers[static_cast<std::size_t>(model)];
  const auto it = std::find(order.begin(), order.end(), layer);
  if (it == order.end()) return;
  const auto i = static_cast<int64_t>(it - order.begin());
  for (int k = 1; k <= cfg_.prefetch_layers; ++k) {
    const int64_t j = forward ? i + k : i - k;
    if (j < 0 || j >= static_cast<int64_t>(order.size())) break;
    for (int b : uses_of(plan, model, order[static_cast<std::size_t>(j)])) prefetch(b);
  }
}

void ZeroOptimizer::on_after(int model, int64_t layer, bool backward) {
  if (backward) buckets_->after_backward(model, layer);
  if (cfg_.stage != 3) return;
  for (int b : uses_of(buckets_->plan(), model, layer)) release(b);
}

void ZeroOptimizer::point_values(int b) {
  const GradBucket& bk = buckets_->plan().buckets[static_cast<std::size_t>(b)];
  const Tensor& full = state_[static_cast<std::size_t>(b)].value_full;
  for (std::size_t i = 0; i < bk.params.size(); ++i) {
    Parameter& p = *bk.params[i];
    const Shape shape = shard_local_shape(p.global_shape, p.shard);
    p.value = full.slice(bk.offsets[i], bk.offsets[i] + shape_numel(shape)).reshape(shape);
  }
}

void ZeroOptimizer::prefetch(int b) {
  BucketState& st = state_[static_cast<std::size_t>(b)];
  if (st.value_full.defined()) return;  // gathered or in flight
  const int64_t padded = buckets_->plan().buckets[static_cast<std::size_t>(b)].padded;
  st.value_full = Tensor::empty({padded}, st.value_shard.dtype(), st.value_shard.device(), MemCategory::Params);
  st.gather = dp_->all_gather_async(st.value_shard, st.value_full);
}

void ZeroOptimizer::acquire(int b) {
  BucketState& st = state_[static_cast<std::size_t>(b)];
  ++st.refs;
  if (!st.value_full.defined()) prefetch(b);
  if (st.gather) {
    st.gather->wait();
    st.gather.reset();
    point_values(b);
  }
}

void ZeroOptimizer::release(int b) {
  BucketState& st = state_[static_cast<std::size_t>(b)];
  PP3D_CHECK(st.refs > 0, "ZeroOptimizer: bucket {} released more often than gathered (unbalanced layer hooks)", b);
  if (--st.refs > 0) return;
  st.value_full = Tensor();
  for (Parameter* p : buckets_->plan().buckets[static_cast<std::size_t>(b)].params) p->value = Tensor();
}

void ZeroOptimizer::drop_all_gathered() {
  for (int b = 0; b < buckets_->num_buckets(); ++b) {
    BucketState& st = state_[static_cast<std::size_t>(b)];
    PP3D_CHECK(st.refs == 0, "ZeroOptimizer::step: bucket {} is still gathered for a running layer or by "
               "gather_parameters() (call release_parameters() first)", b);
    if (st.gather) {
      st.gather->wait();  // an unused prefetch
      st.gather.reset();
    }
    st.value_full = Tensor();
    for (Parameter* p : buckets_->plan().buckets[static_cast<std::size_t>(b)].params) p->value = Tensor();
  }
}

void ZeroOptimizer::gather_parameters() {
  if (cfg_.stage != 3) return;
  for (int b = 0; b < buckets_->num_buckets(); ++b) prefetch(b);
  for (int b = 0; b < buckets_->num_buckets(); ++b) acquire(b);
}

void ZeroOptimizer::release_parameters(bool write_back) {
  if (cfg_.stage != 3) return;
  for (int b = 0; b < buckets_->num_buckets(); ++b) {
    BucketState& st = state_[static_cast<std::size_t>(b)];
    if (write_back && st.value_full.defined()) {
      const auto [ob, oe] = buckets_->owned_range(b);
      st.value_shard.copy_from(st.value_full.slice(ob, oe));
      if (st.master.defined()) backend_->cast(st.value_shard, st.master);
    }
    release(b);
  }
}

}  // namespace pp3d
