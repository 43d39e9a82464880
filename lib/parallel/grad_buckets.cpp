// GradBucketer: bucket planning, flat gradient buffers and the overlapped
// DP reduction (see include/pp3d/parallel/grad_buckets.h).
#include "pp3d/parallel/grad_buckets.h"

#include <algorithm>
#include <chrono>
#include <set>

#include "pp3d/core/error.h"

namespace pp3d {

namespace {

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

BucketPlan plan_grad_buckets(const std::vector<Module*>& models, int64_t bucket_bytes, int pad_multiple,
                             bool layer_per_bucket) {
  PP3D_CHECK(bucket_bytes > 0, "bucket size must be positive, got {} bytes", bucket_bytes);
  PP3D_CHECK(pad_multiple >= 1, "pad multiple (DP size) must be >= 1, got {}", pad_multiple);
  BucketPlan plan;
  plan.uses.resize(models.size());
  plan.layers.resize(models.size());
  std::map<const Parameter*, int> bucket_of;
  for (std::size_t mi = 0; mi < models.size(); ++mi) {
    Module* m = models[mi];
    PP3D_CHECK(m != nullptr, "GradBucketer: model {} is null", mi);
    const std::vector<Parameter*> params = m->parameters();
    PP3D_CHECK(!params.empty(), "GradBucketer: model {} has no parameters", mi);
    const std::vector<int64_t> owner = parameter_owner_layers(*m);
    const std::vector<Parameter*> shared_list = m->shared_parameters();
    const std::set<const Parameter*> shared(shared_list.begin(), shared_list.end());
    // Parameters grouped by the layer that owns them (their gradient is final after its backward).
    std::map<int64_t, std::vector<Parameter*>> by_layer;
    for (std::size_t k = 0; k < params.size(); ++k) {
      Parameter* p = params[k];
      PP3D_CHECK(p->grad.defined() && is_floating(p->grad.dtype()) && p->grad.numel() == p->value.numel(),
                 "parameter '{}' needs a float gradient of its shape (got {})", p->name,
                 p->grad.defined() ? p->grad.str() : std::string("undefined"));
      PP3D_CHECK(p->grad.dtype() == params.front()->grad.dtype(),
                 "GradBucketer: every gradient of a model must share one dtype ('{}' is {}, '{}' is {})", p->name,
                 dtype_name(p->grad.dtype()), params.front()->name, dtype_name(params.front()->grad.dtype()));
      by_layer[owner[k]].push_back(p);
    }
    const auto num_layers = static_cast<int64_t>(m->layers().size());
    for (int64_t l = 0; l < num_layers; ++l) plan.layers[mi].push_back(l);
    // Reverse layer order: the order in which gradients become final.
    GradBucket cur;
    auto close = [&]() {
      if (cur.params.empty()) return;
      cur.padded = (cur.numel + pad_multiple - 1) / pad_multiple * pad_multiple;
      if (cur.padded == 0) cur.padded = pad_multiple;
      for (const Parameter* p : cur.params) bucket_of[p] = static_cast<int>(plan.buckets.size());
      plan.buckets.push_back(std::move(cur));
      cur = GradBucket{};
    };
    for (auto it = by_layer.rbegin(); it != by_layer.rend(); ++it) {
      if (cur.params.empty()) {
        cur.model = static_cast<int>(mi);
        cur.dtype = it->second.front()->grad.dtype();
        cur.hi_layer = it->first;
      }
      cur.lo_layer = it->first;
      for (Parameter* p : it->second) {
        cur.params.push_back(p);
        cur.offsets.push_back(cur.numel);
        cur.numel += p->grad.numel();
        if (shared.count(p) != 0) cur.deferred = true;
      }
      if (layer_per_bucket || cur.numel * static_cast<int64_t>(dtype_size(cur.dtype)) >= bucket_bytes) close();
    }
    close();
    // Which buckets each layer touches (a shared parameter: every layer listing it).
    const std::vector<Layer*> layers = m->layers();
    std::map<int, std::set<int64_t>> layers_of_bucket;
    for (std::size_t l = 0; l < layers.size(); ++l)
      for (Parameter* p : layers[l]->parameters()) layers_of_bucket[bucket_of.at(p)].insert(static_cast<int64_t>(l));
    for (const auto& [b, ls] : layers_of_bucket)
      for (int64_t l : ls) plan.uses[mi][l].push_back(b);
  }
  return plan;
}

class GradBucketer::Hooks final : public LayerHooks {
 public:
  Hooks(GradBucketer& g, int model) : g_(g), model_(model) {}
  void before_backward(int64_t layer) override { g_.before_backward(model_, layer); }
  void after_backward(int64_t layer) override { g_.after_backward(model_, layer); }

