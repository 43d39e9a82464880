// Trainer: the training loop behind pp3d-train — data -> micro-batches ->
// pipeline schedule -> data-parallel gradient sync (ZeRO 0..3) -> global-norm
// clipping -> AdamW -> log / eval / metrics.jsonl -> optional safetensors export.
//
// One code path for every layout: the world (a LocalCommunicator when none is
// given) is split into a ProcessGrid (tp x dp x pp, dp = world / (tp * pp)); the
// model is always a PipelineStage (pp may be 1) and the optimizer always a
// ZeroOptimizer over the DP group (stage 0 = plain DDP; dp may be 1). The
// model is a GPT (GptPipelineStage) or, with arch "llama", a pp3d::Llama
// (PipelineStage over make_llama_chunks); everything else is the same code. Rows of
// the step's global batch are split by DP rank, then into micro-batches; the
// loss weight is 1 / (global batch * seq_len), so every layout computes the
// serial run (DESIGN.md section 1; tests/parallel/trainer_3d_test.cpp).
//
// TrainConfig is a plain value type; validate(world) rejects inconsistent
// settings (naming the command-line flag) before anything is allocated. A
// Trainer owns its dataset, backend, model and optimizer and shares the world;
// it is used from one thread, and every rank of the world calls the collective
// members (constructor, train_step, evaluate, run, gather_full_parameters) together.
#pragma once

#include <cstdint>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "pp3d/backend/backend.h"
#include "pp3d/comm/communicator.h"
#include "pp3d/model/gpt.h"
#include "pp3d/train/data.h"
#include "pp3d/train/loss_scaler.h"
#include "pp3d/optim/lr_schedule.h"
#include "pp3d/train/mixed_precision.h"
#include "pp3d/optim/optimizer.h"

