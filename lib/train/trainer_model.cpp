// Trainer: the model of a TrainConfig — its description (GptConfig, arch Gpt2
// or Llama) and this rank's pipeline stage: GptPipelineStage for gpt2, the
// generic PipelineStage over make_llama_chunks for llama. Both run through the
// same schedule, ZeroOptimizer, checkpoints and evaluation.
#include <string>

#include "pp3d/core/error.h"
#include "pp3d/core/user_error.h"
#include "pp3d/model/arch_config.h"
#include "pp3d/model/gpt_pipeline.h"
#include "pp3d/model/llama_hf.h"
#include "pp3d/parallel/process_grid.h"
#include "pp3d/train/interop.h"
#include "pp3d/train/trainer.h"

namespace pp3d {

namespace {

// The sentence of an internal check ("file:line in f(): check failed: <expr>: <sentence>") for a user error.
std::string sentence(const Error& e) {
  std::string w = e.what();
  if (const std::size_t at = w.find("(): "); at != std::string::npos) w = w.substr(at + 4);
  const std::string failed = "check failed: ";
  if (w.rfind(failed, 0) != 0) return w;
  for (std::size_t i = failed.size(); i + 1 < w.size(); ++i)  // the end of the expression: ": " not " : "
    if (w[i] == ':' && w[i + 1] == ' ' && w[i - 1] != ' ') return w.substr(i + 2);
  return w;
}

}  // namespace

int64_t TrainConfig::mlp_width() const {
  if (mlp_hidden_size > 0) return mlp_hidden_size;
  // Llama's default FFN width: 8C/3 rounded up to a multiple of 64 (and so of most tp).
  return is_llama() ? (8 * hidden_size / 3 + 63) / 64 * 64 : 4 * hidden_size;
}

GptConfig model_description(const TrainConfig& c) {
  GptConfig mc;
  if (c.is_llama()) {
    if (!c.init_from.empty()) {
      mc = to_gpt_config(load_llama_hf_config(c.init_from));
      mc.max_seq_len = c.seq_len;  // RoPE: no position table, any context
      mc.padded_vocab_size = c.padded_vocab_size;  // HF files hold vocab_size rows; pp3d pads (to 64, or 64 x tp)
      return mc;
    }
    mc.arch = ModelArch::Llama;
    mc.num_kv_heads = c.num_kv_heads;
    mc.rope_theta = c.rope_theta;
  } else if (!c.init_from.empty()) {
    mc = read_llmc_config(c.init_from);
    PP3D_REQUIRE(c.seq_len <= mc.max_seq_len, "--seq-len {} exceeds the checkpoint's context {} ('{}')", c.seq_len,
                 mc.max_seq_len, c.init_from);
    return mc;
  }
  mc.num_layers = c.num_layers;
  mc.hidden_size = c.hidden_size;
  mc.num_heads = c.num_heads;
  mc.mlp_hidden_size = c.mlp_width();
  mc.tied_embeddings = c.tied();
  mc.ln_eps = c.ln_eps;
  mc.init_std = c.init_std;
  mc.max_seq_len = c.seq_len;
  if (c.vocab_size > 0) mc.vocab_size = c.vocab_size;
  mc.padded_vocab_size = c.padded_vocab_size;
  return mc;
}

void Trainer::build_model(const GptConfig& mc) {
  PipelineConfig pc;
  pc.schedule = parse_schedule(cfg_.schedule);
  pc.virtual_stages = cfg_.virtual_stages;
  pc.split = cfg_.pipeline_split;
  pc.micro_batch_size = layout_.micro_batch;
  pc.seq_len = cfg_.seq_len;
  const bool sp = cfg_.sequence_parallel && cfg_.tp > 1;
  const DType param = mp_.param_dtype();
  const DType grad = cfg_.grad_dtype == "param" ? param : DType::F32;
  const DType act = cfg_.activation_dtype == "param" ? param : DType::F32;
  const DType compute = cfg_.compute16() ? param : DType::F32;
  if (!mc.is_llama()) {
    GptOptions opts;
    opts.seed = cfg_.seed;
    opts.recompute = cfg_.recompute;
    opts.param_dtype = param;
    opts.grad_dtype = grad;
    opts.activation_dtype = act;
    opts.compute_dtype = compute;
    GptLayout base;
    base.sequence_parallel = sp;
    auto stage = std::make_unique<GptPipelineStage>(mc, *backend_, *grid_, pc, base, opts);
    // Every rank reads exactly the slices it holds (both wte copies included).
    if (!cfg_.init_from.empty()) load_llmc_checkpoint(cfg_.init_from, stage->chunk(0).config(), stage->parameters());
    model_config_ = stage->chunk(0).config();
    stage_ = std::move(stage);
    return;
  }
  LlamaConfig lc = to_llama_config(mc);
  try {
    lc.validate(cfg_.tp);
  } catch (const UserError&) {
    throw;
  } catch (const Error& e) {  // the shape came from the flags (or config.json): a user error
    PP3D_USER_FAIL("--arch llama: {}", sentence(e));
  }
  LlamaOptions opts;
  opts.seed = cfg_.seed;
  opts.recompute = cfg_.recompute;
  opts.param_dtype = param;
  opts.grad_dtype = grad;
  opts.activation_dtype = act;
  opts.compute_dtype = compute;
  const PipelineSplit split = PipelineSplit::parse(cfg_.pipeline_split, lc.num_layers, cfg_.pp, cfg_.virtual_stages);
  std::vector<std::unique_ptr<Module>> chunks =
      make_llama_chunks(lc, *backend_, LlamaLayout::tensor_parallel(*grid_, sp), opts, split, grid_->pp_rank());
  stage_ = std::make_unique<PipelineStage>(std::move(chunks), grid_->pp_group(), grid_->embedding_group(), pc, split);
  // Every rank sets the slices it holds (a tied head's copy of embed_tokens included).
  if (!cfg_.init_from.empty()) load_llama_hf(cfg_.init_from, lc, stage_->parameters());
  model_config_ = to_gpt_config(lc);
}

}  // namespace pp3d
