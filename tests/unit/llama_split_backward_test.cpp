// Llama's split backward (zero-bubble schedules, --schedule zb-h1): the input
// part (module_backward(..., BackwardPart::Input)) followed by the weight part
// (module_backward_weight) must give BITWISE the gradients and d(input) of the
// fused backward — whole model (tied and untied), a middle stage, activation
// recompute, and bf16 parameters with 16-bit activations and compute — with
// the weight parts of several micro-batches run after all their input parts
// (as ZB-H1 does). The split is real: between the two parts the Linear weight
// gradients have not moved while the RMSNorm ones have.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "pp3d/backend/backend.h"
#include "pp3d/model/llama.h"
#include "test_util.h"

using namespace pp3d;
using pp3d::test::bits_equal;

namespace {

constexpr int64_t kB = 2, kT = 8, kC = 16, kMicro = 2;

LlamaConfig small_config(bool tied) {
  LlamaConfig c;
  c.vocab_size = 61;
  c.hidden_size = kC;
  c.num_layers = 3;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.mlp_hidden_size = 24;
  c.max_seq_len = kT;
  c.tied_embeddings = tied;
  c.init_std = 0.1f;
  return c;
}

Tensor ids(uint32_t seed) {
  std::vector<int32_t> v(static_cast<std::size_t>(kB * kT));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<int32_t>((seed * 7919u + i * 104729u) % 61u);
  return Tensor::from_vector_i32({kB, kT}, v);
}

struct Inputs {
  Tensor in, tgt, dout;
};

Inputs inputs(const LlamaLayout& l, int i) {
  const auto seed = static_cast<uint32_t>(100 + i);
  Inputs x;
  x.in = l.has_embedding ? ids(seed) : test::random_tensor({kB, kT, kC}, seed);
  if (l.has_head) x.tgt = ids(seed + 50);
  else x.dout = test::random_tensor({kB, kT, kC}, seed + 70, -0.1f, 0.1f);
  return x;
}

void compare(const LlamaConfig& cfg, const LlamaLayout& layout, const LlamaOptions& opts) {
  auto be = make_cpu_backend();
  Llama fused(cfg, *be, layout, opts), split(cfg, *be, layout, opts);
  std::vector<Tensor> dx_fused, dx_split;
  for (int i = 0; i < kMicro; ++i) {
    const Inputs x = inputs(layout, i);
    ActivationCache c;
    module_forward(fused, x.in, x.tgt, 0.01f, c);
    dx_fused.push_back(module_backward(fused, x.dout, c));
  }
  std::vector<ActivationCache> caches(kMicro);
  for (int i = 0; i < kMicro; ++i) {
    const Inputs x = inputs(layout, i);
    module_forward(split, x.in, x.tgt, 0.01f, caches[i]);
    dx_split.push_back(module_backward(split, x.dout, caches[i], BackwardPart::Input));
    CHECK(caches[i].weight_pending());
  }
  // Between the parts: the RMSNorm gradients are there, the Linear weights' are not.
  const std::string blk = "model.layers." + std::to_string(layout.first_layer) + ".";
  CHECK(be->sum_squares(split.find_parameter(blk + "input_layernorm.weight")->grad) > 0.0);
  for (const char* w : {"self_attn.q_proj.weight", "self_attn.o_proj.weight", "mlp.gate_proj.weight",
                        "mlp.down_proj.weight"})
    CHECK(be->sum_squares(split.find_parameter(blk + w)->grad) == 0.0);
  if (layout.has_head) CHECK(be->sum_squares(split.find_parameter("model.norm.weight")->grad) > 0.0);
  for (int i = 0; i < kMicro; ++i) {
    module_backward_weight(split, caches[i]);
    CHECK(!caches[i].weight_pending());
  }
  CHECK(be->sum_squares(split.find_parameter(blk + "mlp.down_proj.weight")->grad) > 0.0);
  for (int i = 0; i < kMicro; ++i) {
    CHECK(dx_fused[i].defined() == dx_split[i].defined());
    if (dx_fused[i].defined()) CHECK(bits_equal(dx_fused[i], dx_split[i]));
  }
  const auto pa = fused.parameters(), pb = split.parameters();
  REQUIRE(pa.size() == pb.size());
  for (std::size_t i = 0; i < pa.size(); ++i) {
    INFO(pa[i]->name);
    CHECK(be->sum_squares(pa[i]->grad) > 0.0);
    CHECK(bits_equal(pa[i]->grad, pb[i]->grad));
  }
}

}  // namespace

TEST_CASE("llama split backward: input + weight parts equal the fused backward bitwise", "[model][llama][pipeline]") {
  const LlamaLayout whole;
  SECTION("whole model, untied") { compare(small_config(false), whole, {}); }
  SECTION("whole model, tied") { compare(small_config(true), whole, {}); }
  SECTION("activation recompute") {
    LlamaOptions o;
    o.recompute = true;
    compare(small_config(false), whole, o);
  }
  SECTION("bf16 parameters, activations and compute") {
    LlamaOptions o;
    o.param_dtype = o.activation_dtype = o.compute_dtype = DType::BF16;
    compare(small_config(false), whole, o);
  }
  SECTION("middle stage (no embedding, no head)") {
    LlamaLayout mid;
    mid.first_layer = 1;
    mid.end_layer = 3;
    mid.has_embedding = mid.has_head = false;
    compare(small_config(false), mid, {});
  }
}
