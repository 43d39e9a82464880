// pp3d-train flags (see docs/USAGE_GUIDE.md) and the --print-config dump.
#include "cli.h"

#include <filesystem>

#include <fmt/format.h>

#include "pp3d/core/error.h"
#include "pp3d/core/user_error.h"
#include "pp3d/train/data.h"

namespace pp3d::cli {

void add_train_options(CLI::App& app, TrainConfig& c) {
  auto opt = [&](const char* name, auto& var, const char* help) {
    return app.add_option(name, var, help)->capture_default_str();
  };
  app.add_option("--device", c.device, "cpu | cuda | auto")->check(CLI::IsMember({"cpu", "cuda", "auto"}))->capture_default_str();
  // ---- model
  opt("--arch", c.arch, "model family: gpt2 (learned positions, LayerNorm, GELU) | llama (RoPE, RMSNorm, SwiGLU, "
      "grouped-query attention; docs/LLAMA.md)")->check(CLI::IsMember({"gpt2", "llama"}));
  opt("--num-layers", c.num_layers, "transformer blocks");
  opt("--hidden-size", c.hidden_size, "model width C");
  opt("--num-heads", c.num_heads, "attention heads (must divide --hidden-size, and be divisible by --tp)");
  opt("--seq-len", c.seq_len, "tokens per sequence (also the model's context)");
  opt("--vocab-size", c.vocab_size, "0 = the data's vocabulary");
  opt("--padded-vocab-size", c.padded_vocab_size, "0 = vocab rounded up to 64 (64 x tp when 64 does not divide)");
  opt("--mlp-hidden-size", c.mlp_hidden_size, "0 = 4 x --hidden-size (llama: 8 x --hidden-size / 3 rounded up to 64)");
  app.add_option_function<bool>("--tied-embeddings", [&c](const bool& v) { c.tied_embeddings = v; },
                                "true: the LM head is the token embedding; false: a separate lm_head (default: true "
                                "for gpt2, false for llama)");
  opt("--ln-eps", c.ln_eps, "LayerNorm epsilon (llama: the RMSNorm epsilon, also --norm-eps)");
  opt("--num-kv-heads", c.num_kv_heads, "llama: key/value heads (divides --num-heads; --tp must divide it; 0 = "
      "--num-heads)");
  opt("--rope-theta", c.rope_theta, "llama: RoPE base theta");
  opt("--norm-eps", c.ln_eps, "llama: RMSNorm epsilon (the same setting as --ln-eps)");
  opt("--init-std", c.init_std, "std of the normal initialisation of wte and the linear weights");
  // ---- batch
  opt("--batch-size", c.micro_batch_size, "micro-batch rows per forward/backward");
  opt("--global-batch-size", c.global_batch_size,
      "rows per optimizer step (multiple of dp x --batch-size; 0 = dp x --batch-size x --micro-batches, or x --pp "
      "with --schedule interleaved, else x 1)");
  opt("--micro-batches", c.micro_batches,
      "micro-batches per step per data-parallel rank (with --global-batch-size: derives --batch-size)");
  // ---- optimisation
  opt("--max-steps", c.max_steps, "optimizer steps");
  opt("--lr", c.lr, "peak learning rate");
  opt("--min-lr", c.min_lr, "final learning rate of the decay (the default is lowered to --lr when larger)");
  opt("--warmup-steps", c.warmup_steps, "linear warm-up steps (the default is lowered to --max-steps when larger)");
  opt("--lr-schedule", c.lr_schedule, "cosine | linear | constant")->check(CLI::IsMember({"cosine", "linear", "constant"}));
  opt("--weight-decay", c.weight_decay, "AdamW decoupled weight decay (matrices only)");
  opt("--adam-eps", c.adam_eps, "AdamW epsilon (betas 0.9 / 0.95)");
  opt("--grad-clip", c.grad_clip, "global gradient-norm clip (<= 0: off)");
  opt("--seed", c.seed, "seed of initialization and batch sampling");
  app.add_flag("--recompute", c.recompute, "recompute activations per block in backward");
  // ---- mixed precision (docs/MIXED_PRECISION.md)
  app.add_flag("--bf16", c.bf16, "bf16 parameters and 16-bit compute (f32 gradients, master weights and Adam state; no loss "
               "scaling; --compute-dtype f32 keeps f32 compute)");
  app.add_flag("--fp16", c.fp16, "fp16 parameters and 16-bit compute with dynamic loss scaling (not with --bf16)");
  opt("--grad-dtype", c.grad_dtype, "gradient storage: f32 (fp32 accumulation) | param (the 16-bit parameter dtype; "
      "needs --bf16/--fp16)")->check(CLI::IsMember({"f32", "param"}));
  opt("--activation-dtype", c.activation_dtype, "storage of saved activations and the hidden state between blocks: "
      "f32 | param (the 16-bit parameter dtype, the residual stream included; needs --bf16/--fp16)")
      ->check(CLI::IsMember({"f32", "param"}));
  opt("--compute-dtype", c.compute_dtype, "compute precision: auto | f32 | param. param: activations flow in the "
      "16-bit parameter dtype between ops (Linear GEMMs with 16-bit operands and f32 accumulation, LayerNorm / GELU / "
      "attention with 16-bit inputs and outputs and f32 math; residual, logits and loss f32; tensor cores and cuDNN "
      "attention on CUDA; needs --bf16/--fp16). auto (default): param with --bf16/--fp16, else f32; f32 with "
      "--bf16/--fp16 multiplies f32 activations by the widened 16-bit weights")->check(CLI::IsMember({"auto", "f32", "param"}));
  opt("--initial-loss-scale", c.loss_scaler.init_scale, "--fp16: initial loss scale (DeepSpeed 2^initial_scale_power)");
  opt("--loss-scale-window", c.loss_scaler.scale_window, "--fp16: clean steps before the loss scale doubles");
  opt("--hysteresis", c.loss_scaler.hysteresis, "--fp16: overflows tolerated before the loss scale halves");
  opt("--min-loss-scale", c.loss_scaler.min_scale, "--fp16: lower bound of the loss scale");
  // ---- parallelism
  // "auto": the planner chooses (pp3d-train resolves tp = 0 / pp = 0 / zero_stage = -1 before validation).
  auto or_auto = [](const char* auto_value, int lo, int hi) {
    return CLI::Validator(
        [=](std::string& s) -> std::string {
          if (s == "auto") {
            s = auto_value;
            return {};
          }
          int v = 0;
          if (!CLI::detail::lexical_cast(s, v) || v < lo || v > hi)
            return fmt::format("'{}' is not an integer in [{}, {}] or auto", s, lo, hi);
          return {};
        },
        hi > 100 ? "INT>=1|auto" : "0..3|auto");
  };
  opt("--tp", c.tp, "tensor-parallel size (Megatron); dp = ranks / (tp x pp); auto: chosen by the planner")
      ->transform(or_auto("0", 1, 1 << 20));
  opt("--pp", c.pp, "pipeline-parallel size; auto: chosen by the planner")->transform(or_auto("0", 1, 1 << 20));
  app.add_flag("--sequence-parallel", c.sequence_parallel, "Megatron sequence parallelism (needs --tp > 1)");
  opt("--schedule", c.schedule, "pipeline schedule: gpipe | 1f1b | interleaved | zb-h1 (zero bubble: split "
      "backward, bubble (pp-1)/(3m), more activation memory on later stages) | auto (1f1b or zb-h1, chosen by "
      "the planner)")
      ->check(CLI::IsMember({"gpipe", "1f1b", "interleaved", "zb-h1", "auto"}));
  opt("--virtual-stages", c.virtual_stages, "model chunks per pipeline rank (interleaved: >= 2)");
  opt("--pipeline-split", c.pipeline_split, "layers per virtual stage, e.g. 3,5 (default balanced)");
  opt("--zero-stage", c.zero_stage, "ZeRO stage over the data-parallel group: 0 (plain DP), 1, 2, 3; auto: chosen "
      "by the planner")->transform(or_auto("-1", 0, 3));
  opt("--bucket-size-mb", c.bucket_size_mb, "gradient-reduction bucket size (MB of f32)");
  opt("--prefetch-layers", c.prefetch_layers, "ZeRO-3: layers gathered ahead of use");
  // ---- data, files, reporting
  app.add_option("--data", c.data, "text file/folder, .bin token shard(s) or a folder of them (memory-mapped; "
                 "tools/prepare_data writes them), or a weighted blend 'W1 PATH1 W2 PATH2 ...' or a YAML blend file "
                 "(blend.yaml: a list of {weight, path}); default: embedded synthetic corpus");
  opt("--sampler", c.sampler, "epoch: shuffled epochs of non-overlapping windows (without replacement); random: "
      "independent random windows; auto: random for the embedded corpus, epoch otherwise")
      ->check(CLI::IsMember({"auto", "epoch", "random"}));
  app.add_option("--init-from", c.init_from, "llm.c GPT-2 checkpoint (fp32) to start from; with --arch llama a "
                 "Hugging Face Llama directory (config.json + model.safetensors or its sharded index)");
  opt("--output-dir", c.output_dir, "where train.log and metrics.jsonl go");
  opt("--log-interval", c.log_interval, "steps between log lines");
  opt("--eval-interval", c.eval_interval, "steps between validations (0: only at the end)");
  opt("--eval-batches", c.eval_batches, "validation batches of --batch-size rows per evaluation");
  app.add_option("--export-safetensors", c.export_safetensors, "write the final weights here, gathered from any "
                 "layout: a safetensors file with HF GPT-2 names; with --arch llama a Hugging Face Llama directory "
                 "(model.safetensors + config.json)");
  opt("--save-interval", c.save_interval, "checkpoint every N steps and after the last (0: never); "
      "<output-dir>/checkpoint-<step>/, reloadable into any layout. SIGINT/SIGTERM always save one at the next "
      "step boundary and exit 0 (continue with --resume-from latest)");
  opt("--keep-last,--keep-checkpoints", c.keep_last, "keep only the newest N checkpoints (0: all)");
  app.add_option("--resume-from", c.resume_from, "checkpoint directory, or 'latest' (in --output-dir), to continue from");
  app.add_option("--trace", c.trace, "write a Chrome trace (chrome://tracing) of one step's pipeline here");
  opt("--trace-step", c.trace_step, "0-based step whose trace --trace writes (clamped to the last)");
  app.add_flag("--log-all-ranks", c.log_all_ranks, "every rank logs (default: global rank 0 only)");
  app.add_flag("--quiet", c.quiet, "no info log on the console, no train.log, no progress bar (warnings, errors, "
               "metrics.jsonl and checkpoints still written)");
  app.add_flag("--progress,!--no-progress", c.progress,
               "rank 0's progress bar with ETA on stderr when it is a terminal (default on)");
  opt("--peak-tflops", c.peak_tflops, "per-rank peak TFLOP/s for metrics.jsonl's mfu (0: known GPUs only, none on CPU)")
      ->check(CLI::NonNegativeNumber);
}

nlohmann::ordered_json config_json(const TrainConfig& c) {
  return {{"device", c.device}, {"arch", c.arch}, {"num_layers", c.num_layers}, {"hidden_size", c.hidden_size},
          {"num_heads", c.num_heads}, {"seq_len", c.seq_len}, {"vocab_size", c.vocab_size},
          {"padded_vocab_size", c.padded_vocab_size}, {"mlp_hidden_size", c.mlp_hidden_size},
          {"tied_embeddings", c.tied()}, {"ln_eps", c.ln_eps}, {"num_kv_heads", c.num_kv_heads},
          {"rope_theta", c.rope_theta}, {"init_std", c.init_std},
          {"batch_size", c.micro_batch_size}, {"global_batch_size", c.global_batch_size},
          {"micro_batches", c.micro_batches}, {"max_steps", c.max_steps}, {"lr", c.lr}, {"min_lr", c.min_lr},
          {"warmup_steps", c.warmup_steps}, {"lr_schedule", c.lr_schedule}, {"weight_decay", c.weight_decay},
          {"adam_eps", c.adam_eps}, {"grad_clip", c.grad_clip}, {"seed", c.seed}, {"recompute", c.recompute},
          {"bf16", c.bf16}, {"fp16", c.fp16}, {"grad_dtype", c.grad_dtype},
          {"activation_dtype", c.activation_dtype}, {"compute_dtype", c.compute16() ? "param" : "f32"},
          {"initial_loss_scale", c.loss_scaler.init_scale},
          {"loss_scale_window", c.loss_scaler.scale_window}, {"hysteresis", c.loss_scaler.hysteresis},
          {"min_loss_scale", c.loss_scaler.min_scale},
          {"tp", c.tp}, {"pp", c.pp}, {"sequence_parallel", c.sequence_parallel}, {"schedule", c.schedule},
          {"virtual_stages", c.virtual_stages}, {"pipeline_split", c.pipeline_split}, {"zero_stage", c.zero_stage},
          {"bucket_size_mb", c.bucket_size_mb}, {"prefetch_layers", c.prefetch_layers}, {"data", c.data}, {"sampler", c.sampler},
          {"init_from", c.init_from}, {"output_dir", c.output_dir}, {"log_interval", c.log_interval},
          {"eval_interval", c.eval_interval}, {"eval_batches", c.eval_batches},
          {"export_safetensors", c.export_safetensors}, {"save_interval", c.save_interval},
          {"keep_last", c.keep_last}, {"resume_from", c.resume_from}, {"trace", c.trace}, {"trace_step", c.trace_step},
          {"log_all_ranks", c.log_all_ranks}, {"quiet", c.quiet}, {"progress", c.progress}, {"peak_tflops", c.peak_tflops}};
}

std::vector<std::string> clamp_derived_defaults(const CLI::App& app, TrainConfig& c) {
  std::vector<std::string> notes;
  auto given = [&](const char* flag) { return app.count(flag) > 0; };
  if (!given("--warmup-steps") && c.max_steps >= 1 && c.warmup_steps > c.max_steps) {
    notes.push_back(fmt::format("--warmup-steps: the default {} is more than --max-steps {}; using {}",
                                c.warmup_steps, c.max_steps, c.max_steps));
    c.warmup_steps = c.max_steps;
  }
  if (!given("--min-lr") && c.lr > 0.0f && c.min_lr > c.lr) {
    notes.push_back(fmt::format("--min-lr: the default {} is more than --lr {}; using {}", c.min_lr, c.lr, c.lr));
    c.min_lr = c.lr;
  }
  return notes;
}

void check_paths(const TrainConfig& c) {
  namespace fs = std::filesystem;
  const auto exists = [](const std::string& p) { return p.empty() || fs::exists(p); };
  const auto blend = parse_blend_spec(c.data);  // "W1 P1 W2 P2": each path must exist
  if (blend.empty()) {
    PP3D_REQUIRE(c.data == "synthetic" || exists(c.data), "--data '{}' does not exist (from {}: relative paths are "
                 "taken from the directory the command ran in)", c.data, fs::current_path().string());
  }
  for (const auto& [weight, path] : blend)
    PP3D_REQUIRE(exists(path), "--data: blend source '{}' does not exist (from {}: relative paths are taken from the "
                 "directory the command ran in)", path, fs::current_path().string());
  PP3D_REQUIRE(exists(c.init_from), "--init-from '{}' does not exist (from {})", c.init_from,
               fs::current_path().string());
  PP3D_REQUIRE(c.resume_from == "latest" || exists(c.resume_from), "--resume-from '{}' does not exist (from {}; "
               "or use --resume-from latest)", c.resume_from, fs::current_path().string());
}

}  // namespace pp3d::cli