 private:
  GradBucketer& g_;
  int model_;
};

GradBucketer::GradBucketer(std::vector<Module*> models, std::shared_ptr<Communicator> dp,
                           const GradBucketConfig& config)
    : models_(std::move(models)), dp_(std::move(dp)), cfg_(config) {
  PP3D_CHECK(dp_ != nullptr, "GradBucketer: the data-parallel communicator is null");
  PP3D_CHECK(!models_.empty(), "GradBucketer: no model given");
  PP3D_CHECK(cfg_.bucket_mb > 0.0, "GradBucketer: bucket_mb must be > 0, got {}", cfg_.bucket_mb);
  const auto bytes = static_cast<int64_t>(cfg_.bucket_mb * 1e6);
  plan_ = plan_grad_buckets(models_, std::max<int64_t>(bytes, 1), dp_->size(), cfg_.layer_per_bucket);
  state_.resize(plan_.buckets.size());
  backward_count_.assign(models_.size(), 0);
  for (const auto& layers : plan_.layers) after_count_.emplace_back(layers.size(), 0);
  bucket_layers_.resize(plan_.buckets.size());
  for (int b = 0; b < num_buckets(); ++b) {
    const GradBucket& bk = plan_.buckets[static_cast<std::size_t>(b)];
    auto& ls = bucket_layers_[static_cast<std::size_t>(b)];
    for (int64_t l = bk.lo_layer; l <= bk.hi_layer; ++l) ls.push_back(l);
    for (const auto& [layer, used] : plan_.uses[static_cast<std::size_t>(bk.model)])
      if ((layer < bk.lo_layer || layer > bk.hi_layer) && std::find(used.begin(), used.end(), b) != used.end())
        ls.push_back(layer);
  }
  for (int b = 0; b < num_buckets(); ++b) {
    const GradBucket& bk = plan_.buckets[static_cast<std::size_t>(b)];
    const Device dev = bk.params.front()->grad.device();
    State& s = state_[static_cast<std::size_t>(b)];
    s.full = Tensor::zeros({bk.padded}, bk.dtype, dev, MemCategory::Grads);
    for (std::size_t i = 0; i < bk.params.size(); ++i) {
      Parameter& p = *bk.params[i];
      Tensor view = s.full.slice(bk.offsets[i], bk.offsets[i] + p.grad.numel()).reshape(p.grad.shape());
      view.copy_from(p.grad);
      p.grad = view;  // the old storage is released here
    }
    if (cfg_.mode == BucketMode::ReduceScatterRelease) {
      s.shard = Tensor::zeros({bk.padded / dp_->size()}, bk.dtype, dev, MemCategory::Grads);
      // Only the owned shard persists between steps: the first backward re-allocates (zeroed).
      for (Parameter* p : bk.params) p->grad = Tensor();
      s.full = Tensor();
    }
  }
  if (cfg_.install_hooks) {
    for (std::size_t m = 0; m < models_.size(); ++m) {
      hooks_.push_back(std::make_unique<Hooks>(*this, static_cast<int>(m)));
      models_[m]->set_layer_hooks(hooks_.back().get());
    }
  }
}

GradBucketer::~GradBucketer() {
  for (std::size_t m = 0; m < hooks_.size(); ++m)
    if (models_[m]->layer_hooks() == hooks_[m].get()) models_[m]->set_layer_hooks(nullptr);
  // Unfinished handles wait in their destructors (CommHandle contract).
}

void GradBucketer::allocate(int b) {
  State& s = state_[static_cast<std::size_t>(b)];
  if (s.full.defined()) return;
  const GradBucket& bk = plan_.buckets[static_cast<std::size_t>(b)];
  s.full = Tensor::zeros({bk.padded}, bk.dtype, s.shard.device(), MemCategory::Grads);
  for (std::size_t i = 0; i < bk.params.size(); ++i) {
    Parameter& p = *bk.params[i];
    const int64_t n = p.value.defined() ? p.value.numel() : shape_numel(shard_local_shape(p.global_shape, p.shard));
    p.grad = s.full.slice(bk.offsets[i], bk.offsets[i] + n).reshape(shard_local_shape(p.global_shape, p.shard));
  }
}

void GradBucketer::set_micro_batches_per_step(int m) {
  PP3D_CHECK(m >= 0, "GradBucketer: micro-batches per step must be >= 0, got {}", m);
  micro_batches_ = m;
}

bool GradBucketer::is_last(int model) const {
  return last_ || (micro_batches_ > 0 && backward_count_[static_cast<std::size_t>(model)] == micro_batches_);
}

void GradBucketer::before_backward(int model, int64_t layer) {
  // The first layer of a backward pass is the model's highest one.
  if (layer == plan_.layers[static_cast<std::size_t>(model)].back()) {
    int& c = backward_count_[static_cast<std::size_t>(model)];
    ++c;
    PP3D_CHECK(micro_batches_ == 0 || c <= micro_batches_,
               "GradBucketer: backward pass {} of a step configured with {} micro-batches (call finish() after "
               "each step)", c, micro_batches_);
  }
  progress();
  if (cfg_.mode != BucketMode::ReduceScatterRelease) return;
  const auto& uses = plan_.uses[static_cast<std::size_t>(model)];
  auto it = uses.find(layer);
  if (it == uses.end()) return;
  for (int b : it->second) allocate(b);
}

bool GradBucketer::complete_for_step(int b) const {
  const int model = plan_.buckets[static_cast<std::size_t>(b)].model;
  const int started = backward_count_[static_cast<std::size_t>(model)];
  const auto& counts = after_count_[static_cast<std::size_t>(model)];
  for (int64_t l : bucket_layers_[static_cast<std::size_t>(b)])
    if (counts[static_cast<std::size_t>(l)] < started) return false;
  return true;
}

void GradBucketer::after_backward(int model, int64_t layer) {
  auto& counts = after_count_[static_cast<std::size_t>(model)];
  PP3D_CHECK(layer >= 0 && layer < static_cast<int64_t>(counts.size()), "GradBucketer: layer {} of model {} out of "
             "range", layer, model);
  ++counts[static_cast<std::size_t>(layer)];
  if (!is_last(model) || !cfg_.overlap) {
    progress();
    return;
  }
  // Launch the buckets this layer completes: every layer using them has run
  // the backward (its weight part, when split) of every pass started so far.
  for (int b = 0; b < num_buckets(); ++b) {
    const GradBucket& bk = plan_.buckets[static_cast<std::size_t>(b)];
    const auto& ls = bucket_layers_[static_cast<std::size_t>(b)];
    if (bk.model != model || bk.deferred || state_[static_cast<std::size_t>(b)].launched ||
        std::find(ls.begin(), ls.end(), layer) == ls.end() || !complete_for_step(b))
      continue;
    launch(b);
    ++launched_in_backward_;
  }
  poll();
}

void GradBucketer::launch(int b) {
  State& s = state_[static_cast<std::size_t>(b)];
  PP3D_CHECK(s.full.defined(), "GradBucketer: bucket {} has no gradient buffer at reduction (no backward ran "
                               "on it this step)", b);
  const int64_t chunk = plan_.buckets[static_cast<std::size_t>(b)].padded / dp_->size();
  s.t_launch = now_ms();  // before the call: starting the collective is communication time too
  s.t_done = -1.0;
  switch (cfg_.mode) {
    case BucketMode::AllReduce:
      s.handle = dp_->all_reduce_async(s.full, ReduceOp::Sum);
      break;
    case BucketMode::ReduceScatter:
      s.tmp = Tensor::empty({chunk}, s.full.dtype(), s.full.device(), MemCategory::Comm);
      s.handle = dp_->reduce_scatter_async(s.full, s.tmp, ReduceOp::Sum);
      break;
    case BucketMode::ReduceScatterRelease:
      s.handle = dp_->reduce_scatter_async(s.full, s.shard, ReduceOp::Sum);
      break;
  }
  s.launched = true;
  in_flight_.push_back(b);
}

void GradBucketer::complete(int b) {
  State& s = state_[static_cast<std::size_t>(b)];
  s.t_done = now_ms();
  s.handle.reset();
  if (cfg_.mode == BucketMode::ReduceScatter) {
    Tensor own = reduced(b);
    own.copy_from(s.tmp);
    s.tmp = Tensor();
  } else if (cfg_.mode == BucketMode::ReduceScatterRelease) {
    for (Parameter* p : plan_.buckets[static_cast<std::size_t>(b)].params) p->grad = Tensor();
    s.full = Tensor();
  }
}

void GradBucketer::poll() {
  // Complete finished reductions in launch order (frees buffers early in Release mode).
  while (!in_flight_.empty()) {
    State& s = state_[static_cast<std::size_t>(in_flight_.front())];
    if (!s.handle->test()) break;
    s.handle->wait();
    complete(in_flight_.front());
    in_flight_.erase(in_flight_.begin());
  }
}

void GradBucketer::finish() {
  const double t0 = now_ms();
  for (int b = 0; b < num_buckets(); ++b) {
    const State& s = state_[static_cast<std::size_t>(b)];
    // Deferred buckets, and every bucket not launched during backward (overlap off or never ready).
    if (!s.launched && (plan_.buckets[static_cast<std::size_t>(b)].deferred || !cfg_.overlap))
      launch(b);
  }
  for (int b : in_flight_) {
    state_[static_cast<std::size_t>(b)].handle->wait();
    complete(b);
  }
  in_flight_.clear();
  record_stats(now_ms() - t0);
  for (int b = 0; b < num_buckets(); ++b) {
    State& s = state_[static_cast<std::size_t>(b)];
    const GradBucket& bk = plan_.buckets[static_cast<std::size_t>(b)];
    PP3D_CHECK(s.launched, "GradBucketer::finish: the gradients of bucket {} (layers {}..{}) were never reduced: "
               "call set_last_micro_batch(true) before the backward of the step's last micro-batch, with the "
               "layer hooks installed", b, bk.lo_layer, bk.hi_layer);
    s.launched = false;
  }
  last_ = false;
  std::fill(backward_count_.begin(), backward_count_.end(), 0);
  for (auto& c : after_count_) std::fill(c.begin(), c.end(), 0);
}

void GradBucketer::zero_grad() {
  PP3D_CHECK(in_flight_.empty(), "GradBucketer::zero_grad while reductions are in flight (call finish() first)");
  std::fill(backward_count_.begin(), backward_count_.end(), 0);
  for (auto& c : after_count_) std::fill(c.begin(), c.end(), 0);
  for (State& s : state_)
    if (s.full.defined()) s.full.zero_();
  launched_in_backward_ = 0;
}

void GradBucketer::record_stats(double exposed_ms) {
  GradCommStats st;
  st.exposed_ms = exposed_ms;
  st.launched_in_backward = launched_in_backward_;
  std::vector<std::pair<double, double>> iv;
  double first = 0.0;
  for (const State& s : state_)
    if (s.launched && s.t_done >= s.t_launch) iv.emplace_back(s.t_launch, s.t_done);
  std::sort(iv.begin(), iv.end());
  if (!iv.empty()) first = iv.front().first;
  double end = -1e300;
  for (const auto& [a, b] : iv) {  // union of the in-flight intervals
    const double lo = std::max(a, end);
    if (b > lo) st.comm_ms += b - lo;
    end = std::max(end, b);
  }
  st.reductions = static_cast<int>(iv.size());
  for (const State& s : state_) {
    st.launch_ms.push_back(s.launched ? s.t_launch - first : -1.0);
    st.done_ms.push_back(s.launched ? s.t_done - first : -1.0);
  }
  stats_ = std::move(st);
}

double GradCommStats::hidden_fraction() const {
  if (!(comm_ms > 0.0)) return 0.0;
  return std::clamp(1.0 - exposed_ms / comm_ms, 0.0, 1.0);
}

std::pair<int64_t, int64_t> GradBucketer::owned_range(int b) const {
  const GradBucket& bk = plan_.buckets[static_cast<std::size_t>(b)];
  if (cfg_.mode == BucketMode::AllReduce) return {0, bk.numel};
  const int64_t chunk = bk.padded / dp_->size();
  return {dp_->rank() * chunk, (dp_->rank() + 1) * chunk};
}

Tensor GradBucketer::reduced(int b) const {
  const State& s = state_[static_cast<std::size_t>(b)];
  if (cfg_.mode == BucketMode::ReduceScatterRelease) return s.shard;
  if (cfg_.mode == BucketMode::AllReduce) return s.full;
  const auto [begin, end] = owned_range(b);
  return s.full.slice(begin, end);
}

}  // namespace pp3d
