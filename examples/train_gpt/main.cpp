// pp3d-train: train a GPT on one process (CPU or one GPU). All logic lives in
// pp3d::Trainer; this file only maps command-line flags to a TrainConfig.
#include <cstdio>

#include <CLI/CLI.hpp>

#include "pp3d/core/error.h"
#include "pp3d/train/trainer.h"

int main(int argc, char** argv) {
  pp3d::TrainConfig c;
  CLI::App app{"pp3d-train: train a GPT-2-style model (see docs/USAGE_GUIDE.md)"};
  app.add_option("--device", c.device, "cpu | cuda | auto")->check(CLI::IsMember({"cpu", "cuda", "auto"}))->capture_default_str();
  app.add_option("--num-layers", c.num_layers, "transformer blocks")->capture_default_str();
  app.add_option("--hidden-size", c.hidden_size, "model width C")->capture_default_str();
  app.add_option("--num-heads", c.num_heads, "attention heads (must divide --hidden-size)")->capture_default_str();
  app.add_option("--seq-len", c.seq_len, "tokens per sequence (also the model's context)")->capture_default_str();
  app.add_option("--vocab-size", c.vocab_size, "0 = the data's vocabulary")->capture_default_str();
  app.add_option("--batch-size", c.micro_batch_size, "micro-batch rows per forward/backward")->capture_default_str();
  app.add_option("--global-batch-size", c.global_batch_size,
                 "rows per optimizer step (multiple of --batch-size; 0 = --batch-size)")->capture_default_str();
  app.add_option("--max-steps", c.max_steps, "optimizer steps")->capture_default_str();
  app.add_option("--lr", c.lr, "peak learning rate")->capture_default_str();
  app.add_option("--min-lr", c.min_lr, "final learning rate of the decay")->capture_default_str();
  app.add_option("--warmup-steps", c.warmup_steps, "linear warm-up steps")->capture_default_str();
  app.add_option("--lr-schedule", c.lr_schedule, "cosine | linear | constant")
      ->check(CLI::IsMember({"cosine", "linear", "constant"}))->capture_default_str();
  app.add_option("--weight-decay", c.weight_decay, "AdamW decoupled weight decay (matrices only)")->capture_default_str();
  app.add_option("--grad-clip", c.grad_clip, "global gradient-norm clip (<= 0: off)")->capture_default_str();
  app.add_option("--seed", c.seed, "seed of initialization and batch sampling")->capture_default_str();
  app.add_option("--data", c.data, "text file/folder or llm.c .bin shard(s); default: embedded synthetic corpus");
  app.add_option("--init-from", c.init_from, "llm.c GPT-2 checkpoint (fp32) to start from");
  app.add_option("--output-dir", c.output_dir, "where train.log and metrics.jsonl go")->capture_default_str();
  app.add_option("--log-interval", c.log_interval, "steps between log lines")->capture_default_str();
  app.add_option("--eval-interval", c.eval_interval, "steps between validations (0: only at the end)")->capture_default_str();
  app.add_option("--eval-batches", c.eval_batches, "validation micro-batches per evaluation")->capture_default_str();
  app.add_flag("--recompute", c.recompute, "recompute activations per block in backward");
  app.add_option("--export-safetensors", c.export_safetensors, "write the final weights (HF GPT-2 names) here");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    c.validate();  // before any allocation
    pp3d::Trainer trainer(c);
    trainer.run();
  } catch (const pp3d::Error& e) {
    std::fprintf(stderr, "pp3d-train: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pp3d-train: unexpected error: %s\n", e.what());
    return 3;
  }
  return 0;
}
