// Gpt: parameters, stage forward/backward (embedding, blocks, head + loss).
#include "pp3d/model/gpt.h"

#include <cmath>

#include "model/gpt_internal.h"
#include "pp3d/core/error.h"

namespace pp3d {

using detail::new_activation;

// ---- construction -------------------------------------------------------------
Gpt::Gpt(const GptConfig& config, Backend& backend, const GptLayout& layout, const GptOptions& options)
    : cfg_(config.resolved()), layout_(layout), opts_(options), backend_(&backend) {
  cfg_.validate();
  PP3D_CHECK(!cfg_.is_llama(), "pp3d::Gpt builds GPT-2-style models only; a Llama is pp3d::Llama (LlamaConfig)");
  PP3D_CHECK(is_floating(opts_.param_dtype), "GptOptions::param_dtype must be f32, bf16 or f16, got {}",
             dtype_name(opts_.param_dtype));
  PP3D_CHECK(opts_.grad_dtype == DType::F32 || opts_.grad_dtype == opts_.param_dtype,
             "GptOptions::grad_dtype must be f32 or the parameter dtype {}, got {} (16-bit gradients need "
             "16-bit parameters)",
             dtype_name(opts_.param_dtype), dtype_name(opts_.grad_dtype));
  PP3D_CHECK(opts_.activation_dtype == DType::F32 || opts_.activation_dtype == opts_.param_dtype,
             "GptOptions::activation_dtype must be f32 or the parameter dtype {}, got {} (16-bit activations "
             "need 16-bit parameters)",
             dtype_name(opts_.param_dtype), dtype_name(opts_.activation_dtype));
  PP3D_CHECK(opts_.compute_dtype == DType::F32 || opts_.compute_dtype == opts_.param_dtype,
             "GptOptions::compute_dtype must be f32 or the parameter dtype {}, got {} (16-bit GEMMs need "
             "16-bit parameters)",
             dtype_name(opts_.param_dtype), dtype_name(opts_.compute_dtype));
  layout_.last_layer = layout_.end_layer(cfg_);
  layout_.validate(cfg_);
  build_parameters();
  layers_ = detail::make_gpt_layers(*this);
}

Gpt::~Gpt() = default;

Parameter& Gpt::add_parameter(const std::string& name, Shape global, ShardSpec shard, InitSpec init) {
  auto p = std::make_unique<Parameter>();
  p->name = name;
  p->global_shape = std::move(global);
  p->shard = shard;
  p->init = init;
  p->layer = building_layer_;
  p->weight_decay = p->global_shape.size() >= 2 || opts_.decay_vectors;
  p->replicated_in_tp = !shard.sharded();
  p->counted_in_norm = !(p->replicated_in_tp && layout_.tp_rank != 0);
  const Shape local = shard_local_shape(p->global_shape, shard);
  p->value = Tensor::empty(local, opts_.param_dtype, backend_->device(), MemCategory::Params);
  p->grad = Tensor::zeros(local, opts_.grad_dtype, backend_->device(), MemCategory::Grads);
  init_parameter(*p, opts_.seed);
  params_.push_back(std::move(p));
  return *params_.back();
}

void Gpt::build_parameters() {
  const int64_t C = cfg_.hidden_size, F = cfg_.mlp_hidden(), V = cfg_.padded_vocab();
  const int64_t tp = layout_.tp_size, r = layout_.tp_rank;
  const InitSpec zeros{InitKind::Zeros}, ones{InitKind::Ones};
  const InitSpec normal{InitKind::Normal, 0.0f, cfg_.init_std};
  const InitSpec resid{InitKind::Normal, 0.0f,
                       cfg_.init_std / std::sqrt(2.0f * static_cast<float>(cfg_.num_layers))};
  const ShardSpec none{};
  const ShardSpec vocab_rows{0, r * (V / tp), V / tp, 1};
  const ShardSpec qkv_rows{0, r * (C / tp), C / tp, 3};  // heads of q, k and v
  const ShardSpec col_rows{0, r * (F / tp), F / tp, 1};  // column-parallel c_fc
  const ShardSpec proj_cols_c{1, r * (C / tp), C / tp, 1};
  const ShardSpec proj_cols_f{1, r * (F / tp), F / tp, 1};
  const ShardSpec qkv_bias{0, r * (C / tp), C / tp, 3};
  const ShardSpec fc_bias{0, r * (F / tp), F / tp, 1};
  auto sh = [&](const ShardSpec& s) { return tp == 1 ? none : s; };

  if (layout_.has_embedding) {
    wte_ = &add_parameter("wte", {V, C}, sh(vocab_rows), normal);
    wpe_ = &add_parameter("wpe", {cfg_.max_seq_len, C}, none, InitSpec{InitKind::Normal, 0.0f, cfg_.wpe_init_std});
  }
  for (int64_t l = layout_.first_layer; l < layout_.last_layer; ++l) {
    building_layer_ = l;
    const std::string p = "h." + std::to_string(l) + ".";
    auto b = std::make_unique<Block>();
    b->ln1_w = &add_parameter(p + "ln_1.weight", {C}, none, ones);
    b->ln1_b = &add_parameter(p + "ln_1.bias", {C}, none, zeros);
    b->qkv_w = &add_parameter(p + "attn.c_attn.weight", {3 * C, C}, sh(qkv_rows), normal);
    b->qkv_b = &add_parameter(p + "attn.c_attn.bias", {3 * C}, sh(qkv_bias), zeros);
    b->attn_proj_w = &add_parameter(p + "attn.c_proj.weight", {C, C}, sh(proj_cols_c), resid);
    b->attn_proj_b = &add_parameter(p + "attn.c_proj.bias", {C}, none, zeros);
    b->ln2_w = &add_parameter(p + "ln_2.weight", {C}, none, ones);
    b->ln2_b = &add_parameter(p + "ln_2.bias", {C}, none, zeros);
    b->fc_w = &add_parameter(p + "mlp.c_fc.weight", {F, C}, sh(col_rows), normal);
    b->fc_b = &add_parameter(p + "mlp.c_fc.bias", {F}, sh(fc_bias), zeros);
    b->mlp_proj_w = &add_parameter(p + "mlp.c_proj.weight", {C, F}, sh(proj_cols_f), resid);
    b->mlp_proj_b = &add_parameter(p + "mlp.c_proj.bias", {C}, none, zeros);
    b->local_heads = cfg_.num_heads / tp;
    b->head_dim = cfg_.head_dim();
    b->eps = cfg_.ln_eps;
    b->tp = layout_.tp_group.get();
    b->sequence_parallel = layout_.sequence_parallel;
    b->act_dtype = opts_.activation_dtype;
    b->gemm_dtype = opts_.compute_dtype;
    blocks_.push_back(std::move(b));
  }
  if (layout_.has_head) {
    building_layer_ = cfg_.num_layers;
    lnf_w_ = &add_parameter("ln_f.weight", {C}, none, ones);
    lnf_b_ = &add_parameter("ln_f.bias", {C}, none, zeros);
    if (!cfg_.tied_embeddings) {
      head_ = &add_parameter("lm_head.weight", {V, C}, sh(vocab_rows), normal);
    } else if (wte_ != nullptr) {
      head_ = wte_;
    } else {
      // Head-only stage of a tied model: its own copy of wte (same init); the
      // embedding stage's copy is the one counted in the gradient norm.
      head_ = &add_parameter("wte", {V, C}, sh(vocab_rows), normal);
      head_->counted_in_norm = false;
    }
  }
}

std::vector<Parameter*> Gpt::parameters() {
  std::vector<Parameter*> out;
  out.reserve(params_.size());
  for (auto& p : params_) out.push_back(p.get());
  return out;
}

Parameter* Gpt::find_parameter(const std::string& name) {
  for (auto& p : params_)
    if (p->name == name) return p.get();
  return nullptr;
}

int64_t Gpt::local_seq(int64_t T) const {
  if (!layout_.sequence_parallel || layout_.tp_size == 1) return T;
  PP3D_CHECK(T % layout_.tp_size == 0,
             "sequence parallelism needs the sequence length {} to be divisible by tp_size {} (choose T as a "
             "multiple of tp or turn sequence_parallel off)",
             T, layout_.tp_size);
  return T / layout_.tp_size;
}

Shape Gpt::hidden_shape(int64_t batch, int64_t seq) const { return {batch, local_seq(seq), cfg_.hidden_size}; }

int64_t Gpt::num_local_parameters() const {
  int64_t n = 0;
  for (const auto& p : params_) n += p->value.numel();
  return n;
}

}  // namespace pp3d
