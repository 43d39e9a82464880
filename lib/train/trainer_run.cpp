// Trainer::run: the loop with train.log, metrics.jsonl (global rank 0),
// evaluation, the pipeline trace and the export.
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "pp3d/core/error.h"
#include "pp3d/core/log.h"
#include "pp3d/parallel/pipeline.h"
#include "pp3d/parallel/process_grid.h"
#include "pp3d/train/interop.h"
#include "pp3d/train/trainer.h"

namespace pp3d {

void Trainer::log_header() {
  auto log = logger();
  const GptConfig& mc = model_config();
  log->info("model {} ({:.3f} M parameters, recompute {}) on {}", mc.str(),
            static_cast<double>(mc.num_parameters()) * 1e-6, cfg_.recompute ? "on" : "off",
            backend_->device().str());
  log->info("layout: {}", layout_.str());
  if (layout_.tp > 1 || layout_.pp > 1 || layout_.dp > 1)
    log->info("parallel: tp {}{}, pp {} ({} schedule, {} virtual stage(s), split {}), dp {} with ZeRO stage {} "
              "(buckets {} MB{})", layout_.tp, cfg_.sequence_parallel ? " + sequence parallel" : "", layout_.pp,
              cfg_.schedule, cfg_.virtual_stages, stage_->split().str(), layout_.dp, cfg_.zero_stage,
              cfg_.bucket_size_mb,
              cfg_.zero_stage == 3 ? fmt::format(", prefetch {} layer(s)", cfg_.prefetch_layers) : std::string());
  if (!cfg_.init_from.empty()) log->info("initialised from llm.c checkpoint '{}'", cfg_.init_from);
  log->info("data: {}", dataset_->description);
  log->info("unigram entropy of the training split: {:.4f} bits/token = {:.4f} nats (a model that learned "
            "nothing beyond token frequencies has this loss)", unigram_bits_, unigram_bits_ * std::log(2.0));
  log->info("batch: {} rows x {} tokens = {} x {} micro-batch(es) of {}; {} steps, lr {} -> {} ({} schedule, {} "
            "warm-up), weight decay {}, grad clip {}, seed {}", layout_.global_batch, cfg_.seq_len, layout_.dp,
            layout_.micro_batches, layout_.micro_batch, cfg_.max_steps, cfg_.lr, cfg_.min_lr, cfg_.lr_schedule,
            cfg_.warmup_steps, cfg_.weight_decay, cfg_.grad_clip, cfg_.seed);
  if (cfg_.bf16) log->info("mixed precision: bf16 parameters, f32 gradients / master weights / Adam state");
  if (cfg_.fp16)
    log->info("mixed precision: fp16 parameters, f32 gradients / master weights / Adam state; dynamic loss scale "
              "{} (window {}, hysteresis {}, min {})", mp_.loss_scale(), cfg_.loss_scaler.scale_window,
              cfg_.loss_scaler.hysteresis, cfg_.loss_scaler.min_scale);
}

StepMetrics Trainer::run() {
  namespace fs = std::filesystem;
  const bool rank0 = world_->rank() == 0;
  const bool talk = !cfg_.quiet && (rank0 || cfg_.log_all_ranks);
  auto log = logger();
  if (cfg_.log_all_ranks && !cfg_.quiet) log->set_level(spdlog::level::info);
  std::ofstream metrics;
  if (rank0) {
    fs::create_directories(cfg_.output_dir);
    const fs::path metrics_path = fs::path(cfg_.output_dir) / "metrics.jsonl";
    metrics.open(metrics_path, std::ios::trunc);
    PP3D_CHECK(metrics.good(), "cannot write '{}'", metrics_path.string());
    if (!cfg_.quiet) add_log_file((fs::path(cfg_.output_dir) / "train.log").string());
  }
  if (talk) log_header();
  StepMetrics last;
  double tokens_per_s_sum = 0.0;
  const int64_t first_step = step_;  // > 0 after --resume-from
  while (step_ < cfg_.max_steps) {
    StepMetrics m = train_step();
    tokens_per_s_sum += m.tokens_per_s;
    const bool last_step = step_ == cfg_.max_steps;
    if (last_step || (cfg_.eval_interval > 0 && step_ % cfg_.eval_interval == 0)) m.val_loss = evaluate();
    PP3D_CHECK(std::isfinite(m.loss), "training diverged: loss {} at step {} (lower --lr or raise --warmup-steps)",
               m.loss, m.step);
    if (rank0) {
      nlohmann::ordered_json j = {{"step", m.step + 1},  // 1-based: updates done
                                  {"loss", m.loss},
                                  {"lr", m.lr},
                                  {"grad_norm", m.grad_norm},
                                  {"tokens_per_s", m.tokens_per_s},
                                  {"step_ms", m.step_seconds * 1e3}};
      if (m.val_loss) j["val_loss"] = *m.val_loss;
      if (cfg_.fp16 || cfg_.bf16) {
        j["loss_scale"] = m.loss_scale;
        j["skipped"] = m.skipped;
      }
      j["dp"] = layout_.dp;
      j["tp"] = layout_.tp;
      j["pp"] = layout_.pp;
      if (m.idle_fraction) j["bubble_idle_fraction"] = *m.idle_fraction;
      if (m.theoretical_bubble) j["theoretical_bubble"] = *m.theoretical_bubble;
      nlohmann::ordered_json mem, peak;
      for (const auto& [k, v] : m.mem_current) mem[k] = v;
      for (const auto& [k, v] : m.mem_peak) peak[k] = v;
      j["mem_bytes"] = mem;
      j["mem_peak_bytes"] = peak;
      metrics << j.dump() << '\n';
      metrics.flush();
    }
    if (talk && m.skipped)
      log->warn("step {:>5}/{} | fp16 overflow: step skipped, loss scale -> {}", m.step + 1, cfg_.max_steps,
                mp_.loss_scale());
    if (talk && (m.step % cfg_.log_interval == 0 || m.val_loss || last_step)) {
      log->info("step {:>5}/{} | loss {:.4f} | lr {:.3e} | grad norm {:.3f} | {:.1f} ms | {:.0f} tok/s{}{}",
                m.step + 1, cfg_.max_steps, m.loss, m.lr, m.grad_norm, m.step_seconds * 1e3, m.tokens_per_s,
                m.idle_fraction ? fmt::format(" | bubble {:.2f} (theory {:.2f})", *m.idle_fraction,
                                              m.theoretical_bubble.value_or(0.0))
                                : std::string(),
                m.val_loss ? fmt::format(" | val loss {:.4f}", *m.val_loss) : std::string());
    }
    last = m;
    if (cfg_.save_interval > 0 && (step_ % cfg_.save_interval == 0 || last_step)) save();
  }
  if (talk) {
    log->info("done: final train loss {:.4f}, val loss {:.4f} (unigram entropy {:.4f} nats), mean {:.0f} tok/s",
              last.loss, last.val_loss.value_or(NAN), unigram_bits_ * std::log(2.0),
              tokens_per_s_sum / static_cast<double>(std::max<int64_t>(1, cfg_.max_steps - first_step)));
    if (!cfg_.trace.empty() && rank0) log->info("pipeline trace of step {} written to '{}'",
                                                std::min(cfg_.trace_step, cfg_.max_steps - 1) + 1, cfg_.trace);
  }
  if (!cfg_.export_safetensors.empty()) {
    std::vector<Parameter> full = gather_full_parameters();
    if (rank0) {
      std::vector<Parameter*> ptrs;
      for (Parameter& p : full) ptrs.push_back(&p);
      export_safetensors(cfg_.export_safetensors, model_config(), ptrs);
      if (!cfg_.quiet) log->info("exported safetensors to '{}'", cfg_.export_safetensors);
    }
  }
  return last;
}

}  // namespace pp3d
