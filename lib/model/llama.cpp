// pp3d::Llama: configuration checks, parameters (HF names, layout-independent
// init, TP shards) and the module's layers; the layer math is in
// llama_layers.cpp. Public headers only.
#include "pp3d/model/llama.h"

#include "model/llama_layers.h"
#include "pp3d/core/error.h"
#include "pp3d/parallel/process_grid.h"
#include "pp3d/parallel/tensor_parallel.h"

namespace pp3d {

LlamaConfig LlamaConfig::resolved() const {
  LlamaConfig c = *this;
  if (c.num_kv_heads == 0) c.num_kv_heads = c.num_heads;
  if (c.padded_vocab_size == 0) c.padded_vocab_size = (c.vocab_size + 63) / 64 * 64;
  return c;
}

void LlamaConfig::validate(int tp_size) const {
  const LlamaConfig c = resolved();
  PP3D_CHECK(c.vocab_size >= 1 && c.hidden_size >= 1 && c.num_layers >= 1 && c.num_heads >= 1 &&
                 c.mlp_hidden_size >= 1 && c.max_seq_len >= 1,
             "llama config: vocab_size {}, hidden_size {}, num_layers {}, num_heads {}, mlp_hidden_size {} and "
             "max_seq_len {} must all be >= 1",
             c.vocab_size, c.hidden_size, c.num_layers, c.num_heads, c.mlp_hidden_size, c.max_seq_len);
  PP3D_CHECK(c.hidden_size % c.num_heads == 0, "llama config: num_heads {} must divide hidden_size {}", c.num_heads,
             c.hidden_size);
  PP3D_CHECK(c.head_dim() % 2 == 0, "llama config: the head size hidden_size / num_heads = {} must be even (RoPE)",
             c.head_dim());
  PP3D_CHECK(c.num_kv_heads >= 1 && c.num_heads % c.num_kv_heads == 0,
             "llama config: num_kv_heads {} must divide num_heads {}", c.num_kv_heads, c.num_heads);
  PP3D_CHECK(c.padded_vocab_size >= c.vocab_size, "llama config: padded_vocab_size {} is smaller than vocab_size {}",
             c.padded_vocab_size, c.vocab_size);
  PP3D_CHECK(c.rope_theta > 0.0f && c.norm_eps >= 0.0f, "llama config: rope_theta {} must be > 0, norm_eps {} >= 0",
             c.rope_theta, c.norm_eps);
  PP3D_CHECK(tp_size >= 1, "tensor-parallel size must be >= 1, got {}", tp_size);
  PP3D_CHECK(c.num_kv_heads % tp_size == 0,
             "tensor-parallel size {} must divide num_kv_heads {} (k and v are split by kv head); use a tp that "
             "divides {}",
             tp_size, c.num_kv_heads, c.num_kv_heads);
  PP3D_CHECK(c.mlp_hidden_size % tp_size == 0, "tensor-parallel size {} must divide mlp_hidden_size {}", tp_size,
             c.mlp_hidden_size);
  PP3D_CHECK(c.padded_vocab_size % tp_size == 0,
             "tensor-parallel size {} must divide padded_vocab_size {} (set padded_vocab_size to a multiple of it)",
             tp_size, c.padded_vocab_size);
}

LlamaLayout LlamaLayout::tensor_parallel(const ProcessGrid& grid, bool sequence_parallel) {
  LlamaLayout l;
  l.tp_group = grid.tp() > 1 ? grid.tp_group().get() : nullptr;
  l.tp_rank = grid.tp_rank();
  l.tp_size = grid.tp();
  l.sequence_parallel = sequence_parallel;
  return l;
}

namespace {

InitSpec normal(float std) { return {InitKind::Normal, 0.0f, std}; }
const InitSpec kOnes{InitKind::Ones, 0.0f, 0.0f};

}  // namespace

Llama::Llama(const LlamaConfig& config, Backend& backend, const LlamaLayout& layout, const LlamaOptions& options)
    : cfg_(config.resolved()), be_(backend), layout_(layout), opts_(options) {
  cfg_.validate(layout_.tp_size);
  PP3D_CHECK(is_floating(opts_.param_dtype), "LlamaOptions::param_dtype must be f32, bf16 or f16, got {}",
             dtype_name(opts_.param_dtype));
  const char* what[] = {"grad_dtype", "activation_dtype", "compute_dtype"};
  const char* why[] = {"gradients", "activations", "GEMMs"};
  const DType dts[] = {opts_.grad_dtype, opts_.activation_dtype, opts_.compute_dtype};
  for (int i = 0; i < 3; ++i)
    PP3D_CHECK(dts[i] == DType::F32 || dts[i] == opts_.param_dtype,
               "LlamaOptions::{} must be f32 or the parameter dtype {}, got {} (16-bit {} need 16-bit parameters)",
               what[i], dtype_name(opts_.param_dtype), dtype_name(dts[i]), why[i]);
  if (layout_.end_layer < 0) layout_.end_layer = cfg_.num_layers;
  PP3D_CHECK(0 <= layout_.first_layer && layout_.first_layer <= layout_.end_layer &&
                 layout_.end_layer <= cfg_.num_layers,
             "LlamaLayout: layers [{}, {}) outside [0, {}]", layout_.first_layer, layout_.end_layer, cfg_.num_layers);
  PP3D_CHECK(layout_.tp_rank >= 0 && layout_.tp_rank < layout_.tp_size, "LlamaLayout: tp_rank {} outside [0, {})",
             layout_.tp_rank, layout_.tp_size);
  // tp_group may be null with tp_size > 1 only to build (and load) shards; forward needs it.
  PP3D_CHECK(layout_.tp_group == nullptr || (layout_.tp_group->size() == layout_.tp_size &&
                                             layout_.tp_group->rank() == layout_.tp_rank),
             "LlamaLayout: tp_size {} needs a tp_group of that size in which this rank is tp_rank {}",
             layout_.tp_size, layout_.tp_rank);
  const int r = layout_.tp_rank, tp = layout_.tp_size;
  const int64_t C = cfg_.hidden_size, D = cfg_.head_dim(), F = cfg_.mlp_hidden_size, Vp = cfg_.padded_vocab_size;
  auto add = [&](const std::string& name, const Shape& shape, const ShardSpec& shard, const InitSpec& init) {
    auto p = std::make_unique<Parameter>(make_sharded_parameter(name, shape, shard, init, opts_.seed, be_.device()));
    if (opts_.param_dtype != DType::F32) {  // 16-bit storage: the rounding of the same f32 init
      p->value = Tensor::empty(p->value.shape(), opts_.param_dtype, be_.device(), MemCategory::Params);
      init_parameter(*p, opts_.seed);
    }
    if (opts_.grad_dtype != DType::F32)
      p->grad = Tensor::zeros(p->grad.shape(), opts_.grad_dtype, be_.device(), MemCategory::Grads);
    p->counted_in_norm = shard.sharded() || r == 0;  // a TP-replicated tensor counts once
    params_.push_back(std::move(p));
    return params_.back().get();
  };
  const float std = cfg_.init_std;
  const ShardSpec vocab_rows = column_parallel_shard(Vp, r, tp);

  llama_detail::LayerEnv env{cfg_,
                             &be_,
                             tp > 1 ? layout_.tp_group : nullptr,
                             r,
                             tp,
                             layout_.sequence_parallel,
                             opts_.recompute,
                             opts_.activation_dtype,
                             opts_.compute_dtype};
  Parameter* embed = nullptr;
  if (layout_.has_embedding) {
    embed = add("model.embed_tokens.weight", {Vp, C}, vocab_rows, normal(std));
    layers_.push_back(llama_detail::make_embedding_layer(env, *embed));
  }
  for (int64_t l = layout_.first_layer; l < layout_.end_layer; ++l) {
    const std::string pre = "model.layers." + std::to_string(l) + ".";
    llama_detail::BlockParams b{};
    b.input_norm = add(pre + "input_layernorm.weight", {C}, {}, kOnes);
    b.q = add(pre + "self_attn.q_proj.weight", {cfg_.num_heads * D, C}, column_parallel_shard(cfg_.num_heads * D, r, tp),
              normal(std));
    b.k = add(pre + "self_attn.k_proj.weight", {cfg_.num_kv_heads * D, C},
              column_parallel_shard(cfg_.num_kv_heads * D, r, tp), normal(std));
    b.v = add(pre + "self_attn.v_proj.weight", {cfg_.num_kv_heads * D, C},
              column_parallel_shard(cfg_.num_kv_heads * D, r, tp), normal(std));
    b.o = add(pre + "self_attn.o_proj.weight", {C, cfg_.num_heads * D}, row_parallel_shard(cfg_.num_heads * D, r, tp),
              normal(std));
    b.post_norm = add(pre + "post_attention_layernorm.weight", {C}, {}, kOnes);
    b.gate = add(pre + "mlp.gate_proj.weight", {F, C}, column_parallel_shard(F, r, tp), normal(std));
    b.up = add(pre + "mlp.up_proj.weight", {F, C}, column_parallel_shard(F, r, tp), normal(std));
    b.down = add(pre + "mlp.down_proj.weight", {C, F}, row_parallel_shard(F, r, tp), normal(std));
    layers_.push_back(llama_detail::make_block_layer(env, b));
  }
  if (layout_.has_head) {
    Parameter* norm = add("model.norm.weight", {C}, {}, kOnes);
    Parameter* head = nullptr;
    if (!cfg_.tied_embeddings) {
      head = add("lm_head.weight", {Vp, C}, vocab_rows, normal(std));
    } else if (embed != nullptr) {
      head = embed;  // listed by the embedding and the head layer; owned by the embedding
    } else {
      // Head-only stage of a tied model: its own copy (same init); the
      // embedding stage's copy is the one counted in the gradient norm.
      head = add("model.embed_tokens.weight", {Vp, C}, vocab_rows, normal(std));
      head->counted_in_norm = false;
    }
    layers_.push_back(llama_detail::make_head_layer(env, *norm, *head));
  }
}

Llama::~Llama() = default;

std::vector<Layer*> Llama::layers() {
  std::vector<Layer*> out;
  for (auto& l : layers_) out.push_back(l.get());
  return out;
}

std::vector<Parameter*> Llama::shared_parameters() {
  Parameter* embed = find_parameter("model.embed_tokens.weight");
  if (!cfg_.tied_embeddings || embed == nullptr || (layout_.has_embedding && layout_.has_head)) return {};
  return {embed};
}

Shape Llama::output_shape(int64_t batch, int64_t seq) const {
  if (layout_.sequence_parallel) {
    PP3D_CHECK(seq % layout_.tp_size == 0, "sequence parallelism: sequence length {} is not divisible by tp {}", seq,
               layout_.tp_size);
    seq /= layout_.tp_size;
  }
  return {batch, seq, cfg_.hidden_size};
}

Tensor Llama::prepare_input(const Tensor& input, MicroBatchContext& ctx) {
  PP3D_CHECK(layout_.tp_size == 1 || layout_.tp_group != nullptr,
             "Llama with tp_size {}: LlamaLayout.tp_group is null (set it, e.g. LlamaLayout::tensor_parallel(grid))",
             layout_.tp_size);
  if (layout_.has_embedding) {
    PP3D_CHECK(input.dim() == 2 && input.dtype() == DType::I32,
               "Llama: the embedding stage expects token ids i32 [B, T], got {}", input.str());
    PP3D_CHECK(input.size(1) >= 1 && input.size(1) <= cfg_.max_seq_len,
               "Llama: sequence length {} must be in [1, max_seq_len {}]", input.size(1), cfg_.max_seq_len);
    PP3D_CHECK(!layout_.sequence_parallel || input.size(1) % layout_.tp_size == 0,
               "sequence parallelism: sequence length {} is not divisible by tp {}", input.size(1), layout_.tp_size);
  } else {
    PP3D_CHECK(input.dim() == 3 && input.size(2) == cfg_.hidden_size &&
                   (input.dtype() == DType::F32 || input.dtype() == opts_.activation_dtype),
               "Llama: a stage without the embedding expects hidden states [B, T_local, {}] in f32 or the "
               "activation dtype {}, got {}",
               cfg_.hidden_size, dtype_name(opts_.activation_dtype), input.str());
  }
  if (layout_.has_head) {
    PP3D_CHECK(ctx.targets.defined() && ctx.targets.dtype() == DType::I32,
               "Llama: the head stage needs targets i32 [B, T]");
  }
  return input;
}

Parameter* Llama::find_parameter(const std::string& name) {
  for (auto& p : params_)
    if (p->name == name) return p.get();
  return nullptr;
}

std::vector<std::unique_ptr<Module>> make_llama_chunks(const LlamaConfig& config, Backend& backend,
                                                       const LlamaLayout& base, const LlamaOptions& options,
                                                       const PipelineSplit& split, int pp_rank) {
  std::vector<std::unique_ptr<Module>> chunks;
  for (int c = 0; c < split.v; ++c) {
    const int s = split.stage_of(pp_rank, c);
    LlamaLayout l = base;
    l.first_layer = split.first_layer(s);
    l.end_layer = split.end_layer(s);
    l.has_embedding = s == 0;
    l.has_head = s == split.num_stages() - 1;
    chunks.push_back(std::make_unique<Llama>(config, backend, l, options));
  }
  return chunks;
}

}  // namespace pp3d
