// LlamaOptions dtypes: 16-bit parameters are the rounding of the f32 model's
// init and their optimizer master copies are that init bitwise; gradients and
// the hidden state between stages take grad_dtype / activation_dtype; invalid
// combinations are rejected naming the option.
#include <catch2/catch.hpp>

#include <vector>

#include "pp3d/backend/backend.h"
#include "pp3d/model/llama.h"

using namespace pp3d;

namespace {

LlamaConfig tiny() {
  LlamaConfig c;
  c.vocab_size = 61;
  c.hidden_size = 16;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.mlp_hidden_size = 24;
  c.max_seq_len = 8;
  c.init_std = 0.1f;
  return c;
}

}  // namespace

TEST_CASE("llama 16-bit parameters: the rounding of the f32 init, f32 masters equal to it", "[model][llama][bf16]") {
  auto be = make_cpu_backend();
  Llama ref(tiny(), *be);
  for (DType dt : {DType::BF16, DType::F16}) {
    INFO(dtype_name(dt));
    LlamaOptions o;
    o.param_dtype = o.grad_dtype = dt;
    Llama m(tiny(), *be, {}, o);
    const auto ps = m.parameters(), rs = ref.parameters();
    REQUIRE(ps.size() == rs.size());
    for (std::size_t i = 0; i < ps.size(); ++i) {
      INFO(ps[i]->name);
      CHECK(ps[i]->value.dtype() == dt);
      CHECK(ps[i]->grad.dtype() == dt);
      Tensor rounded = Tensor::empty(rs[i]->value.shape(), dt);
      rounded.fill_from(rs[i]->value.to_vector());
      CHECK(ps[i]->value.to_vector() == rounded.to_vector());
      CHECK(master_initial_values(*ps[i]).to_vector() == rs[i]->value.to_vector());
    }
  }
}

TEST_CASE("llama activation_dtype: a stage without the head returns its hidden state in it", "[model][llama][bf16]") {
  auto be = make_cpu_backend();
  LlamaOptions o;
  o.param_dtype = o.activation_dtype = DType::BF16;
  LlamaLayout first;
  first.end_layer = 1;
  first.has_head = false;
  Llama m(tiny(), *be, first, o);
  CHECK(m.activation_dtype() == DType::BF16);
  std::vector<int32_t> ids(16, 3);
  ActivationCache cache;
  const Tensor out = module_forward(m, Tensor::from_vector_i32({2, 8}, ids), Tensor(), 1.0f, cache);
  CHECK(out.dtype() == DType::BF16);
  CHECK(out.shape() == Shape{2, 8, 16});
}

TEST_CASE("llama dtype options: invalid combinations are rejected naming the option", "[model][llama]") {
  auto be = make_cpu_backend();
  LlamaOptions o;
  o.compute_dtype = DType::BF16;  // with f32 parameters
  CHECK_THROWS_WITH(Llama(tiny(), *be, {}, o), Catch::Contains("compute_dtype must be f32 or the parameter dtype"));
  o = {};
  o.param_dtype = DType::BF16;
  o.activation_dtype = DType::F16;
  CHECK_THROWS_WITH(Llama(tiny(), *be, {}, o), Catch::Contains("activation_dtype"));
  o = {};
  o.param_dtype = DType::F16;
  o.grad_dtype = DType::BF16;
  CHECK_THROWS_WITH(Llama(tiny(), *be, {}, o), Catch::Contains("grad_dtype"));
  o = {};
  o.param_dtype = DType::I32;
  CHECK_THROWS_WITH(Llama(tiny(), *be, {}, o), Catch::Contains("param_dtype must be f32, bf16 or f16"));
}
