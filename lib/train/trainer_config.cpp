// TrainConfig validation (model, batch, optimiser and parallel-layout flags),
// the derived ParallelLayout and --device resolution.
#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "pp3d/core/error.h"
#include "pp3d/core/user_error.h"
#include "pp3d/parallel/pipeline_schedule.h"
#include "pp3d/train/trainer.h"

namespace pp3d {

std::string ParallelLayout::str() const {
  return fmt::format("world {} = tp {} x dp {} x pp {}; global batch {} rows = dp {} x {} micro-batch(es) x {} rows",
                     world, tp, dp, pp, global_batch, dp, micro_batches, micro_batch);
}

ParallelLayout TrainConfig::resolve_layout(int world_size) const {
  PP3D_REQUIRE(world_size >= 1, "world size must be >= 1, got {}", world_size);
  PP3D_REQUIRE(tp >= 1, "--tp must be >= 1, got {}", tp);
  PP3D_REQUIRE(pp >= 1, "--pp must be >= 1, got {}", pp);
  PP3D_REQUIRE(world_size % (tp * pp) == 0,
               "the world size {} (ranks launched) is not divisible by --tp {} x --pp {} = {}: launch a multiple of "
               "tp x pp ranks (dp = world / (tp x pp))", world_size, tp, pp, tp * pp);
  ParallelLayout l;
  l.world = world_size;
  l.tp = tp;
  l.pp = pp;
  l.dp = world_size / (tp * pp);
  const std::string dp_why = l.dp == 1 ? std::string()
                                       : fmt::format(" (dp = world {} / (--tp {} x --pp {}))", world_size, tp, pp);
  PP3D_REQUIRE(micro_batches >= 0, "--micro-batches must be >= 0 (0 = derived), got {}", micro_batches);
  PP3D_REQUIRE(micro_batch_size >= 1, "--batch-size must be >= 1, got {}", micro_batch_size);
  PP3D_REQUIRE(global_batch_size >= 0, "--global-batch-size must be >= 0 (0 = --batch-size x dp), got {}",
               global_batch_size);
  if (micro_batches > 0 && global_batch_size > 0) {
    PP3D_REQUIRE(global_batch_size % (l.dp * micro_batches) == 0,
                 "--global-batch-size {} is not divisible by data-parallel size {} x --micro-batches {} = {}{}",
                 global_batch_size, l.dp, micro_batches, l.dp * micro_batches, dp_why);
    l.global_batch = global_batch_size;
    l.micro_batches = micro_batches;
    l.micro_batch = global_batch_size / (l.dp * micro_batches);
  } else {
    l.micro_batch = micro_batch_size;
    // Neither --micro-batches nor --global-batch-size given: one micro-batch per step, or --pp of them with
    // the interleaved schedule (which needs a multiple of --pp), so the default batch never rejects a layout.
    const int64_t derived_m = micro_batches > 0 ? micro_batches : (schedule == "interleaved" ? std::max(pp, 1) : 1);
    l.global_batch = global_batch_size > 0 ? global_batch_size : micro_batch_size * l.dp * derived_m;
    if (l.dp == 1) {
      PP3D_REQUIRE(l.global_batch % micro_batch_size == 0,
                   "--global-batch-size {} is not a multiple of --batch-size {} (the micro-batch)", l.global_batch,
                   micro_batch_size);
    } else {
      PP3D_REQUIRE(l.global_batch % (l.dp * micro_batch_size) == 0,
                   "--global-batch-size {} is not a multiple of data-parallel size {} x --batch-size {} = {}{}",
                   l.global_batch, l.dp, micro_batch_size, l.dp * micro_batch_size, dp_why);
    }
    l.micro_batches = l.global_batch / (l.dp * micro_batch_size);
  }
  PP3D_REQUIRE(num_heads % tp == 0, "--num-heads {} is not divisible by --tp {} (attention heads are split over "
               "tensor-parallel ranks)", num_heads, tp);
  if (init_from.empty()) {  // else the checkpoint's shape (checked by the Trainer)
    PP3D_REQUIRE(mlp_width() % tp == 0, "the MLP width {} (--mlp-hidden-size, default {}) is not divisible by --tp {}",
                 mlp_width(), is_llama() ? "8 x --hidden-size / 3 rounded up to 64" : "4 x --hidden-size", tp);
    if (is_llama()) {
      const int64_t kv = num_kv_heads > 0 ? num_kv_heads : num_heads;
      PP3D_REQUIRE(kv % tp == 0, "--tp {} does not divide the {} key/value heads (--num-kv-heads {}; k and v are "
                   "split by head over tensor-parallel ranks)", tp, kv, num_kv_heads);
    }
  }
  PP3D_REQUIRE(!sequence_parallel || seq_len % tp == 0,
               "--sequence-parallel needs --seq-len {} divisible by --tp {}", seq_len, tp);
  ScheduleKind kind{};
  try {
    kind = parse_schedule(schedule);
  } catch (const Error&) {
    PP3D_USER_FAIL("--schedule '{}' is not one of gpipe, 1f1b, interleaved, zb-h1", schedule);
  }
  PP3D_REQUIRE(virtual_stages >= 1, "--virtual-stages must be >= 1, got {}", virtual_stages);
  PP3D_REQUIRE(kind == ScheduleKind::Interleaved || virtual_stages == 1,
               "--virtual-stages {} needs --schedule interleaved (got '{}')", virtual_stages, schedule);
  PP3D_REQUIRE(kind != ScheduleKind::Interleaved || (pp >= 2 && virtual_stages >= 2),
               "--schedule interleaved needs --pp >= 2 and --virtual-stages >= 2 (got --pp {}, --virtual-stages {})",
               pp, virtual_stages);
  PP3D_REQUIRE(kind != ScheduleKind::Interleaved || l.micro_batches % pp == 0,
               "--schedule interleaved needs the micro-batches per step ({}) to be a multiple of --pp {}",
               l.micro_batches, pp);
  if (pipeline_split.empty()) {
    PP3D_REQUIRE(num_layers >= static_cast<int64_t>(pp) * virtual_stages,
                 "--num-layers {} is smaller than --pp {} x --virtual-stages {} = {} (every pipeline stage needs at "
                 "least one layer; or give --pipeline-split)", num_layers, pp, virtual_stages, pp * virtual_stages);
  } else {
    try {
      (void)PipelineSplit::parse(pipeline_split, num_layers, pp, virtual_stages);
    } catch (const Error& e) {
      PP3D_USER_FAIL("--pipeline-split '{}' (with --num-layers {}, --pp {}, --virtual-stages {}): {}",
                 pipeline_split, num_layers, pp, virtual_stages, e.what());
    }
  }
  PP3D_REQUIRE(zero_stage >= 0 && zero_stage <= 3, "--zero-stage must be 0, 1, 2 or 3, got {}", zero_stage);
  PP3D_REQUIRE(std::isfinite(bucket_size_mb) && bucket_size_mb > 0, "--bucket-size-mb must be > 0, got {}",
               bucket_size_mb);
  PP3D_REQUIRE(prefetch_layers >= 0, "--prefetch-layers must be >= 0, got {}", prefetch_layers);
  return l;
}

void TrainConfig::validate(int world_size) const {
  PP3D_REQUIRE(!(bf16 && fp16), "--bf16 and --fp16 are mutually exclusive: choose one");
  PP3D_REQUIRE(grad_dtype == "f32" || grad_dtype == "param", "--grad-dtype must be f32 or param, got '{}'", grad_dtype);
  PP3D_REQUIRE(grad_dtype == "f32" || bf16 || fp16,
               "--grad-dtype param stores gradients in the 16-bit parameter dtype: it needs --bf16 or --fp16");
  PP3D_REQUIRE(activation_dtype == "f32" || activation_dtype == "param",
               "--activation-dtype must be f32 or param, got '{}'", activation_dtype);
  PP3D_REQUIRE(activation_dtype == "f32" || bf16 || fp16,
               "--activation-dtype param stores activations in the 16-bit parameter dtype: it needs --bf16 or --fp16");
  PP3D_REQUIRE(compute_dtype == "auto" || compute_dtype == "f32" || compute_dtype == "param",
               "--compute-dtype must be auto, f32 or param, got '{}'", compute_dtype);
  PP3D_REQUIRE(compute_dtype != "param" || bf16 || fp16,
               "--compute-dtype param runs the GEMMs on 16-bit operands of the parameter dtype: it needs --bf16 or "
               "--fp16");
  PP3D_REQUIRE(num_layers >= 1, "--num-layers must be >= 1, got {}", num_layers);
  PP3D_REQUIRE(hidden_size >= 1, "--hidden-size must be >= 1, got {}", hidden_size);
  PP3D_REQUIRE(num_heads >= 1, "--num-heads must be >= 1, got {}", num_heads);
  PP3D_REQUIRE(hidden_size % num_heads == 0, "--hidden-size {} is not divisible by --num-heads {}", hidden_size,
               num_heads);
  PP3D_REQUIRE(seq_len >= 1, "--seq-len must be >= 1, got {}", seq_len);
  PP3D_REQUIRE(arch == "gpt2" || arch == "llama", "--arch '{}' is not one of gpt2, llama", arch);
  // Token ids travel as int32 (uint32 .bin shards hold vocabularies above 65536).
  PP3D_REQUIRE(vocab_size >= 0 && vocab_size <= (int64_t{1} << 31) - 1, "--vocab-size must be in [0, 2^31 - 1], got {}",
               vocab_size);
  PP3D_REQUIRE(padded_vocab_size == 0 || padded_vocab_size >= vocab_size,
               "--padded-vocab-size {} is smaller than --vocab-size {}", padded_vocab_size, vocab_size);
  PP3D_REQUIRE(mlp_hidden_size >= 0, "--mlp-hidden-size must be >= 0 (0 = 4 x --hidden-size), got {}",
               mlp_hidden_size);
  PP3D_REQUIRE(std::isfinite(ln_eps) && ln_eps > 0.0f, "--{} must be > 0, got {}", is_llama() ? "norm-eps" : "ln-eps",
               ln_eps);
  if (is_llama()) {
    PP3D_REQUIRE(num_kv_heads >= 0, "--num-kv-heads must be >= 0 (0 = --num-heads), got {}", num_kv_heads);
    PP3D_REQUIRE(num_kv_heads == 0 || num_heads % num_kv_heads == 0,
                 "--num-kv-heads {} does not divide --num-heads {} (each key/value head serves a group of query heads)",
                 num_kv_heads, num_heads);
    PP3D_REQUIRE(std::isfinite(rope_theta) && rope_theta > 0.0f, "--rope-theta must be > 0, got {}", rope_theta);
  } else {
    PP3D_REQUIRE(num_kv_heads == 0, "--num-kv-heads {} is for --arch llama (GPT-2 has one key/value head per head)",
                 num_kv_heads);
  }
  PP3D_REQUIRE(std::isfinite(init_std) && init_std > 0.0f, "--init-std must be > 0, got {}", init_std);
  (void)resolve_layout(world_size);
  PP3D_REQUIRE(max_steps >= 1, "--max-steps must be >= 1, got {}", max_steps);
  PP3D_REQUIRE(std::isfinite(lr) && lr > 0.0f, "--lr must be > 0, got {}", lr);
  PP3D_REQUIRE(std::isfinite(min_lr) && min_lr >= 0.0f && min_lr <= lr, "--min-lr {} must be in [0, --lr {}]", min_lr,
               lr);
  PP3D_REQUIRE(warmup_steps >= 0 && warmup_steps <= max_steps, "--warmup-steps {} must be in [0, --max-steps {}]",
               warmup_steps, max_steps);
  PP3D_REQUIRE(lr_schedule == "cosine" || lr_schedule == "linear" || lr_schedule == "constant",
               "--lr-schedule '{}' is not one of cosine, linear, constant", lr_schedule);
  PP3D_REQUIRE(std::isfinite(weight_decay) && weight_decay >= 0.0f, "--weight-decay must be >= 0, got {}",
               weight_decay);
  PP3D_REQUIRE(std::isfinite(grad_clip), "--grad-clip must be finite, got {}", grad_clip);
  PP3D_REQUIRE(std::isfinite(adam_eps) && adam_eps > 0.0f, "--adam-eps must be > 0, got {}", adam_eps);
  PP3D_REQUIRE(save_interval >= 0, "--save-interval must be >= 0, got {}", save_interval);
  PP3D_REQUIRE(keep_last >= 0, "--keep-last must be >= 0, got {}", keep_last);
  PP3D_REQUIRE(trace_step >= 0, "--trace-step must be >= 0, got {}", trace_step);
  PP3D_REQUIRE(device == "cpu" || device == "cuda" || device == "auto", "--device '{}' is not one of cpu, cuda, auto",
               device);
  PP3D_REQUIRE(log_interval >= 1, "--log-interval must be >= 1, got {}", log_interval);
  PP3D_REQUIRE(eval_interval >= 0, "--eval-interval must be >= 0, got {}", eval_interval);
  (void)parse_sampler(sampler);  // throws with the valid names
  PP3D_REQUIRE(eval_batches >= 1, "--eval-batches must be >= 1, got {}", eval_batches);
  PP3D_REQUIRE(!output_dir.empty(), "--output-dir must not be empty");
  if (fp16) {
    const LossScalerConfig& s = loss_scaler;
    PP3D_REQUIRE(std::isfinite(s.init_scale) && s.init_scale > 0.0f, "--initial-loss-scale must be > 0, got {}",
                 s.init_scale);
    PP3D_REQUIRE(s.scale_window >= 1, "--loss-scale-window must be >= 1, got {}", s.scale_window);
    PP3D_REQUIRE(s.hysteresis >= 1, "--hysteresis must be >= 1, got {}", s.hysteresis);
    PP3D_REQUIRE(s.min_scale > 0.0f && s.min_scale <= s.init_scale,
                 "--min-loss-scale {} must be in (0, --initial-loss-scale {}]", s.min_scale, s.init_scale);
  }
}

Device resolve_device(const std::string& device) {
  if (device == "cpu") return Device::cpu();
  if (device == "cuda") {
    PP3D_REQUIRE(cuda_compiled(), "--device cuda: this pp3d build has no CUDA backend (configure with "
                 "-DPP3D_WITH_CUDA=ON on a machine with the CUDA toolkit, or use --device cpu)");
    PP3D_REQUIRE(cuda_device_count() > 0, "--device cuda: no usable GPU is visible (driver missing or "
                 "CUDA_VISIBLE_DEVICES empty); use --device cpu");
    return Device::cuda(0);
  }
  PP3D_REQUIRE(device == "auto", "--device '{}' is not one of cpu, cuda, auto", device);
  return cuda_compiled() && cuda_device_count() > 0 ? Device::cuda(0) : Device::cpu();
}

}  // namespace pp3d
