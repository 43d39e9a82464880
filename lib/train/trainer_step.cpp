// Trainer: one training step (pipeline schedule + ZeRO gradient sync +
// clipping + AdamW) and the forward-only evaluation through the pipeline.
#include <chrono>
#include <cmath>
#include <cstdlib>

#include "pp3d/comm/collectives_util.h"
#include "pp3d/core/allocator.h"
#include "pp3d/core/error.h"
#include "pp3d/parallel/pipeline.h"
#include "pp3d/parallel/process_grid.h"
#include "pp3d/parallel/zero_optimizer.h"
#include "pp3d/train/checkpoint.h"
#include "pp3d/train/trainer.h"
#include "pp3d/train/trainer_memory.h"
#include "train/trainer_flops.h"

namespace pp3d {

namespace {

Tensor on_device(const Tensor& t, Device d) { return d.is_cpu() ? t : t.to(d, MemCategory::Activations); }

void memory_snapshot(StepMetrics& r, DeviceType dev) {
  auto& alloc = Allocator::instance();
  for (int c = 0; c < kNumMemCategories; ++c) {
    const auto cat = static_cast<MemCategory>(c);
    const MemStats s = alloc.stats(cat, dev);
    r.mem_current.emplace_back(std::string(mem_category_name(cat)), s.current);
    r.mem_peak.emplace_back(std::string(mem_category_name(cat)), s.peak);
  }
}

// PP3D_TEST_NAN_AT_STEP=N (testing only): step N's (1-based) loss weight is NaN.
int64_t test_nan_step() {
  const char* v = std::getenv("PP3D_TEST_NAN_AT_STEP");
  return v != nullptr ? std::atoll(v) : 0;
}

}  // namespace

std::string Trainer::last_checkpoint_description() const {
  for (const std::string& spec : {std::string("latest"), cfg_.resume_from}) {
    if (spec.empty()) continue;
    try {
      return fmt::format("'{}'", resolve_checkpoint(spec, cfg_.output_dir));
    } catch (const Error&) {
    }
  }
  return "none (set --save-interval)";
}

std::vector<Batch> Trainer::step_batches(int64_t step) const {
  const int64_t mb = layout_.micro_batch, row0 = grid_->dp_rank() * (layout_.global_batch / layout_.dp);
  std::vector<Batch> out;
  for (int64_t m = 0; m < layout_.micro_batches; ++m) out.push_back(loader_->get_rows(step, row0 + m * mb, row0 + (m + 1) * mb));
  return out;
}

StepMetrics Trainer::train_step() {
  const auto t0 = std::chrono::steady_clock::now();
  Allocator::instance().reset_peak();
  const Device dev = backend_->device();
  // Each micro-batch adds loss_weight * (sum of its token losses): summed over
  // micro-batches and DP ranks this is the mean over the global batch, and so
  // are the (DP-summed) gradients — in every layout.
  float loss_weight = 1.0f / static_cast<float>(layout_.global_batch * cfg_.seq_len);
  if (test_nan_step() == step_ + 1) loss_weight = NAN;  // testing only (docs/USAGE_GUIDE.md)
  // The batches of this step: prefetched during the previous step (a pure
  // function of (seed, step), so prefetching changes no result), else read now.
  const auto t_data = std::chrono::steady_clock::now();
  std::vector<Batch> batches =
      prefetch_step_ == step_ && prefetch_.valid() ? prefetch_.get() : step_batches(step_);
  const double data_wait_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t_data).count();
  if (step_ + 1 < cfg_.max_steps) {
    prefetch_step_ = step_ + 1;
    prefetch_ = std::async(std::launch::async, [this, s = step_ + 1] { return step_batches(s); });
  }
  std::vector<MicroBatch> mbs(static_cast<std::size_t>(layout_.micro_batches));
  for (int64_t m = 0; m < layout_.micro_batches; ++m) {
    const Batch& b = batches[static_cast<std::size_t>(m)];
    if (stage_->has_embedding()) mbs[static_cast<std::size_t>(m)].ids = on_device(b.inputs, dev);
    if (stage_->has_head()) mbs[static_cast<std::size_t>(m)].targets = on_device(b.targets, dev);
  }
  zero_->zero_grad();
  // --fp16: the loss weight carries the loss scale (gradients x scale); the
  // cache loss is divided by it again (exact: a power of two). 1 otherwise.
  const float scale = mp_.loss_scale();
  // Time split (StepMetrics::compute_ms ...): the synchronize calls make the
  // device-side work land in the phase that launched it (no-ops on CPU).
  const auto t_pipe = std::chrono::steady_clock::now();
  StepResult res = stage_->run_step(mbs, loss_weight * scale);  // + the tied-embedding gradient all-reduce
  backend_->synchronize();
  const auto t_sync = std::chrono::steady_clock::now();
  zero_->finish_gradient_sync();
  backend_->synchronize();
  const auto t_opt = std::chrono::steady_clock::now();
  StepMetrics r;
  r.step = step_;
  r.loss = all_reduce_sum_double(*grid_->dp_group(), res.loss) / scale;  // res.loss is already on every stage
  r.lr = schedule_.lr(step_);
  // The loss is global (the same on every rank), so every rank stops here
  // together, before the update: the weights (and the last checkpoint) stay
  // clean. --fp16: a non-finite loss overflows the gradients and the step is
  // skipped by the loss scaler instead.
  if (!mp_.scaler() && !std::isfinite(r.loss))
    PP3D_FAIL("loss is {} at step {} (global batch of {} rows x {} tokens, the data of step {} with --seed {}); the "
              "weights were not updated; last checkpoint: {}; lower --lr, raise --warmup-steps, keep --grad-clip on "
              "(e.g. 1.0), or try --bf16", std::isnan(r.loss) ? "NaN" : (r.loss > 0 ? "+Inf" : "-Inf"), step_ + 1,
              layout_.global_batch, cfg_.seq_len, step_ + 1, cfg_.seed, last_checkpoint_description());
  // Overflow check over the world (fp16), unscaled global-norm clipping and AdamW,
  // or a skip on every rank; without a scaler exactly clip_grad_norm + step.
  const MixedPrecisionStep ms = mp_.step(*zero_, r.lr, cfg_.grad_clip, world_.get(), mp_reducer_);
  r.grad_norm = ms.grad_norm;
  r.loss_scale = ms.loss_scale;
  r.skipped = ms.skipped;
  backend_->synchronize();
  const auto t_end = std::chrono::steady_clock::now();
  r.step_seconds = std::chrono::duration<double>(t_end - t0).count();
  const auto ms_between = [](auto a, auto b) { return std::chrono::duration<double, std::milli>(b - a).count(); };
  if (layout_.pp > 1) {  // the schedule's own accounting: forward/backward durations vs the rest (p2p waits)
    r.compute_ms = res.compute_us * 1e-3;
    r.bubble_ms = std::max(0.0, res.step_us - res.compute_us) * 1e-3;
  } else {
    r.compute_ms = ms_between(t_pipe, t_sync);
  }
  r.grad_sync_ms = ms_between(t_sync, t_opt);
  r.optimizer_ms = ms_between(t_opt, t_end);
  r.data_wait_ms = data_wait_ms;
  r.model_flops = detail::model_flops_per_token(model_config(), cfg_.seq_len) *
                  static_cast<double>(layout_.global_batch * cfg_.seq_len);
  r.tokens_per_s = static_cast<double>(layout_.global_batch * cfg_.seq_len) / r.step_seconds;
  if (layout_.pp > 1) {
    r.idle_fraction = res.idle_fraction;
    r.theoretical_bubble = res.theoretical_bubble;
  }
  memory_snapshot(r, dev.type);
  fill_zero_step_metrics(r, *zero_);  // ZeRO formula bytes + DP gradient-communication overlap
  if (!cfg_.trace.empty() && step_ == std::min(cfg_.trace_step, cfg_.max_steps - 1) && grid_->tp_rank() == 0 &&
      grid_->dp_rank() == 0)
    write_merged_trace(*grid_->pp_group(), cfg_.trace, res);  // one pipeline's ranks; written on global rank 0
  ++step_;
  return r;
}

