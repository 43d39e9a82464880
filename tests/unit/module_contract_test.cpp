// The module contract's library side (pp3d/parallel/module.h): the layer loop
// fires hooks in order, split backward (input part, later weight part) equals
// the full backward, parameter ownership for a parameter two layers share,
// and misuse errors.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "pp3d/backend/backend.h"
#include "pp3d/comm/local_communicator.h"
#include "pp3d/parallel/module.h"
#include "pp3d/parallel/pipeline.h"

using namespace pp3d;

namespace {

// y = w * x elementwise (w a scalar parameter); backward may be split.
class Scale final : public Layer {
 public:
  Scale(Parameter& w, bool split) : w_(w), split_(split) {}
  struct Saved : LayerState {
    Tensor x, dy;
  };
  std::vector<Parameter*> parameters() override { return {&w_}; }
  Tensor forward(const Tensor& x, MicroBatchContext& ctx, std::unique_ptr<LayerState>& saved) override {
    auto s = std::make_unique<Saved>();
    s->x = x;
    saved = std::move(s);
    std::vector<float> y = x.to_vector();
    for (float& v : y) v *= w_.value.to_vector()[0];
    ctx.loss += ctx.loss_weight * y.size();
    return Tensor::from_vector(x.shape(), y);
  }
  Tensor backward(const Tensor& dy, MicroBatchContext& ctx, LayerState& st) override {
    Tensor dx = backward_input(dy, ctx, st);
    backward_weight(ctx, st);
    return dx;
  }
  bool splits_backward() const override { return split_; }
  Tensor backward_input(const Tensor& dy, MicroBatchContext&, LayerState& st) override {
    static_cast<Saved&>(st).dy = dy;
    std::vector<float> dx = dy.to_vector();
    for (float& v : dx) v *= w_.value.to_vector()[0];
    return Tensor::from_vector(dy.shape(), dx);
  }
  void backward_weight(MicroBatchContext&, LayerState& st) override {
    auto& s = static_cast<Saved&>(st);
    const std::vector<float> x = s.x.to_vector(), dy = s.dy.to_vector();
    double g = 0;
    for (std::size_t i = 0; i < x.size(); ++i) g += double(x[i]) * dy[i];
    ++weight_calls;
    w_.grad = Tensor::from_vector({1}, {w_.grad.to_vector()[0] + static_cast<float>(g)});
  }
  int weight_calls = 0;

 private:
  Parameter& w_;
  bool split_;
};

class Chain final : public Module {
 public:
  Chain(Backend* be, std::vector<Layer*> ls) : be_(be), ls_(std::move(ls)) {}
  std::vector<Layer*> layers() override { return ls_; }
  Shape output_shape(int64_t b, int64_t) const override { return {b, 3}; }
  Backend& backend() const override { return *be_; }

 private:
  Backend* be_;
  std::vector<Layer*> ls_;
};

struct Recorder final : LayerHooks {
  std::vector<std::string> log;
  void before_forward(int64_t l) override { log.push_back("F<" + std::to_string(l)); }
  void after_forward(int64_t l) override { log.push_back("F>" + std::to_string(l)); }
  void before_backward(int64_t l) override { log.push_back("B<" + std::to_string(l)); }
  void after_backward(int64_t l) override { log.push_back("B>" + std::to_string(l)); }
};

Parameter scalar(const std::string& name, float v) {
  Parameter p;
  p.name = name;
  p.value = Tensor::from_vector({1}, {v});
  p.grad = Tensor::zeros({1});
  p.global_shape = {1};
  return p;
}

}  // namespace

TEST_CASE("module_forward/backward fire the hooks around every layer in order") {
  Parameter a = scalar("a", 2.0f), b = scalar("b", -3.0f);
  Scale la(a, false), lb(b, false);
  Chain m(nullptr, {&la, &lb});
  Recorder rec;
  m.set_layer_hooks(&rec);
  ActivationCache cache;
  const Tensor y = module_forward(m, Tensor::from_vector({1, 3}, {1, 2, 3}), Tensor(), 0.5f, cache);
  CHECK(y.to_vector() == std::vector<float>{-6, -12, -18});
  CHECK(cache.active());
  CHECK(cache.loss() == Approx(3.0));  // two layers, each adds 0.5 * 3
  CHECK_THROWS_WITH(module_forward(m, y, Tensor(), 1.0f, cache), Catch::Contains("still holds a micro-batch"));
  const Tensor dx = module_backward(m, Tensor::from_vector({1, 3}, {1, 1, 1}), cache);
  CHECK(dx.to_vector() == std::vector<float>{-6, -6, -6});
  CHECK(!cache.active());
  CHECK(a.grad.to_vector()[0] == Approx(-3.0f * 6));  // dy_a = b * 1, x = (1, 2, 3)
  CHECK(b.grad.to_vector()[0] == Approx(2.0f * 6));
  CHECK(rec.log == std::vector<std::string>{"F<0", "F>0", "F<1", "F>1", "B<1", "B>1", "B<0", "B>0"});
  CHECK_THROWS_WITH(module_backward(m, Tensor(), cache), Catch::Contains("without a pending Train-mode forward"));
}

