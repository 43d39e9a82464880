// Inference helpers: model loading (pp3d / llm.c checkpoints) and the
// validation loss as the Trainer computes it. See include/pp3d/train/inference.h.
#include "pp3d/train/inference.h"

#include <chrono>
#include <cmath>

#include <fmt/format.h>

#include "pp3d/core/error.h"
#include "pp3d/train/checkpoint.h"
#include "pp3d/train/interop.h"

namespace pp3d {

InferenceModel load_inference_model(const std::string& checkpoint, const std::string& init_from, Device device,
                                    const GptLayout& layout) {
  PP3D_CHECK(checkpoint.empty() != init_from.empty(),
             "give exactly one of --checkpoint DIR (pp3d checkpoint) and --init-from FILE (llm.c checkpoint){}",
             checkpoint.empty() ? "" : " (both were given)");
  InferenceModel m;
  m.trainer_config_json = "{}";
  std::string dir;
  CheckpointInfo info;
  if (!checkpoint.empty()) {
    dir = resolve_checkpoint(checkpoint);
    info = read_checkpoint_info(dir);
    m.config = info.model;
    m.step = info.step;
    m.seed = info.seed;
    m.trainer_config_json = info.trainer_config_json;
    m.source = fmt::format("pp3d checkpoint {} (step {})", dir, info.step);
    m.checkpoint_dir = dir;
  } else {
    m.config = read_llmc_config(init_from);
    m.source = fmt::format("llm.c checkpoint {}", init_from);
  }
  m.config.validate();
  layout.validate(m.config);
  m.backend = make_backend(device);
  GptOptions opts;
  opts.seed = m.seed;
  m.model = std::make_unique<Gpt>(m.config, *m.backend, layout, opts);
  if (!checkpoint.empty()) {
    (void)load_checkpoint(dir, parameter_checkpoint_tensors(m.model->parameters(), false));
  } else {
    load_llmc_checkpoint(init_from, m.config, m.model->parameters());
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

EvalResult evaluate_validation(Gpt& model, std::shared_ptr<const TokenDataset> data, const EvalOptions& o) {
  o.validate();
  PP3D_CHECK(data != nullptr, "evaluate_validation: no data");
  const GptConfig& cfg = model.config();
  const int64_t T = o.seq_len == 0 ? cfg.max_seq_len : o.seq_len;
  PP3D_CHECK(T <= cfg.max_seq_len, "--seq-len {} exceeds the model's context of {} tokens", T, cfg.max_seq_len);
  PP3D_CHECK(data->vocab_size <= cfg.vocab_size,
             "the data's vocabulary ({} tokens) does not fit the model's ({}): wrong --data for this model?",
             data->vocab_size, cfg.vocab_size);
  const DataLoader loader(std::move(data), o.batch_size, T, o.seed);
  const auto t_start = std::chrono::steady_clock::now();
  EvalResult r;
  double sum = 0.0;
  for (int64_t i = 0; i < o.batches; ++i) {
    const Batch b = loader.get_val_rows(i, 0, o.batch_size);
    const double loss = model.evaluate(b.inputs, b.targets);  // fp32, as Trainer::eval_batch
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

}  // namespace pp3d
