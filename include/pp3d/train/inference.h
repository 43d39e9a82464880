// Inference helpers behind pp3d-generate, pp3d-eval and tools/test_model:
// load a trained model (pp3d checkpoint directory, llm.c checkpoint file or
// Hugging Face Llama directory) for forward-only use, generate from it, and
// measure the validation loss exactly as the Trainer logs it (val_loss).
//
// An InferenceModel owns its backend and model, a GPT or a Llama (the
// functions taking an InferenceModel handle both). evaluate_validation() is a
// pure function of (weights, data, options). With tensor parallelism (a
// layout with tp_size > 1) the calls are collective over the layout's
// tp_group. Not thread-safe: one thread per model.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "pp3d/backend/backend.h"
#include "pp3d/model/gpt.h"
#include "pp3d/model/llama.h"
#include "pp3d/model/sampling.h"
#include "pp3d/train/data.h"

namespace pp3d {

struct InferenceModel {
  GptConfig config;  // the model's shape; config.is_llama() for a Llama (to_llama_config gives its LlamaConfig)
  std::unique_ptr<Backend> backend;
  std::shared_ptr<Communicator> tp_group;  // the layout's (a Llama references it without owning it)
  std::unique_ptr<Gpt> model;              // the GPT; null for a Llama
  std::unique_ptr<Llama> llama;            // the Llama; null for a GPT
  std::string source;               // "pp3d checkpoint <dir> (step N)" | "llm.c checkpoint <file>" |
                                    // "Hugging Face Llama <dir>"
  std::optional<int64_t> step;      // optimizer steps of a pp3d checkpoint
  uint64_t seed = 1337;             // the training run's seed (pp3d checkpoints), else the Trainer's default
  std::string trainer_config_json;  // the saving run's settings ("{}" when unknown)
  std::string checkpoint_dir;       // the resolved pp3d checkpoint directory ("" otherwise)

  bool is_llama() const { return llama != nullptr; }
};

// Loads a model for inference on `device`. Exactly one of `checkpoint` (a
// pp3d checkpoint directory, or a run's output directory / "latest" pointer,
// resolved with resolve_checkpoint; GPT or Llama as its manifest says) and
// `init_from` (an llm.c fp32 GPT-2 checkpoint file, or a Hugging Face Llama
// directory with config.json + safetensors) must be non-empty; the other gives
// a clear error (naming --checkpoint / --init-from). The model's shape comes
// from the files; `layout` selects a tensor-parallel shard (default: the whole
// model; a Llama takes its TP fields); only model weights are read.
InferenceModel load_inference_model(const std::string& checkpoint, const std::string& init_from, Device device,
                                    const GptLayout& layout = {});

// One line: "L4 H4 C128 V256(256) T64, 0.83M parameters (embeddings 41.0K, 4 blocks 792.58K, head 256
// + tied wte), 0.83M on this rank, tp rank 0 of 1, device cpu".
std::string describe_model(const Gpt& model);
// One line: "llama L2 C64 H4/2kv F192 V256(256) T64, rope theta 10000, 131.39K parameters (...), ..., device cpu".
std::string describe_model(const Llama& model);
std::string describe_model(const InferenceModel& model);

// generate() with the model's KV cache (pp3d/model/generate.h, pp3d/model/llama_generate.h).
std::vector<int32_t> generate(InferenceModel& model, const std::vector<int32_t>& prompt,
                              const GenerateOptions& options);

struct EvalOptions {
  int64_t batches = 8;      // validation batches (Trainer: --eval-batches)
  int64_t batch_size = 16;  // rows per batch (Trainer: --batch-size)
  int64_t seq_len = 0;      // tokens per row; 0: the model's max_seq_len (Trainer: --seq-len)
  uint64_t seed = 1337;     // data seed (Trainer: --seed)
  // Called after each batch with (batches done, total, mean loss so far).
  std::function<void(int64_t, int64_t, double)> progress;
  void validate() const;  // throws naming --batches / --batch-size / --seq-len
};

struct EvalResult {
  double loss = 0.0;        // mean cross-entropy (nats/token), Trainer::evaluate's value
  double perplexity = 0.0;  // exp(loss)
  int64_t tokens = 0;       // tokens scored
  std::vector<double> batch_losses;
  double seconds = 0.0;
};

// Mean validation loss over batches [0, batches) of DataLoader(data, batch_size,
// seq_len, seed).get_val_rows(i, 0, batch_size): the same windows and the same
// arithmetic (fp32 mean per batch, double mean over batches) as
// Trainer::evaluate, so with the trainer's --seed, --batch-size, --seq-len and
// --eval-batches it reproduces the logged val_loss. The model must hold the
// embedding and the head; seq_len <= its max_seq_len; data ids < its vocabulary.
EvalResult evaluate_validation(Gpt& model, std::shared_ptr<const TokenDataset> data, const EvalOptions& options);
// The same for a Llama: each batch's loss is the fp32 value of module_forward
// in Eval mode with loss weight 1 / (batch_size * seq_len), as the GPT's.
EvalResult evaluate_validation(Llama& model, std::shared_ptr<const TokenDataset> data, const EvalOptions& options);
EvalResult evaluate_validation(InferenceModel& model, std::shared_ptr<const TokenDataset> data,
                               const EvalOptions& options);

}  // namespace pp3d