namespace pp3d {

class ProcessGrid;
class PipelineStage;
class ZeroOptimizer;

// The parallel layout of a run, derived from a TrainConfig and the world size.
struct ParallelLayout {
  int world = 1, tp = 1, pp = 1, dp = 1;
  int64_t global_batch = 0;   // rows per optimizer step
  int64_t micro_batch = 0;    // rows per micro-batch
  int64_t micro_batches = 0;  // micro-batches per step on each DP rank
  // "world 8 = tp 2 x dp 2 x pp 2; global batch 8 = dp 2 x 2 micro-batches x 2 rows"
  std::string str() const;
};

struct TrainConfig {
  // ---- model (ignored, except seq_len, with init_from: the checkpoint's shape is used)
  std::string arch = "gpt2";  // gpt2 (learned positions, LayerNorm, GELU) | llama (RoPE, RMSNorm, SwiGLU, GQA)
  int64_t num_layers = 4;
  int64_t hidden_size = 128;
  int64_t num_heads = 4;
  int64_t seq_len = 64;     // tokens per row; also the model's max_seq_len
  int64_t vocab_size = 0;   // 0: the dataset's (256 for bytes, 50257 for llm.c shards)
  int64_t padded_vocab_size = 0;  // 0: vocab rounded up to a multiple of 64 (GptConfig)
  int64_t mlp_hidden_size = 0;    // 0: 4 * hidden_size (gpt2); 8 C / 3 rounded up to a multiple of 64 (llama)
  std::optional<bool> tied_embeddings;  // LM head = wte; unset: true for gpt2, false for llama
  float ln_eps = 1e-5f;           // LayerNorm epsilon (gpt2); RMSNorm epsilon (llama, --norm-eps)
  int64_t num_kv_heads = 0;       // llama: key/value heads (0: num_heads); divides num_heads, tp divides it
  float rope_theta = 10000.0f;    // llama: RoPE base
  float init_std = 0.02f;
  // ---- batch
  int64_t micro_batch_size = 16;   // rows per forward/backward
  int64_t global_batch_size = 0;   // rows per optimizer step; 0: micro_batch_size * dp * max(micro_batches, 1)
  int64_t micro_batches = 0;       // micro-batches per step per DP rank; > 0: with global_batch_size set,
                                   // micro_batch_size is derived (= global / (dp * micro_batches))
  // ---- optimisation
  int64_t max_steps = 400;
  float lr = 2e-3f;
  float min_lr = 2e-4f;
  int64_t warmup_steps = 40;
  std::string lr_schedule = "cosine";  // cosine | linear | constant
  float weight_decay = 0.1f;
  float grad_clip = 1.0f;  // <= 0: no clipping
  float adam_eps = 1e-8f;  // AdamW epsilon (betas 0.9 / 0.95)
  uint64_t seed = 1337;    // parameter init and batch sampling
  bool recompute = false;  // activation recompute per block
  // ---- mixed precision (docs/MIXED_PRECISION.md): 16-bit parameters, f32 grads / master / Adam state
  bool bf16 = false;               // --bf16: bf16 parameters, no loss scaling
  bool fp16 = false;               // --fp16: f16 parameters + dynamic loss scaling (exclusive with bf16)
  std::string grad_dtype = "f32";  // --grad-dtype f32 | param (16-bit gradients in the param dtype; needs --bf16/--fp16)
  std::string activation_dtype = "f32";  // --activation-dtype f32 | param (saved activations + hidden state in 16-bit)
  // --compute-dtype auto | f32 | param: param = activations flow in 16 bits between ops (16-bit GEMM
  // operands, f32 accumulation); auto (default) = param with --bf16 / --fp16 (Megatron's --bf16), else f32.
  std::string compute_dtype = "auto";
  // The compute precision this config runs: true = 16-bit (compute_dtype param, or auto with 16-bit params).
  bool compute16() const { return compute_dtype == "param" || (compute_dtype == "auto" && (bf16 || fp16)); }
  LossScalerConfig loss_scaler;    // --fp16 only: --initial-loss-scale, --loss-scale-window, --hysteresis, --min-loss-scale
  // ---- parallelism (dp = world size / (tp * pp))
  int tp = 1;                      // tensor-parallel size (divides num_heads)
  int pp = 1;                      // pipeline-parallel size
  bool sequence_parallel = false;  // Megatron sequence parallelism (tp > 1; seq_len % tp == 0)
  std::string schedule = "1f1b";   // gpipe | 1f1b | interleaved | zb-h1
  int virtual_stages = 1;          // model chunks per pipeline rank (interleaved: >= 2)
  std::string pipeline_split;      // "" = balanced, else layers per virtual stage "3,5"
  int zero_stage = 0;              // 0 (plain data parallel), 1, 2, 3
  double bucket_size_mb = 25.0;    // gradient bucket size (MB of f32)
  int prefetch_layers = 1;         // ZeRO-3: layers gathered ahead
  // ---- data, device, files
  std::string device = "cpu";  // cpu | cuda | auto
  std::string data;            // "" = embedded synthetic corpus; text file/folder; .bin shard(s); "W1 P1 W2 P2" blend
  std::string sampler = "auto";  // epoch | random | auto (random for the embedded corpus, epoch otherwise)
  std::string init_from;       // llm.c GPT-2 checkpoint to start from; llama: a Hugging Face Llama directory
  std::string output_dir = "output";
  std::string export_safetensors;  // write the final weights here ("" = no export)
  int64_t save_interval = 0;       // > 0: checkpoint (any-layout reloadable) every N steps and after the last
  int keep_last = 0;               // > 0: keep only the newest N checkpoints
  std::string resume_from;         // checkpoint directory, or "latest" (output_dir's latest pointer)
  // ---- reporting
  int64_t log_interval = 10;   // train.log line every N steps (metrics.jsonl gets every step)
  int64_t eval_interval = 100; // validation every N steps and after the last; 0: only after the last
  int64_t eval_batches = 8;    // validation batches of micro_batch_size rows
  bool quiet = false;          // no console/log output (tests)
  std::string trace;           // Chrome trace of step trace_step written here ("" = none; merged over pp)
  int64_t trace_step = 2;      // 0-based step whose pipeline trace is written (clamped to the last step)
  bool log_all_ranks = false;  // every rank logs (default: global rank 0 only)
  bool progress = true;        // rank 0's progress bar with ETA when stderr is a terminal (--no-progress: off)
  double peak_tflops = 0.0;    // > 0: per-rank peak TFLOP/s for metrics.jsonl's mfu (0: known GPUs only)