// Forward of validation batch `index` through the virtual stages in order
// (blocking p2p between consecutive stages); the loss is that of the head stage,
// 0 elsewhere. Collective over the pp group (and each stage's TP group).
double Trainer::eval_batch(int64_t index, int source) {
  const Device dev = backend_->device();
  // --batch-size rows whatever the layout (also with --micro-batches), so val_loss is layout independent.
  const int64_t rows = cfg_.micro_batch_size, T = cfg_.seq_len;
  const Batch b = source < 0 ? loader_->get_val_rows(index, 0, rows)
                             : loader_->get_source_val_rows(source, index, 0, rows);
  const int pp = layout_.pp, S = pp * cfg_.virtual_stages, rank = grid_->pp_rank();
  Communicator& pg = *grid_->pp_group();
  Tensor hidden;
  double loss = 0.0;
  for (int s = 0; s < S; ++s) {
    if (s % pp != rank) continue;
    Module& g = stage_->module(s / pp);
    Tensor in;
    if (s == 0) {
      in = on_device(b.inputs, dev);
    } else if (pp > 1) {
      in = Tensor::empty(g.input_shape(rows, T), g.activation_dtype(), dev, MemCategory::Activations);
      pg.recv(in, (s - 1) % pp, s);
    } else {
      in = hidden;
    }
    ActivationCache cache;
    const Tensor target = s == S - 1 ? on_device(b.targets, dev) : Tensor();
    Tensor out = module_forward(g, in, target, 1.0f / static_cast<float>(rows * T), cache, ForwardMode::Eval);
    if (s == S - 1) {
      loss = static_cast<float>(cache.loss());  // as Gpt::evaluate (the serial trainer's value)
    } else if (pp > 1) {
      pg.send(out, (s + 1) % pp, s + 1);
    } else {
      hidden = out;
    }
  }
  return loss;
}

double Trainer::evaluate(int source) {
  const int dp = layout_.dp, dp_rank = grid_->dp_rank();
  const int64_t n = cfg_.eval_batches;
  std::vector<double> losses(static_cast<std::size_t>(n), 0.0);
  // Batch i on DP rank i % dp. ZeRO-3 gathers parameters collectively over DP
  // in every forward, so a rank without a batch in a round runs a dummy one.
  for (int64_t round = 0; round * dp < n; ++round) {
    const int64_t i = round * dp + dp_rank;
    if (i < n) {
      losses[static_cast<std::size_t>(i)] = eval_batch(i, source);
    } else if (cfg_.zero_stage == 3) {
      (void)eval_batch(0, source);
    }
  }
  // Only the head stage holds a loss (0 elsewhere): exact sums over pp and dp,
  // then the serial trainer's summation order.
  losses = all_reduce_sum_doubles(*grid_->pp_group(), losses);
  losses = all_reduce_sum_doubles(*grid_->dp_group(), losses);
  double sum = 0.0;
  for (double l : losses) sum += l;
  return sum / static_cast<double>(n);
}

}  // namespace pp3d
