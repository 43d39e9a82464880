// Trainer::run: the loop with train.log, metrics.jsonl (global rank 0),
// evaluation, the pipeline trace and the export.
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "pp3d/core/error.h"
#include "pp3d/core/log.h"
#include "pp3d/parallel/pipeline.h"
#include "pp3d/parallel/process_grid.h"
#include "pp3d/train/checkpoint.h"
#include "pp3d/train/interop.h"
#include "pp3d/train/trainer.h"
#include "pp3d/train/trainer_memory.h"
#include "train/trainer_flops.h"
#include "train/trainer_progress.h"
#include "train/trainer_signals.h"

namespace pp3d {

namespace {

// The largest pending stop signal over the world (0: none): every rank gets the
// same answer, so all stop after the same step even when only some were signalled.
int agreed_stop_signal(Communicator& world) {
  const int local = detail::StopSignalGuard::pending();
  if (world.size() == 1) return local;
  Tensor flag = Tensor::from_vector_i32({1}, {local}, MemCategory::Comm);
  world.all_reduce(flag, ReduceOp::Max);
  return flag.data<int32_t>()[0];
}

}  // namespace

void Trainer::log_header() {
  auto log = logger();
  const GptConfig& mc = model_config();
  log->info("model {} ({:.3f} M parameters, recompute {}) on {}", mc.str(),
            static_cast<double>(mc.num_parameters()) * 1e-6, cfg_.recompute ? "on" : "off",
            backend_->device().str());
  if (mc.is_llama())
    log->info("llama: {} layers, hidden {}, {} heads / {} kv heads, ffn {}, vocab {} (padded {}), rope theta {}, norm "
              "eps {}, {} embeddings", mc.num_layers, mc.hidden_size, mc.num_heads, mc.kv_heads(), mc.mlp_hidden(),
              mc.vocab_size, mc.padded_vocab(), mc.rope_theta, mc.ln_eps, mc.tied_embeddings ? "tied" : "untied");
  log->info("layout: {}", layout_.str());
  if (layout_.tp > 1 || layout_.pp > 1 || layout_.dp > 1)
    log->info("parallel: tp {}{}, pp {} ({} schedule, {} virtual stage(s), split {}), dp {} with ZeRO stage {} "
              "(buckets {} MB{})", layout_.tp, cfg_.sequence_parallel ? " + sequence parallel" : "", layout_.pp,
              cfg_.schedule, cfg_.virtual_stages, stage_->split().str(), layout_.dp, cfg_.zero_stage,
              cfg_.bucket_size_mb,
              cfg_.zero_stage == 3 ? fmt::format(", prefetch {} layer(s)", cfg_.prefetch_layers) : std::string());
  if (!cfg_.init_from.empty())
    log->info("init from '{}' ({})", cfg_.init_from, mc.is_llama() ? "Hugging Face Llama" : "llm.c checkpoint");
  log->info("data: {}", dataset_->description);
  log->info("sampler: {}{}", sampler_name(loader_->sampler()), loader_->sampler() == Sampler::Epoch ?
            fmt::format(" ({} windows per epoch)", fmt::join(loader_->epoch_windows(), " / ")) : std::string());
  log->info("unigram entropy of the training split: {:.4f} bits/token = {:.4f} nats (a model that learned "
            "nothing beyond token frequencies has this loss)", unigram_bits_, unigram_bits_ * std::log(2.0));
  log->info("batch: {} rows x {} tokens = {} x {} micro-batch(es) of {}; {} steps, lr {} -> {} ({} schedule, {} "
            "warm-up), weight decay {}, grad clip {}, seed {}", layout_.global_batch, cfg_.seq_len, layout_.dp,
            layout_.micro_batches, layout_.micro_batch, cfg_.max_steps, cfg_.lr, cfg_.min_lr, cfg_.lr_schedule,
            cfg_.warmup_steps, cfg_.weight_decay, cfg_.grad_clip, cfg_.seed);
  const char* half = cfg_.bf16 ? "bf16" : "fp16";
  // With 16-bit compute the per-op activations are 16-bit whatever --activation-dtype says; it then
  // decides the residual stream (and the hidden state between blocks / stages).
  const std::string grads = fmt::format("{} gradients, {} {}, {} GEMM operands{}",
                                        cfg_.grad_dtype == "param" ? half : "f32",
                                        cfg_.activation_dtype == "param" ? half : "f32",
                                        cfg_.compute16() ? "residual stream" : "activations",
                                        cfg_.compute16() ? half : "f32",
                                        cfg_.compute16() ? " and op inputs/outputs" : "");
  if (cfg_.bf16) log->info("mixed precision: bf16 parameters, {}, f32 master weights / Adam state", grads);
  if (cfg_.fp16)
    log->info("mixed precision: fp16 parameters, {}, f32 master weights / Adam state; dynamic loss scale "
              "{} (window {}, hysteresis {}, min {})", grads, mp_.loss_scale(), cfg_.loss_scaler.scale_window,
              cfg_.loss_scaler.hysteresis, cfg_.loss_scaler.min_scale);
  log_zero_memory_report(*zero_, backend_->device().type);  // measured vs ZeRO formula (trainer_memory.cpp)
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
  // SIGINT / SIGTERM: stop after the current step with a checkpoint (handlers restored on exit).
  const detail::StopSignalGuard signals;
  stop_signal_ = 0;
  detail::ProgressBar bar(rank0 && cfg_.progress && !cfg_.quiet);
  // MFU against the peak of the precision the GEMMs actually run in: 16-bit tensor cores with 16-bit
  // compute (--bf16 / --fp16 by default); --compute-dtype f32 multiplies f32 activations by widened
  // weights (fp32 peak).
  const bool gemm16 = cfg_.compute16();
  const std::string gemm_dtype = gemm16 ? (cfg_.bf16 ? "bf16" : "fp16") : "f32";
  const std::optional<double> peak_tflops = detail::peak_tflops_for(backend_->device(), gemm16, cfg_.peak_tflops);
  // The attention implementation of this run (16-bit q/k/v with 16-bit compute).
  const std::string attention_impl =
      backend_->attention_impl(gemm16 ? (cfg_.bf16 ? DType::BF16 : DType::F16) : DType::F32);
  if (rank0 && !cfg_.quiet) logger()->info("attention: {}", attention_impl);
  const auto t_run = std::chrono::steady_clock::now();
  while (step_ < cfg_.max_steps) {
    StepMetrics m = train_step();
    if (talk) for (const auto& e : loader_->epoch_events(m.step)) log->info("data: {}", e);
    tokens_per_s_sum += m.tokens_per_s;
    const bool last_step = step_ == cfg_.max_steps;
    if (last_step || (cfg_.eval_interval > 0 && step_ % cfg_.eval_interval == 0)) {
      m.val_loss = evaluate();
      if (loader_->num_sources() > 1)
        for (int src = 0; src < loader_->num_sources(); ++src) m.val_loss_by_source.push_back(evaluate(src));
    }
    // Non-finite losses stop in train_step before the update; an fp16 overflow skip is the loss scaler's business.
    PP3D_CHECK(m.skipped || std::isfinite(m.loss),
               "training diverged: loss {} at step {} (lower --lr or raise --warmup-steps)", m.loss, m.step + 1);
    const double tflops = m.model_flops / m.step_seconds / static_cast<double>(layout_.world) * 1e-12;
    if (rank0) {
      nlohmann::ordered_json j = {{"step", m.step + 1},  // 1-based: updates done
                                  {"loss", m.loss},
                                  {"lr", m.lr},
                                  {"grad_norm", m.grad_norm},
                                  {"tokens_per_s", m.tokens_per_s},
                                  {"step_ms", m.step_seconds * 1e3}};
      if (m.val_loss) j["val_loss"] = *m.val_loss;
      if (!m.val_loss_by_source.empty()) {
        nlohmann::ordered_json by_source = nlohmann::ordered_json::object();
        for (std::size_t src = 0; src < m.val_loss_by_source.size(); ++src)
          by_source[loader_->source_name(static_cast<int>(src))] = m.val_loss_by_source[src];
        j["val_loss_by_source"] = by_source;
      }
      if (cfg_.fp16 || cfg_.bf16) {
        j["loss_scale"] = m.loss_scale;
        j["skipped"] = m.skipped;
      }
      j["dp"] = layout_.dp;
      j["tp"] = layout_.tp;
      j["pp"] = layout_.pp;
      j["model_flops"] = m.model_flops;
      j["gemm_dtype"] = gemm_dtype;  // operand precision of the Linear GEMMs (the peak mfu is measured against)
      j["attention_impl"] = attention_impl;  // Backend::attention_impl (cudnn_sdpa, flash_kernel, cpu, ...)
      j["tflops"] = tflops;  // achieved per rank
      if (peak_tflops) j["mfu"] = tflops / *peak_tflops;
      j["compute_ms"] = m.compute_ms;
      j["bubble_ms"] = m.bubble_ms;
      j["grad_sync_ms"] = m.grad_sync_ms;
      j["optimizer_ms"] = m.optimizer_ms;
      j["data_wait_ms"] = m.data_wait_ms;
      if (m.idle_fraction) j["bubble_idle_fraction"] = *m.idle_fraction;
      if (m.theoretical_bubble) j["theoretical_bubble"] = *m.theoretical_bubble;
      nlohmann::ordered_json mem, peak;
      for (const auto& [k, v] : m.mem_current) mem[k] = v;
      for (const auto& [k, v] : m.mem_peak) peak[k] = v;
      j["mem_bytes"] = mem;
      j["mem_peak_bytes"] = peak;
      nlohmann::ordered_json formula;
      for (const auto& [k, v] : m.mem_formula) formula[k] = v;
      if (!m.mem_formula.empty()) j["mem_formula_bytes"] = formula;
      if (m.grad_comm_hidden_fraction) {
        j["grad_comm_ms"] = m.grad_comm_ms.value_or(0.0);
        j["grad_comm_exposed_ms"] = m.grad_comm_exposed_ms.value_or(0.0);
        j["grad_comm_hidden_fraction"] = *m.grad_comm_hidden_fraction;
      }
      metrics << j.dump() << '\n';
      metrics.flush();
    }
    bar.clear();
    if (talk && m.skipped)
      log->warn("step {:>5}/{} | fp16 overflow: step skipped, loss scale -> {}", m.step + 1, cfg_.max_steps,
                mp_.loss_scale());
    if (talk && (m.step == 0 || (m.step + 1) % cfg_.log_interval == 0 || m.val_loss || last_step)) {
      log->info("step {:>5}/{} | loss {:.4f} | lr {:.3e} | grad norm {:.3f} | {:.1f} ms | {:.0f} tok/s{}{}",
                m.step + 1, cfg_.max_steps, m.loss, m.lr, m.grad_norm, m.step_seconds * 1e3, m.tokens_per_s,
                m.idle_fraction ? fmt::format(" | bubble {:.2f} (theory {:.2f})", *m.idle_fraction,
                                              m.theoretical_bubble.value_or(0.0))
                                : std::string(),
                m.val_loss ? fmt::format(" | val loss {:.4f}", *m.val_loss) : std::string());
      for (std::size_t src = 0; src < m.val_loss_by_source.size(); ++src)
        log->info("             val loss {:.4f} on '{}' alone", m.val_loss_by_source[src],
                  loader_->source_name(static_cast<int>(src)));
    }
    last = m;
    const bool saved_this_step = cfg_.save_interval > 0 && (step_ % cfg_.save_interval == 0 || last_step);
    if (saved_this_step) save();
    if (const int sig = agreed_stop_signal(*world_); sig != 0) {
      stop_signal_ = sig;
      if (!saved_this_step) save();
      if (talk)
        log->warn("received {}: checkpoint of step {} saved to '{}'; continue with --resume-from latest",
                  detail::stop_signal_name(sig), step_, checkpoint_dir_name(cfg_.output_dir, step_));
      return last;
    }
    bar.draw({step_, cfg_.max_steps, first_step, m.loss, m.tokens_per_s,
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t_run).count()});
  }
  bar.clear();
  if (talk) {
    log->info("done: final train loss {:.4f}, val loss {:.4f} (unigram entropy {:.4f} nats), mean {:.0f} tok/s",
              last.loss, last.val_loss.value_or(NAN), unigram_bits_ * std::log(2.0),
              tokens_per_s_sum / static_cast<double>(std::max<int64_t>(1, cfg_.max_steps - first_step)));
    if (!cfg_.trace.empty() && rank0) log->info("pipeline trace of step {} written to '{}'",
                                                std::min(cfg_.trace_step, cfg_.max_steps - 1) + 1, cfg_.trace);
  }
  if (!cfg_.export_safetensors.empty()) export_weights(cfg_.export_safetensors);
  return last;
}

}  // namespace pp3d