  bool is_llama() const { return arch == "llama"; }
  // tied_embeddings with the architecture's default filled in.
  bool tied() const { return tied_embeddings.value_or(!is_llama()); }
  // The FFN width: mlp_hidden_size, or the architecture's default (4 C; Llama: 8 C / 3 rounded up to 64).
  int64_t mlp_width() const;

  // Serial layout (dp = 1) shorthands.
  int64_t effective_global_batch() const { return resolve_layout(1).global_batch; }
  int64_t grad_accum_steps() const { return resolve_layout(1).micro_batches; }
  // Throws pp3d::Error naming the offending flag (e.g. "--hidden-size 130 is not divisible by --num-heads 4"),
  // including the parallel layout for `world_size` ranks.
  void validate(int world_size = 1) const;
  // The layout on `world_size` ranks (checks the parallel and batch flags only).
  ParallelLayout resolve_layout(int world_size) const;
};

struct StepMetrics {
  int64_t step = 0;               // 0-based optimizer step
  double loss = 0.0;              // mean cross-entropy over the global batch's tokens (nats)
  float lr = 0.0f;
  float grad_norm = 0.0f;         // global L2 norm before clipping (of the unscaled gradients; NaN when skipped)
  float loss_scale = 1.0f;        // --fp16: the loss scale this step's gradients carried (1 otherwise)
  bool skipped = false;           // --fp16: gradient overflow, the optimizer step was skipped on every rank
  double step_seconds = 0.0;
  double tokens_per_s = 0.0;
  std::optional<double> val_loss; // set on evaluation steps
  // Evaluation steps of a blended --data: the validation loss of each source
  // alone (its own validation split), in the blend's order.
  std::vector<double> val_loss_by_source;
  // Pipeline bubble of the step on this rank (pp > 1): idle / step time, and (p-1)/m (or /(v m)).
  std::optional<double> idle_fraction;
  std::optional<double> theoretical_bubble;
  // This process's allocator bytes per category after the step: current and peak since the previous step.
  std::vector<std::pair<std::string, std::size_t>> mem_current, mem_peak;
  // ZeRO formula bytes of this rank's model states (params, grads, optimizer, total, psi, ...; trainer_memory.h).
  std::vector<std::pair<std::string, double>> mem_formula;
  // dp > 1: the step's DP gradient reduction, in flight (ms), blocking the step (ms), fraction hidden behind backward.
  std::optional<double> grad_comm_ms, grad_comm_exposed_ms, grad_comm_hidden_fraction;
  // Time split of the step on this rank (ms; docs/USAGE_GUIDE.md "metrics.jsonl"): forward + backward
  // compute of the pipeline schedule, the rest of the schedule (waiting for / exchanging activations: the
  // bubble), finish_gradient_sync (DP gradient reduction left after backward), and the optimizer call
  // (global-norm all-reduce, clipping, AdamW, ZeRO parameter all-gathers).
  double compute_ms = 0.0, bubble_ms = 0.0, grad_sync_ms = 0.0, optimizer_ms = 0.0;
  // Time the step waited for its data: the next step's batches are read on a
  // background thread during this step, so this is ~0 unless the loader is slower than a step.
  double data_wait_ms = 0.0;
  double model_flops = 0.0;  // model FLOPs of the step over all ranks (trainer_flops.h)
};

class Trainer {
 public:
  // Validates `config` against the world's size, resolves the device, loads the
  // data, builds the grid, pipeline stage and ZeRO optimizer (and loads
  // init_from). world == nullptr: a serial run on a LocalCommunicator. Does not
  // touch output_dir (run() does). Collective over the world.
  explicit Trainer(TrainConfig config, std::shared_ptr<Communicator> world = nullptr);
  ~Trainer();

