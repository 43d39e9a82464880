// A deep residual MLP written by a "third party" against pp3d's module
// contract, with public headers only: an input projection, `blocks` residual
// blocks x + W2 gelu(W1 x) (W1 column-parallel, W2 row-parallel over the
// tensor-parallel group) and a head with a mean-squared-error loss. Any
// consecutive range of its layers is a pipeline chunk (mlp::Chunk), so pp3d's
// PipelineStage, GradBucketer and ZeroOptimizer apply to it unchanged.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <pp3d/pp3d.h>

namespace mlp {

struct Config {
  int64_t in = 12, width = 32, hidden = 64, out = 4, blocks = 8;
  uint64_t seed = 7;
  int64_t num_layers() const { return blocks + 2; }  // input, blocks, head
};

struct Tp {
  pp3d::Communicator* group = nullptr;  // nullptr: one rank
  int rank = 0, size = 1;
};

// A parameter initialised by global element index (layout independent); a
// copy replicated over TP counts once in a gradient norm.
inline pp3d::Parameter param(const Config& c, const Tp& tp, const std::string& name, const pp3d::Shape& shape,
                             const pp3d::ShardSpec& shard, float std) {
  const pp3d::InitSpec init = std > 0 ? pp3d::InitSpec{pp3d::InitKind::Normal, 0.0f, std} : pp3d::InitSpec{};
  pp3d::Parameter p = pp3d::make_sharded_parameter(name, shape, shard, init, c.seed);
  p.counted_in_norm = shard.sharded() || tp.rank == 0;
  return p;
}

struct Saved : pp3d::LayerState {
  pp3d::Tensor x, h, a;
};

// x [B, in] -> [B, width]: W split by input features (x split here, outputs all-reduced).
class InputLayer final : public pp3d::Layer {
 public:
  InputLayer(const Config& c, pp3d::Backend& be, Tp tp)
      : be_(be), tp_(tp), w_(param(c, tp, "in.weight", {c.width, c.in}, pp3d::row_parallel_shard(c.in, tp.rank, tp.size), 0.3f)),
        b_(param(c, tp, "in.bias", {c.width}, {}, 0.0f)), lin_(w_, &b_, {false, false}) {}
  std::vector<pp3d::Parameter*> parameters() override { return {&w_, &b_}; }
  pp3d::Tensor forward(const pp3d::Tensor& x, pp3d::MicroBatchContext&, std::unique_ptr<pp3d::LayerState>& saved) override {
    auto s = std::make_unique<Saved>();
    s->x = x;
    saved = std::move(s);
    return lin_.forward(be_, tp_.group, x);
  }
  pp3d::Tensor backward(const pp3d::Tensor& dy, pp3d::MicroBatchContext&, pp3d::LayerState& st) override {
    lin_.backward(be_, tp_.group, dy, static_cast<Saved&>(st).x, /*input_grad=*/false);
    return pp3d::Tensor();  // the features need no gradient
  }

 private:
  pp3d::Backend& be_;
  Tp tp_;
  pp3d::Parameter w_, b_;
  pp3d::RowParallelLinear lin_;
};

// x + fc2(gelu(fc1(x))): fc1 column-parallel, fc2 row-parallel.
class Block final : public pp3d::Layer {
 public:
  Block(const Config& c, pp3d::Backend& be, Tp tp, int64_t i)
      : be_(be), tp_(tp), pre_("b" + std::to_string(i) + "."),
        w1_(param(c, tp, pre_ + "fc1.weight", {c.hidden, c.width}, pp3d::column_parallel_shard(c.hidden, tp.rank, tp.size), 0.2f)),
        b1_(param(c, tp, pre_ + "fc1.bias", {c.hidden}, pp3d::column_parallel_shard(c.hidden, tp.rank, tp.size), 0.0f)),
        w2_(param(c, tp, pre_ + "fc2.weight", {c.width, c.hidden}, pp3d::row_parallel_shard(c.hidden, tp.rank, tp.size), 0.1f)),
        b2_(param(c, tp, pre_ + "fc2.bias", {c.width}, {}, 0.0f)), fc1_(w1_, &b1_), fc2_(w2_, &b2_) {}
  std::vector<pp3d::Parameter*> parameters() override { return {&w1_, &b1_, &w2_, &b2_}; }
  pp3d::Tensor forward(const pp3d::Tensor& x, pp3d::MicroBatchContext& ctx, std::unique_ptr<pp3d::LayerState>& saved) override {
    auto s = std::make_unique<Saved>();
    s->x = x;
    s->h = fc1_.forward(be_, tp_.group, x);
    s->a = pp3d::Tensor::empty(s->h.shape(), pp3d::DType::F32, be_.device(), pp3d::MemCategory::Activations);
    be_.gelu_forward(s->h, s->a);
    pp3d::Tensor y = fc2_.forward(be_, tp_.group, s->a);
    be_.add(y, x, y);
    if (ctx.train()) saved = std::move(s);
    return y;
  }
  pp3d::Tensor backward(const pp3d::Tensor& dy, pp3d::MicroBatchContext&, pp3d::LayerState& st) override {
    auto& s = static_cast<Saved&>(st);
    const pp3d::Tensor da = fc2_.backward(be_, tp_.group, dy, s.a);
    pp3d::Tensor dh = pp3d::Tensor::empty(s.h.shape(), pp3d::DType::F32, be_.device(), pp3d::MemCategory::Activations);
    be_.gelu_backward(s.h, da, dh);
    pp3d::Tensor dx = fc1_.backward(be_, tp_.group, dh, s.x);
    be_.add(dx, dy, dx);  // the residual path
    return dx;
  }

