// Trainer: --save-interval / --resume-from through the reshardable checkpoints
// of pp3d/train/checkpoint.h (docs/CHECKPOINTS.md): parameters + ZeRO-owned
// AdamW state, loadable into any layout; the data of step s is a function of
// (seed, s), so restoring the step restores the data position.
#include <filesystem>

#include <nlohmann/json.hpp>

#include "pp3d/core/error.h"
#include "pp3d/core/log.h"
#include "pp3d/core/user_error.h"
#include "pp3d/parallel/process_grid.h"
#include "pp3d/parallel/zero_optimizer.h"
#include "pp3d/train/checkpoint.h"
#include "pp3d/train/trainer.h"

namespace pp3d {

void Trainer::save() {
  CheckpointInfo info;
  info.step = step_;
  info.seed = cfg_.seed;
  info.optimizer_step = zero_->step_count();
  info.model = model_config();
  if (mp_.scaler()) info.loss_scaler = mp_.scaler()->state();
  info.layout = {layout_.tp, layout_.pp, layout_.dp, cfg_.zero_stage, cfg_.virtual_stages, cfg_.pipeline_split};
  info.trainer_config_json = nlohmann::json{{"lr", cfg_.lr}, {"min_lr", cfg_.min_lr}, {"max_steps", cfg_.max_steps},
                                            {"warmup_steps", cfg_.warmup_steps}, {"lr_schedule", cfg_.lr_schedule},
                                            {"global_batch", layout_.global_batch}, {"seq_len", cfg_.seq_len},
                                            {"data", cfg_.data}, {"bf16", cfg_.bf16}, {"fp16", cfg_.fp16},
                                            {"tokenizer", tokenizer_kind()}}.dump();
  CheckpointSaveOptions so;
  so.keep_last = cfg_.keep_last;
  const std::string dir = save_checkpoint(cfg_.output_dir, info, checkpoint_tensors(*zero_), *world_, so);
  // The tokenizer travels with the checkpoint, so pp3d-generate encodes and decodes text like the data was made.
  if (world_->rank() == 0 && tokenizer_kind() == "tokenizer.json") {
    std::error_code ec;
    std::filesystem::copy_file(dataset_->tokenizer, std::filesystem::path(dir) / "tokenizer.json",
                               std::filesystem::copy_options::overwrite_existing, ec);
    if (ec) logger()->warn("could not copy '{}' into '{}': {}", dataset_->tokenizer, dir, ec.message());
  }
  if (!cfg_.quiet && world_->rank() == 0) logger()->info("saved checkpoint '{}'", dir);
}

// "bytes", "tokenizer.json" (copied into each checkpoint) or "unknown": how the data's ids were made.
std::string Trainer::tokenizer_kind() const {
  if (dataset_->tokenizer.empty()) return "unknown";
  return dataset_->tokenizer == "bytes" ? "bytes" : "tokenizer.json";
}

void Trainer::resume() {
  const std::string dir = resolve_checkpoint(cfg_.resume_from, cfg_.output_dir);
  // A model of another family has other tensors: say so before the loader reports a missing name.
  const GptConfig saved = read_checkpoint_info(dir).model;
  auto arch_name = [](const GptConfig& m) { return m.is_llama() ? "llama" : "gpt2"; };
  PP3D_REQUIRE(saved.arch == model_config_.arch, "--resume-from '{}' holds a {} model ({}), but this run builds --arch "
               "{} ({}): resume with --arch {}", dir, arch_name(saved), saved.str(), arch_name(model_config_),
               model_config_.str(), arch_name(saved));
  const CheckpointInfo info = load_checkpoint(dir, checkpoint_tensors(*zero_));
  PP3D_CHECK(info.step < cfg_.max_steps, "--resume-from '{}' is at step {}, not before --max-steps {}", dir,
             info.step, cfg_.max_steps);
  zero_->set_step_count(info.optimizer_step);
  // --fp16: the loss scaler continues where it was (a checkpoint without one, e.g. from an
  // f32 / bf16 run, starts the scaler afresh).
  if (mp_.scaler() && info.loss_scaler) mp_.scaler()->set_state(*info.loss_scaler);
  step_ = info.step;
  if (!cfg_.quiet && world_->rank() == 0) {
    logger()->info("resumed from '{}' at step {} (saved with tp {} pp {} dp {} ZeRO {})", dir, info.step,
                   info.layout.tp, info.layout.pp, info.layout.dp, info.layout.zero_stage);
    if (info.seed != cfg_.seed)
      logger()->warn("--seed {} differs from the checkpoint's {}: the data order changes", cfg_.seed, info.seed);
  }
}

}  // namespace pp3d