  // One optimizer step at step() over the global batch, then step()++. The loss
  // and grad norm are global (the same on every rank).
  StepMetrics train_step();
  // Mean validation loss over eval_batches fixed validation batches of
  // micro-batch rows (batch i on DP rank i % dp; forward only through the pipeline).
  // source >= 0: the same over that blend source's own validation split.
  double evaluate(int source = -1);
  // The whole run: max_steps steps with logging, eval, <output_dir>/train.log and
  // metrics.jsonl (global rank 0 writes them), the trace and the export.
  // SIGINT / SIGTERM (on any rank) during the loop: every rank stops after the
  // same step, a checkpoint is saved into output_dir (even with save_interval
  // 0), stop_signal() is set and run() returns (no export). Returns the last
  // step's metrics.
  StepMetrics run();
  // The full (unsharded, f32, host) tensors of every parameter of the model
  // (one "wte" / "model.embed_tokens.weight"), gathered over TP, PP (and ZeRO-3 DP) onto global rank 0;
  // empty on the other ranks. Collective over the world.
  std::vector<Parameter> gather_full_parameters();
  // Writes the current weights from any layout (gathered as above; global rank 0
  // writes): gpt2 a safetensors file with Hugging Face GPT-2 names at `path`;
  // llama a Hugging Face Llama directory `path` (model.safetensors + config.json,
  // loadable with --init-from). run() calls it with export_safetensors. Collective.
  void export_weights(const std::string& path);

  int64_t step() const { return step_; }
  // The SIGINT / SIGTERM that made run() stop early (after saving a checkpoint), 0 when none.
  int stop_signal() const { return stop_signal_; }
  const TrainConfig& config() const { return cfg_; }
  const ParallelLayout& layout() const { return layout_; }
  // The model's description (arch Gpt2 or Llama; pp3d/model/arch_config.h), resolved.
  const GptConfig& model_config() const { return model_config_; }
  // This rank's first model chunk (the whole model when tp = pp = 1). Under
  // ZeRO-2/3 gradients (and with ZeRO-3 values) are undefined between steps.
  // GPT only: throws pp3d::Error for --arch llama (use pipeline().module(0)).
  Gpt& model();
  // This rank's pipeline stage: Gpt chunks (gpt2) or Llama chunks (llama).
  PipelineStage& pipeline() { return *stage_; }
  ZeroOptimizer& optimizer() { return *zero_; }
  const MixedPrecision& mixed_precision() const { return mp_; }
  const ProcessGrid& grid() const { return *grid_; }
  const DataLoader& data() const { return *loader_; }
  // Unigram entropy of the training split (bits per token).
  double unigram_entropy_bits() const { return unigram_bits_; }

 private:
  double eval_batch(int64_t index, int source);  // collective over the pp (and TP) group
  void save();                       // checkpoint of step_ (collective)
  std::string last_checkpoint_description() const;  // for error messages: "'<dir>'" or "none (...)"
  void resume();                     // loads resume_from (every rank)
  std::string tokenizer_kind() const;  // recorded in checkpoints (trainer_checkpoint.cpp)
  void log_header();

  TrainConfig cfg_;
  ParallelLayout layout_;
  std::shared_ptr<Communicator> world_;
  std::unique_ptr<ProcessGrid> grid_;
  std::shared_ptr<const TokenDataset> dataset_;
  std::unique_ptr<DataLoader> loader_;
  // This DP rank's micro-batches of step prefetch_step_, read on a thread (trainer_step.cpp).
  std::future<std::vector<Batch>> prefetch_;
  int64_t prefetch_step_ = -1;
  std::vector<Batch> step_batches(int64_t step) const;
  std::unique_ptr<Backend> backend_;
  void build_model(const GptConfig& mc);  // stage_, model_config_ and init_from for either arch (trainer_model.cpp)
  GptConfig model_config_;
  std::unique_ptr<PipelineStage> stage_;
  std::unique_ptr<ZeroOptimizer> zero_;
  SumSquaresReducer mp_reducer_;
  MixedPrecision mp_;  // --bf16 / --fp16 policy (loss scaler for fp16)
  LrSchedule schedule_;
  double unigram_bits_ = 0.0;
  int64_t step_ = 0;
  int stop_signal_ = 0;
};

// The model a TrainConfig describes before its data is read (arch Gpt2 or
// Llama, pp3d/model/arch_config.h): with init_from the checkpoint's (llm.c
// header; llama: the Hugging Face config.json, context = seq_len), else the
// flags with vocab_size = --vocab-size (0: GptConfig's default; the Trainer
// then takes the data's). Throws a user error naming the flag for a bad shape.
GptConfig model_description(const TrainConfig& c);

// Parses a --device value: "cpu", "cuda" (needs a CUDA build and a GPU) or "auto".
Device resolve_device(const std::string& device);

}  // namespace pp3d