 private:
  pp3d::Backend& be_;
  Tp tp_;
  std::string pre_;
  pp3d::Parameter w1_, b1_, w2_, b2_;
  pp3d::ColumnParallelLinear fc1_;
  pp3d::RowParallelLinear fc2_;
};

// [B, width] -> prediction [B, out]; loss += loss_weight * sum (pred - target)^2.
class Head final : public pp3d::Layer {
 public:
  Head(const Config& c, pp3d::Backend& be, Tp tp)
      : be_(be), tp_(tp), w_(param(c, tp, "head.weight", {c.out, c.width}, pp3d::row_parallel_shard(c.width, tp.rank, tp.size), 0.2f)),
        b_(param(c, tp, "head.bias", {c.out}, {}, 0.0f)), lin_(w_, &b_, {false, false}) {}
  std::vector<pp3d::Parameter*> parameters() override { return {&w_, &b_}; }
  pp3d::Tensor forward(const pp3d::Tensor& x, pp3d::MicroBatchContext& ctx, std::unique_ptr<pp3d::LayerState>& saved) override {
    auto s = std::make_unique<Saved>();
    s->x = x;
    s->h = lin_.forward(be_, tp_.group, x);  // identical on every TP rank
    const std::vector<float> p = s->h.to_vector(), t = ctx.targets.to_vector();
    double sum = 0;
    for (std::size_t i = 0; i < p.size(); ++i) sum += double(p[i] - t[i]) * double(p[i] - t[i]);
    ctx.loss += ctx.loss_weight * sum;
    if (ctx.train()) saved = std::move(s);
    return pp3d::Tensor();
  }
  pp3d::Tensor backward(const pp3d::Tensor&, pp3d::MicroBatchContext& ctx, pp3d::LayerState& st) override {
    auto& s = static_cast<Saved&>(st);
    std::vector<float> d = s.h.to_vector();
    const std::vector<float> t = ctx.targets.to_vector();
    for (std::size_t i = 0; i < d.size(); ++i) d[i] = 2.0f * ctx.loss_weight * (d[i] - t[i]);
    return lin_.backward(be_, tp_.group, pp3d::Tensor::from_vector(s.h.shape(), d), s.x);
  }

 private:
  pp3d::Backend& be_;
  Tp tp_;
  pp3d::Parameter w_, b_;
  pp3d::RowParallelLinear lin_;
};

// Layers [first, last) of the model as one pipeline chunk.
class Chunk final : public pp3d::Module {
 public:
  Chunk(const Config& c, pp3d::Backend& be, Tp tp, int64_t first, int64_t last) : be_(be), c_(c) {
    for (int64_t l = first; l < last; ++l) {
      if (l == 0) layers_.push_back(std::make_unique<InputLayer>(c, be, tp));
      else if (l == c.num_layers() - 1) layers_.push_back(std::make_unique<Head>(c, be, tp));
      else layers_.push_back(std::make_unique<Block>(c, be, tp, l - 1));
    }
  }
  std::vector<pp3d::Layer*> layers() override {
    std::vector<pp3d::Layer*> out;
    for (auto& l : layers_) out.push_back(l.get());
    return out;
  }
  pp3d::Shape output_shape(int64_t batch, int64_t) const override { return {batch, c_.width}; }
  pp3d::Backend& backend() const override { return be_; }

 private:
  pp3d::Backend& be_;
  Config c_;
  std::vector<std::unique_ptr<pp3d::Layer>> layers_;
};

}  // namespace mlp
