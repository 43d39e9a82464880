// Inference helpers: model loading (pp3d / llm.c checkpoints, Hugging Face
// Llama directories), generation and the validation loss as the Trainer
// computes it, for a GPT or a Llama. See include/pp3d/train/inference.h.
#include "pp3d/train/inference.h"

#include <chrono>
#include <cmath>
#include <filesystem>

#include <fmt/format.h>

#include "pp3d/core/error.h"
#include "pp3d/model/arch_config.h"
#include "pp3d/model/generate.h"
#include "pp3d/model/llama_generate.h"
#include "pp3d/model/llama_hf.h"
#include "pp3d/train/checkpoint.h"
#include "pp3d/train/interop.h"

namespace pp3d {

namespace {

// The TP fields of `layout` for a Llama holding the whole model (decoding and
// evaluation need every layer, the embedding and the head).
LlamaLayout llama_layout(const GptLayout& layout, const GptConfig& cfg) {
  PP3D_CHECK(layout.has_embedding && layout.has_head && layout.first_layer == 0 &&
                 layout.end_layer(cfg) == cfg.num_layers,
             "a Llama for inference holds the whole model (no pipeline stages); got layers [{}, {})",
             layout.first_layer, layout.end_layer(cfg));
  LlamaLayout l;
  l.tp_group = layout.tp_group.get();
  l.tp_rank = layout.tp_rank;
  l.tp_size = layout.tp_size;
  return l;
}

}  // namespace

InferenceModel load_inference_model(const std::string& checkpoint, const std::string& init_from, Device device,
                                    const GptLayout& layout) {
  PP3D_CHECK(checkpoint.empty() != init_from.empty(),
             "give exactly one of --checkpoint DIR (pp3d checkpoint) and --init-from FILE|DIR (llm.c checkpoint "
             "file, or Hugging Face Llama directory){}",
             checkpoint.empty() ? "" : " (both were given)");
  InferenceModel m;
  m.trainer_config_json = "{}";
  std::string dir;
  const bool hf = !init_from.empty() && std::filesystem::is_directory(init_from);
  if (!checkpoint.empty()) {
    dir = resolve_checkpoint(checkpoint);
    const CheckpointInfo info = read_checkpoint_info(dir);
    m.config = info.model;
    m.step = info.step;
    m.seed = info.seed;
    m.trainer_config_json = info.trainer_config_json;
    m.source = fmt::format("pp3d checkpoint {} (step {})", dir, info.step);
    m.checkpoint_dir = dir;
  } else if (hf) {
    m.config = to_gpt_config(load_llama_hf_config(init_from));
    m.source = fmt::format("Hugging Face Llama {}", init_from);
  } else {
    m.config = read_llmc_config(init_from);
    m.source = fmt::format("llm.c checkpoint {}", init_from);
  }
  m.backend = make_backend(device);
  m.tp_group = layout.tp_group;
  std::vector<Parameter*> params;
  if (m.config.is_llama()) {
    const LlamaConfig lc = to_llama_config(m.config);
    LlamaOptions opts;
    opts.seed = m.seed;
    m.llama = std::make_unique<Llama>(lc, *m.backend, llama_layout(layout, m.config), opts);
    params = m.llama->parameters();
  } else {
    m.config.validate();
    layout.validate(m.config);
    GptOptions opts;
    opts.seed = m.seed;
    m.model = std::make_unique<Gpt>(m.config, *m.backend, layout, opts);
    params = m.model->parameters();
  }
  if (!checkpoint.empty()) {
    (void)load_checkpoint(dir, parameter_checkpoint_tensors(params, false));
  } else if (hf) {
    load_llama_hf(init_from, m.llama->config(), params);
  } else {
    load_llmc_checkpoint(init_from, m.config, params);
  }
  return m;
}

namespace {

// 124.44M, 3.21K, 512
std::string count_str(int64_t n) {
  const auto d = static_cast<double>(n);
  if (n >= 1000000000) return fmt::format("{:.2f}B", d / 1e9);
  if (n >= 1000000) return fmt::format("{:.2f}M", d / 1e6);
  if (n >= 1000) return fmt::format("{:.2f}K", d / 1e3);
  return std::to_string(n);
}

}  // namespace

std::string describe_model(const Gpt& model) {
  auto& g = const_cast<Gpt&>(model);  // parameters() is not const; nothing is modified
  const GptConfig& c = model.config();
  int64_t emb = 0, blocks = 0, head = 0;
  for (const Parameter* p : g.parameters()) {
    if (!p->counted_in_norm && p->layer == c.num_layers) continue;  // a head stage's tied wte copy
    (p->layer < 0 ? emb : p->layer >= c.num_layers ? head : blocks) += p->global_numel();
  }
  const GptLayout& l = model.layout();
  return fmt::format("{}, {} parameters (embeddings {}, {} blocks {}, head {}{}), {} on this rank, "
                     "tp rank {} of {}, device {}",
                     c.str(), count_str(emb + blocks + head), count_str(emb), c.num_layers, count_str(blocks),
                     count_str(head), c.tied_embeddings ? " + tied wte" : "", count_str(model.num_local_parameters()),
                     l.tp_rank, l.tp_size, model.backend().device().str());
}

void EvalOptions::validate() const {
  PP3D_CHECK(batches >= 1, "--batches must be >= 1, got {}", batches);
  PP3D_CHECK(batch_size >= 1, "--batch-size must be >= 1, got {}", batch_size);
  PP3D_CHECK(seq_len >= 0, "--seq-len must be >= 1 (or 0 = the model's context), got {}", seq_len);
}

std::string describe_model(const Llama& model) {
  auto& m = const_cast<Llama&>(model);  // parameters() is not const; nothing is modified
  const LlamaConfig& c = model.config();
  int64_t emb = 0, blocks = 0, head = 0, local = 0;
  for (const Parameter* p : m.parameters()) {
    local += p->value.numel();
    const bool block = p->name.rfind("model.layers.", 0) == 0;
    (p->name == "model.embed_tokens.weight" ? emb : block ? blocks : head) += p->global_numel();
  }
  const LlamaLayout& l = model.layout();
  return fmt::format("llama L{} C{} H{}/{}kv F{} V{}({}) T{}, rope theta {}, {} parameters (embeddings {}, {} blocks "
                     "{}, head {}{}), {} on this rank, tp rank {} of {}, device {}",
                     c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.mlp_hidden_size, c.vocab_size,
                     c.padded_vocab_size, c.max_seq_len, c.rope_theta, count_str(emb + blocks + head),
                     count_str(emb), c.num_layers, count_str(blocks), count_str(head),
                     c.tied_embeddings ? " + tied embed_tokens" : "", count_str(local), l.tp_rank, l.tp_size,
                     model.backend().device().str());
}

std::string describe_model(const InferenceModel& m) {
  return m.is_llama() ? describe_model(*m.llama) : describe_model(*m.model);
}

std::vector<int32_t> generate(InferenceModel& m, const std::vector<int32_t>& prompt, const GenerateOptions& options) {
  return m.is_llama() ? generate(*m.llama, prompt, options) : generate(*m.model, prompt, options);
}

namespace {

// Trainer::evaluate's windows and arithmetic over any model's fp32 batch loss.
EvalResult evaluate_batches(const std::function<double(const Batch&)>& batch_loss, int64_t max_seq_len,
                            int64_t model_vocab, std::shared_ptr<const TokenDataset> data, const EvalOptions& o) {
  o.validate();
  PP3D_CHECK(data != nullptr, "evaluate_validation: no data");
  const int64_t T = o.seq_len == 0 ? max_seq_len : o.seq_len;
  PP3D_CHECK(T <= max_seq_len, "--seq-len {} exceeds the model's context of {} tokens", T, max_seq_len);
  PP3D_CHECK(data->vocab_size <= model_vocab,
             "the data's vocabulary ({} tokens) does not fit the model's ({}): wrong --data for this model?",
             data->vocab_size, model_vocab);
  const DataLoader loader(std::move(data), o.batch_size, T, o.seed);
  const auto t_start = std::chrono::steady_clock::now();
  EvalResult r;
  double sum = 0.0;
  for (int64_t i = 0; i < o.batches; ++i) {
    const double loss = batch_loss(loader.get_val_rows(i, 0, o.batch_size));
    r.batch_losses.push_back(loss);
    sum += loss;
    if (o.progress) o.progress(i + 1, o.batches, sum / static_cast<double>(i + 1));
  }
  r.loss = sum / static_cast<double>(o.batches);
  r.perplexity = std::exp(r.loss);
  r.tokens = o.batches * o.batch_size * T;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  return r;
}

}  // namespace

EvalResult evaluate_validation(Gpt& model, std::shared_ptr<const TokenDataset> data, const EvalOptions& o) {
  const GptConfig& cfg = model.config();
  return evaluate_batches([&](const Batch& b) { return static_cast<double>(model.evaluate(b.inputs, b.targets)); },
                          cfg.max_seq_len, cfg.vocab_size, std::move(data), o);  // fp32, as Trainer::eval_batch
}

EvalResult evaluate_validation(Llama& model, std::shared_ptr<const TokenDataset> data, const EvalOptions& o) {
  const LlamaConfig& cfg = model.config();
  Backend& be = model.backend();
  auto batch_loss = [&](const Batch& b) {
    const bool host = be.device().is_cpu();
    const Tensor ids = host ? b.inputs : b.inputs.to(be.device(), MemCategory::Activations);
    const Tensor targets = host ? b.targets : b.targets.to(be.device(), MemCategory::Activations);
    ActivationCache cache;
    (void)module_forward(model, ids, targets, 1.0f / static_cast<float>(b.inputs.numel()), cache, ForwardMode::Eval);
    return static_cast<double>(static_cast<float>(cache.loss()));  // fp32, as the GPT's
  };
  return evaluate_batches(batch_loss, cfg.max_seq_len, cfg.vocab_size, std::move(data), o);
}

EvalResult evaluate_validation(InferenceModel& m, std::shared_ptr<const TokenDataset> data, const EvalOptions& o) {
  return m.is_llama() ? evaluate_validation(*m.llama, std::move(data), o)
                      : evaluate_validation(*m.model, std::move(data), o);
}

}  // namespace pp3d
