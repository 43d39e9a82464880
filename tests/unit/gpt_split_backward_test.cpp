// GPT's split backward (zero-bubble schedules): the input part
// (module_backward(..., BackwardPart::Input)) followed by the weight part
// (module_backward_weight) must give BITWISE the gradients and d(input) of the
// fused backward, for the whole model (tied and untied), a middle stage, with
// activation recompute and with 16-bit activation storage; the weight part of
// several micro-batches may run after all their input parts (as ZB-H1 does).
// The test also shows the split is real: between the two parts the Linear
// weight gradients have not moved while the LayerNorm ones have.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "pp3d/backend/backend.h"
#include "pp3d/model/gpt.h"
#include "test_util.h"

using namespace pp3d;
using pp3d::test::bits_equal;

namespace {

constexpr int64_t kB = 2, kT = 8, kMicro = 2;

GptConfig small_config(bool tied) {
  GptConfig c;
  c.vocab_size = 61;
  c.max_seq_len = kT;
  c.num_layers = 3;
  c.num_heads = 2;
  c.hidden_size = 16;
  c.tied_embeddings = tied;
  return c;
}

Tensor ids(uint32_t seed) {
  std::vector<int32_t> v(static_cast<std::size_t>(kB * kT));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<int32_t>((seed * 7919u + i * 104729u) % 61u);
  return Tensor::from_vector_i32({kB, kT}, v);
}

// Stage input and output gradient of micro-batch i (ids / random hidden states).
struct Inputs {
  Tensor in, tgt, dout;
};

Inputs inputs(const Gpt& g, int i) {
  const auto seed = static_cast<uint32_t>(100 + i);
  Inputs x;
  x.in = g.layout().has_embedding ? ids(seed) : test::random_tensor({kB, kT, 16}, seed);
  if (g.layout().has_head) x.tgt = ids(seed + 50);
  if (!g.layout().has_head) x.dout = test::random_tensor({kB, kT, 16}, seed + 70, -0.1f, 0.1f);
  return x;
}

// Whether every parameter's gradient is bitwise equal in a and b.
void check_grads_equal(Gpt& a, Gpt& b) {
  const auto pa = a.parameters(), pb = b.parameters();
  REQUIRE(pa.size() == pb.size());
  for (std::size_t i = 0; i < pa.size(); ++i) {
    INFO(pa[i]->name);
    CHECK(bits_equal(pa[i]->grad, pb[i]->grad));
  }
}

Tensor grad_copy(Gpt& g, const std::string& name) {
  Parameter* p = g.find_parameter(name);
  REQUIRE(p != nullptr);
  return Tensor::from_vector(p->grad.shape(), p->grad.to_vector());
}

// Fused backward per micro-batch in `fused`; in `split` every micro-batch's
// input part first, then (deferred, in micro-batch order) every weight part.
void compare(const GptConfig& cfg, const GptLayout& layout, const GptOptions& opts) {
  auto be = make_cpu_backend();
  Gpt fused(cfg, *be, layout, opts), split(cfg, *be, layout, opts);
  std::vector<Tensor> dx_fused, dx_split;
  for (int i = 0; i < kMicro; ++i) {
    const Inputs x = inputs(fused, i);
    ActivationCache c;
    fused.forward(x.in, x.tgt, 0.01f, c);
    dx_fused.push_back(fused.backward(x.dout, c));
  }
  std::vector<ActivationCache> caches(kMicro);
  for (int i = 0; i < kMicro; ++i) {
    const Inputs x = inputs(split, i);
    split.forward(x.in, x.tgt, 0.01f, caches[i]);
    dx_split.push_back(module_backward(split, x.dout, caches[i], BackwardPart::Input));
    CHECK(caches[i].weight_pending());
  }
  // Between the parts: the LayerNorm gradients are there, the Linear weights' are not.
  const std::string blk = fmt::format("h.{}.", layout.first_layer);
  CHECK(be->sum_squares(split.find_parameter(blk + "ln_1.weight")->grad) > 0.0);
  CHECK(be->sum_squares(split.find_parameter(blk + "mlp.c_fc.weight")->grad) == 0.0);
  CHECK(be->sum_squares(split.find_parameter(blk + "attn.c_proj.bias")->grad) == 0.0);
  const Tensor fc_before = grad_copy(split, blk + "mlp.c_fc.weight");
  for (int i = 0; i < kMicro; ++i) {
    module_backward_weight(split, caches[i]);
    CHECK(!caches[i].weight_pending());
  }
  CHECK(!bits_equal(fc_before, split.find_parameter(blk + "mlp.c_fc.weight")->grad));
  for (int i = 0; i < kMicro; ++i) {
    CHECK(dx_fused[i].defined() == dx_split[i].defined());
    if (dx_fused[i].defined()) CHECK(bits_equal(dx_fused[i], dx_split[i]));
  }
  check_grads_equal(fused, split);
}

}  // namespace

TEST_CASE("gpt split backward: input + weight parts equal the fused backward bitwise", "[model][pipeline]") {
  GptLayout whole;
  SECTION("whole model, tied embeddings") { compare(small_config(true), whole, {}); }
  SECTION("whole model, untied embeddings") { compare(small_config(false), whole, {}); }
  SECTION("activation recompute") {
    GptOptions o;
    o.recompute = true;
    compare(small_config(false), whole, o);
  }
  SECTION("bf16 parameters and activations") {
    GptOptions o;
    o.param_dtype = o.activation_dtype = DType::BF16;
    compare(small_config(false), whole, o);
  }
  SECTION("middle stage (no embedding, no head)") {
    GptLayout mid;
    mid.first_layer = 1;
    mid.last_layer = 3;
    mid.has_embedding = mid.has_head = false;
    compare(small_config(false), mid, {});
  }
}
