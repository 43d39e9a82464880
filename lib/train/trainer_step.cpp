// Trainer: one training step (pipeline schedule + ZeRO gradient sync +
// clipping + AdamW) and the forward-only evaluation through the pipeline.
#include <chrono>
#include <cmath>

#include "pp3d/comm/collectives_util.h"
#include "pp3d/core/allocator.h"
#include "pp3d/core/error.h"
#include "pp3d/parallel/pipeline.h"
#include "pp3d/parallel/process_grid.h"
#include "pp3d/parallel/zero_optimizer.h"
#include "pp3d/train/trainer.h"

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

}  // namespace

StepMetrics Trainer::train_step() {
  const auto t0 = std::chrono::steady_clock::now();
  Allocator::instance().reset_peak();
  const Device dev = backend_->device();
  const int64_t mb = layout_.micro_batch;
  // Each micro-batch adds loss_weight * (sum of its token losses): summed over
  // micro-batches and DP ranks this is the mean over the global batch, and so
  // are the (DP-summed) gradients — in every layout.
  const float loss_weight = 1.0f / static_cast<float>(layout_.global_batch * cfg_.seq_len);
  const int64_t row0 = grid_->dp_rank() * (layout_.global_batch / layout_.dp);
  std::vector<MicroBatch> mbs(static_cast<std::size_t>(layout_.micro_batches));
  for (int64_t m = 0; m < layout_.micro_batches; ++m) {
    const Batch b = loader_->get_rows(step_, row0 + m * mb, row0 + (m + 1) * mb);
    if (stage_->has_embedding()) mbs[static_cast<std::size_t>(m)].ids = on_device(b.inputs, dev);
    if (stage_->has_head()) mbs[static_cast<std::size_t>(m)].targets = on_device(b.targets, dev);
  }
  zero_->zero_grad();
  // --fp16: the loss weight carries the loss scale (gradients x scale); the
  // cache loss is divided by it again (exact: a power of two). 1 otherwise.
  const float scale = mp_.loss_scale();
  StepResult res = stage_->run_step(mbs, loss_weight * scale);  // + the tied-embedding gradient all-reduce
  zero_->finish_gradient_sync();
  StepMetrics r;
  r.step = step_;
  r.loss = all_reduce_sum_double(*grid_->dp_group(), res.loss) / scale;  // res.loss is already on every stage
  r.lr = schedule_.lr(step_);
  // Overflow check over the world (fp16), unscaled global-norm clipping and AdamW,
  // or a skip on every rank; without a scaler exactly clip_grad_norm + step.
  const MixedPrecisionStep ms = mp_.step(*zero_, r.lr, cfg_.grad_clip, world_.get(), mp_reducer_);
  r.grad_norm = ms.grad_norm;
  r.loss_scale = ms.loss_scale;
  r.skipped = ms.skipped;
  backend_->synchronize();
  r.step_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.tokens_per_s = static_cast<double>(layout_.global_batch * cfg_.seq_len) / r.step_seconds;
  if (layout_.pp > 1) {
    r.idle_fraction = res.idle_fraction;
    r.theoretical_bubble = res.theoretical_bubble;
  }
  memory_snapshot(r, dev.type);
  if (!cfg_.trace.empty() && step_ == std::min(cfg_.trace_step, cfg_.max_steps - 1) && grid_->tp_rank() == 0 &&
      grid_->dp_rank() == 0)
    write_merged_trace(*grid_->pp_group(), cfg_.trace, res);  // one pipeline's ranks; written on global rank 0
  ++step_;
  return r;
}

// Forward of validation batch `index` through the virtual stages in order
// (blocking p2p between consecutive stages); the loss is that of the head stage,
// 0 elsewhere. Collective over the pp group (and each stage's TP group).
double Trainer::eval_batch(int64_t index) {
  const Device dev = backend_->device();
  // --batch-size rows whatever the layout (also with --micro-batches), so val_loss is layout independent.
  const int64_t rows = cfg_.micro_batch_size, T = cfg_.seq_len;
  const Batch b = loader_->get_val_rows(index, 0, rows);
  const int pp = layout_.pp, S = pp * cfg_.virtual_stages, rank = grid_->pp_rank();
  Communicator& pg = *grid_->pp_group();
  Tensor hidden;
  double loss = 0.0;
  for (int s = 0; s < S; ++s) {
    if (s % pp != rank) continue;
    Gpt& g = stage_->chunk(s / pp);
    Tensor in;
    if (s == 0) {
      in = on_device(b.inputs, dev);
    } else if (pp > 1) {
      in = Tensor::empty(g.hidden_shape(rows, T), DType::F32, dev, MemCategory::Activations);
      pg.recv(in, (s - 1) % pp, s);
    } else {
      in = hidden;
    }
    ActivationCache cache;
    const Tensor target = s == S - 1 ? on_device(b.targets, dev) : Tensor();
    Tensor out = g.forward(in, target, 1.0f / static_cast<float>(rows * T), cache, ForwardMode::Eval);
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

double Trainer::evaluate() {
  const int dp = layout_.dp, dp_rank = grid_->dp_rank();
  const int64_t n = cfg_.eval_batches;
  std::vector<double> losses(static_cast<std::size_t>(n), 0.0);
  // Batch i on DP rank i % dp. ZeRO-3 gathers parameters collectively over DP
  // in every forward, so a rank without a batch in a round runs a dummy one.
  for (int64_t round = 0; round * dp < n; ++round) {
    const int64_t i = round * dp + dp_rank;
    if (i < n) {
      losses[static_cast<std::size_t>(i)] = eval_batch(i);
    } else if (cfg_.zero_stage == 3) {
      (void)eval_batch(0);
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
