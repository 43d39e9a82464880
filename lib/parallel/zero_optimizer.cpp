// ZeroOptimizer: construction (flat partitioned buffers), gradient norm and
// clipping over the owned ranges, the AdamW step and the stage-1/2 parameter
// all-gather. Stage-3 gathering and the layer hooks: zero_params.cpp.
#include "pp3d/parallel/zero_optimizer.h"

#include <algorithm>
#include <cmath>

#include "pp3d/core/error.h"

namespace pp3d {

ZeroOptimizer::ZeroOptimizer(Backend& backend, std::vector<Module*> models, std::shared_ptr<Communicator> dp,
                             const ZeroConfig& config)
    : backend_(&backend), models_(std::move(models)), dp_(std::move(dp)), cfg_(config) {
  PP3D_CHECK(cfg_.stage >= 0 && cfg_.stage <= 3, "ZeRO stage must be 0, 1, 2 or 3, got {}", cfg_.stage);
  PP3D_CHECK(dp_ != nullptr, "ZeroOptimizer: the data-parallel communicator is null");
  PP3D_CHECK(cfg_.prefetch_layers >= 0, "ZeroOptimizer: prefetch_layers must be >= 0, got {}", cfg_.prefetch_layers);
  const AdamWConfig& a = cfg_.adamw;
  PP3D_CHECK(a.beta1 >= 0.0f && a.beta1 < 1.0f && a.beta2 >= 0.0f && a.beta2 < 1.0f,
             "AdamW betas must be in [0, 1), got ({}, {})", a.beta1, a.beta2);
  PP3D_CHECK(a.eps > 0.0f, "AdamW eps must be positive, got {}", a.eps);
  PP3D_CHECK(a.weight_decay >= 0.0f, "AdamW weight_decay must be >= 0, got {}", a.weight_decay);

  GradBucketConfig bc;
  bc.bucket_mb = cfg_.bucket_mb;
  bc.mode = cfg_.stage == 0   ? BucketMode::AllReduce
            : cfg_.stage == 1 ? BucketMode::ReduceScatter
                              : BucketMode::ReduceScatterRelease;
  bc.layer_per_bucket = cfg_.stage == 3;
  bc.install_hooks = false;
  bc.overlap = cfg_.overlap_comm;
  buckets_ = std::make_unique<GradBucketer>(models_, dp_, bc);

  state_.resize(static_cast<std::size_t>(buckets_->num_buckets()));
  for (int b = 0; b < buckets_->num_buckets(); ++b) {
    const GradBucket& bk = buckets_->plan().buckets[static_cast<std::size_t>(b)];
    BucketState& st = state_[static_cast<std::size_t>(b)];
    const DType dt = bk.params.front()->value.dtype();
    param_dtype_ = dt;
    const Device dev = bk.params.front()->value.device();
    const auto [ob, oe] = buckets_->owned_range(b);
    // Flatten the values into one buffer; the parameters become views of it.
    Tensor full = Tensor::zeros({bk.padded}, dt, dev, MemCategory::Params);
    for (std::size_t i = 0; i < bk.params.size(); ++i) {
      Parameter& p = *bk.params[i];
      PP3D_CHECK(p.value.dtype() == dt, "ZeroOptimizer: parameters of one bucket must share a dtype ('{}' is {}, "
                 "'{}' is {})", p.name, dtype_name(p.value.dtype()), bk.params.front()->name, dtype_name(dt));
      const int64_t off = bk.offsets[i], n = p.value.numel();
      Tensor view = full.slice(off, off + n).reshape(p.value.shape());
      view.copy_from(p.value);
      p.value = view;  // frees the model's own storage
      const int64_t s = std::max(off, ob), e = std::min(off + n, oe);
      if (s < e) st.segments.push_back({&p, s, e, off});
    }
    st.m = Tensor::zeros({oe - ob}, DType::F32, dev, MemCategory::Optimizer);
    st.v = Tensor::zeros({oe - ob}, DType::F32, dev, MemCategory::Optimizer);
    if (dt != DType::F32) {
      st.master = Tensor::empty({oe - ob}, DType::F32, dev, MemCategory::Optimizer);
      backend_->cast(full.slice(ob, oe), st.master);  // padding (and a fallback)
      // The owned ranges: the exact f32 init values of each parameter (so the
      // master equals the f32 model's init bitwise; master_initial_values).
      for (const Segment& s : st.segments) {
        const Tensor init = master_initial_values(*s.p).reshape({-1});
        st.master.slice(s.begin - ob, s.end - ob).copy_from(init.slice(s.begin - s.offset, s.end - s.offset));
      }
    }
    if (cfg_.stage == 3) {
      st.value_shard = full.slice(ob, oe).clone(MemCategory::Params);
      for (Parameter* p : bk.params) p->value = Tensor();
    } else {
      st.value_full = full;
    }
  }
  install_hooks();
}

void ZeroOptimizer::zero_grad() { buckets_->zero_grad(); }

void ZeroOptimizer::finish_gradient_sync() { buckets_->finish(); }

Tensor ZeroOptimizer::owned_values(int b) {
  BucketState& st = state_[static_cast<std::size_t>(b)];
  if (cfg_.stage == 3) return st.value_shard;
  const auto [ob, oe] = buckets_->owned_range(b);
  return st.value_full.slice(ob, oe);
}

int64_t ZeroOptimizer::owned_numel() const {
  int64_t n = 0;
  for (const BucketState& st : state_)
    for (const Segment& s : st.segments) n += s.end - s.begin;
  return n;
}

std::vector<ZeroOptimizer::OwnedRange> ZeroOptimizer::owned_ranges() {
  std::vector<OwnedRange> out;
  for (int b = 0; b < buckets_->num_buckets(); ++b) {
    BucketState& st = state_[static_cast<std::size_t>(b)];
    const int64_t ob = buckets_->owned_range(b).first;
    Tensor vals = owned_values(b);
    for (const Segment& s : st.segments) {
      const int64_t lo = s.begin - ob, hi = s.end - ob;
      out.push_back({s.p, s.begin - s.offset, s.end - s.offset, vals.slice(lo, hi), st.m.slice(lo, hi),
                     st.v.slice(lo, hi), st.master.defined() ? st.master.slice(lo, hi) : Tensor()});
    }
  }
  return out;
}

std::vector<Parameter*> ZeroOptimizer::all_parameters() const {
  std::vector<Parameter*> out;
  for (const GradBucket& bk : buckets_->plan().buckets) out.insert(out.end(), bk.params.begin(), bk.params.end());
  return out;
}

float ZeroOptimizer::grad_norm(const SumSquaresReducer& reduce_other) {
  double local = 0.0;
  for (int b = 0; b < buckets_->num_buckets(); ++b) {
    const Tensor red = buckets_->reduced(b);
    const int64_t ob = buckets_->owned_range(b).first;
    for (const Segment& s : state_[static_cast<std::size_t>(b)].segments)
      if (s.p->counted_in_norm) local += backend_->sum_squares(red.slice(s.begin - ob, s.end - ob));
  }
  double total = local;
  if (cfg_.stage > 0 && dp_->size() > 1) {
    // Exact-ish double sum over DP: gather (hi, lo) f32 pairs, add in rank order.
    const auto hi = static_cast<float>(local);
    const auto lo = static_cast<float>(local - static_cast<double>(hi));
    Tensor mine = Tensor::from_vector({2}, {hi, lo}, MemCategory::Comm);
    Tensor all = Tensor::zeros({2 * dp_->size()}, DType::F32, Device::cpu(), MemCategory::Comm);
    dp_->all_gather(mine, all);
    const std::vector<float> v = all.to_vector();
    total = 0.0;
    for (int r = 0; r < dp_->size(); ++r)
      total += static_cast<double>(v[2 * r]) + static_cast<double>(v[2 * r + 1]);
  }
  if (reduce_other) total = reduce_other(total);
  return static_cast<float>(std::sqrt(total));
}

float ZeroOptimizer::clip_grad_norm(float max_norm, const SumSquaresReducer& reduce_other) {
  const float norm = grad_norm(reduce_other);
  PP3D_CHECK(std::isfinite(norm), "gradient norm is not finite ({}): check the loss / learning rate", norm);
  if (max_norm > 0.0f) {
    const float c = clip_coefficient(norm, max_norm);
    if (c < 1.0f) scale_gradients(c);
  }
  return norm;
}

void ZeroOptimizer::scale_gradients(float factor) {
  for (int b = 0; b < buckets_->num_buckets(); ++b) {
    Tensor red = buckets_->reduced(b);
    backend_->scale(red, factor);
  }
}

bool ZeroOptimizer::local_grads_nonfinite() {
  for (int b = 0; b < buckets_->num_buckets(); ++b)
    if (!std::isfinite(backend_->sum_squares(buckets_->reduced(b)))) return true;
  return false;
}

void ZeroOptimizer::step(float lr, float grad_scale) {
  PP3D_CHECK(std::isfinite(lr) && lr >= 0.0f, "ZeroOptimizer::step: learning rate must be finite and >= 0, got {}",
             lr);
  if (cfg_.stage == 3) drop_all_gathered();
  ++step_;
  for (int b = 0; b < buckets_->num_buckets(); ++b) {
    BucketState& st = state_[static_cast<std::size_t>(b)];
    const int64_t ob = buckets_->owned_range(b).first;
    Tensor vals = owned_values(b);
    const Tensor red = buckets_->reduced(b);
    PP3D_CHECK(red.defined(), "ZeroOptimizer::step: bucket {} has no reduced gradient (finish_gradient_sync?)", b);
    for (const Segment& s : st.segments) {
      const int64_t lo = s.begin - ob, hi = s.end - ob;
      Tensor pv = vals.slice(lo, hi), m = st.m.slice(lo, hi), v = st.v.slice(lo, hi);
      Tensor master = st.master.defined() ? st.master.slice(lo, hi) : Tensor();
      AdamWParams ap;
      ap.lr = lr;
      ap.beta1 = cfg_.adamw.beta1;
      ap.beta2 = cfg_.adamw.beta2;
      ap.eps = cfg_.adamw.eps;
      ap.weight_decay = s.p->weight_decay ? cfg_.adamw.weight_decay : 0.0f;
      ap.step = step_;
      ap.grad_scale = grad_scale;
      backend_->adamw_step(pv, red.slice(lo, hi), m, v, master, ap);
    }
  }
  if (cfg_.stage == 1 || cfg_.stage == 2) {
    // All-gather the updated owned ranges into every rank's full buffers.
    std::vector<Tensor> sent;
    std::vector<std::unique_ptr<CommHandle>> handles;
    for (int b = 0; b < buckets_->num_buckets(); ++b) {
      sent.push_back(owned_values(b).clone(MemCategory::Comm));
      handles.push_back(dp_->all_gather_async(sent.back(), state_[static_cast<std::size_t>(b)].value_full));
    }
    for (auto& h : handles) h->wait();
  }
}

}  // namespace pp3d