TEST_CASE("split backward: input part now, weight part later, equals the full backward") {
  Parameter a1 = scalar("a", 2.0f), b1 = scalar("b", -3.0f), a2 = scalar("a", 2.0f), b2 = scalar("b", -3.0f);
  Scale la1(a1, false), lb1(b1, false), la2(a2, true), lb2(b2, true);
  Chain full(nullptr, {&la1, &lb1}), split(nullptr, {&la2, &lb2});
  Recorder rec;
  split.set_layer_hooks(&rec);
  const Tensor x = Tensor::from_vector({1, 3}, {0.5f, -1, 4}), dy = Tensor::from_vector({1, 3}, {1, 2, -1});
  ActivationCache c1, c2;
  module_forward(full, x, Tensor(), 1.0f, c1);
  module_forward(split, x, Tensor(), 1.0f, c2);
  const Tensor dx1 = module_backward(full, dy, c1);
  const Tensor dx2 = module_backward(split, dy, c2, BackwardPart::Input);
  CHECK(dx1.to_vector() == dx2.to_vector());
  CHECK(la2.weight_calls == 0);
  CHECK(a2.grad.to_vector()[0] == 0.0f);  // no weight gradient yet
  CHECK(c2.weight_pending());
  CHECK_THROWS(module_forward(split, x, Tensor(), 1.0f, c2));  // the weight part is still pending
  module_backward_weight(split, c2);
  CHECK(!c2.weight_pending());
  CHECK(a2.grad.to_vector() == a1.grad.to_vector());
  CHECK(b2.grad.to_vector() == b1.grad.to_vector());
  // after_backward of a split layer fires after its weight part
  CHECK(rec.log == std::vector<std::string>{"F<0", "F>0", "F<1", "F>1", "B<1", "B<0", "B>1", "B>0"});
}

TEST_CASE("a parameter listed by two layers is owned by the first, Eval keeps nothing") {
  Parameter w = scalar("w", 1.5f), v = scalar("v", 2.0f);
  Scale l0(w, false), l1(v, false), l2(w, false);
  Chain m(nullptr, {&l0, &l1, &l2});
  CHECK(m.parameters() == std::vector<Parameter*>{&w, &v});
  CHECK(parameter_owner_layers(m) == std::vector<int64_t>{0, 1});
  CHECK(as_modules(std::vector<Chain*>{&m}).front() == &m);
  ActivationCache c;
  module_forward(m, Tensor::from_vector({1, 3}, {1, 1, 1}), Tensor(), 1.0f, c, ForwardMode::Eval);
  CHECK(!c.active());
  CHECK(c.states().empty());
  CHECK(c.loss() == Approx(9.0));
}

// Loss layer: loss += loss_weight * sum(x); d(x) = loss_weight everywhere.
class SumLoss final : public Layer {
 public:
  struct Saved : LayerState {
    Shape shape;
    float w = 0;
  };
  std::vector<Parameter*> parameters() override { return {}; }
  Tensor forward(const Tensor& x, MicroBatchContext& ctx, std::unique_ptr<LayerState>& saved) override {
    double sum = 0;
    for (float v : x.to_vector()) sum += v;
    ctx.loss += ctx.loss_weight * sum;
    auto s = std::make_unique<Saved>();
    s->shape = x.shape();
    s->w = ctx.loss_weight;
    saved = std::move(s);
    return Tensor();
  }
  Tensor backward(const Tensor&, MicroBatchContext&, LayerState& st) override {
    const auto& s = static_cast<Saved&>(st);
    return Tensor::from_vector(s.shape, std::vector<float>(static_cast<std::size_t>(shape_numel(s.shape)), s.w));
  }
};

TEST_CASE("zb-h1 on one rank equals 1f1b, with and without layers that split their backward") {
  // A layer that does not split runs its whole backward in zb-h1's input
  // part; the weight part then has nothing to do (and must not fail).
  auto be = make_cpu_backend();
  for (bool split : {false, true}) {
    INFO("layers split their backward: " << split);
    std::vector<float> grads[2];
    double losses[2] = {0, 0};
    for (int s = 0; s < 2; ++s) {
      Parameter a = scalar("a", 2.0f), b = scalar("b", -3.0f);
      Scale la(a, split), lb(b, split);
      SumLoss loss;
      std::vector<std::unique_ptr<Module>> chunks;
      chunks.push_back(std::make_unique<Chain>(be.get(), std::vector<Layer*>{&la, &lb, &loss}));
      PipelineConfig pc;
      pc.schedule = s == 0 ? ScheduleKind::OneFOneB : ScheduleKind::ZeroBubbleH1;
      pc.micro_batch_size = 1;
      pc.seq_len = 1;
      PipelineStage stage(std::move(chunks), std::make_shared<LocalCommunicator>("pp"), nullptr, pc);
      std::vector<MicroBatch> mbs;
      for (int i = 0; i < 3; ++i)
        mbs.push_back({Tensor::from_vector({1, 3}, {1.0f + i, -2.0f, 0.5f * i}), Tensor::zeros({1})});
      const StepResult r = stage.run_step(mbs, 0.25f);
      losses[s] = r.loss;
      grads[s] = {a.grad.to_vector()[0], b.grad.to_vector()[0]};
      CHECK(la.weight_calls == 3);  // every micro-batch's weight gradient, fused or split
      int weight_events = 0;
      for (const auto& e : r.events) weight_events += e.kind == PipelineEvent::Weight;
      CHECK(weight_events == (s == 1 ? 3 : 0));
    }
    CHECK(losses[0] == losses[1]);
    CHECK(grads[0] == grads[1]);
    CHECK(grads[0][0] != 0.0f);
  }
}
