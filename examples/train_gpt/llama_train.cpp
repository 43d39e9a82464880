// pp3d-train --arch llama (see llama_train.h).
#include "llama_train.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <vector>

#include "pp3d/comm/collectives_util.h"
#include "pp3d/core/log.h"
#include "pp3d/core/user_error.h"
#include "pp3d/model/llama_hf.h"
#include "pp3d/optim/lr_schedule.h"
#include "pp3d/parallel/pipeline.h"
#include "pp3d/parallel/process_grid.h"
#include "pp3d/parallel/zero_optimizer.h"
#include "pp3d/train/data.h"

namespace pp3d::cli {

void add_arch_options(CLI::App& app, ArchFlags& f) {
  app.add_option("--arch", f.arch, "model family: gpt2 (learned positions, LayerNorm, GELU) | llama (RoPE, RMSNorm, "
                 "SwiGLU, grouped-query attention; docs/LLAMA.md)")
      ->check(CLI::IsMember({"gpt2", "llama"}))
      ->capture_default_str();
  app.add_option("--num-kv-heads", f.num_kv_heads, "llama: key/value heads (divides --num-heads; --tp must divide "
                 "it; 0 = --num-heads)")->capture_default_str();
  app.add_option("--rope-theta", f.rope_theta, "llama: RoPE base theta")->capture_default_str();
  app.add_option("--norm-eps", f.norm_eps, "llama: RMSNorm epsilon")->capture_default_str();
}

void check_llama_supported(const TrainConfig& c) {
  auto no = [](bool given, const char* flag) {
    PP3D_REQUIRE(!given, "{} is not supported with --arch llama yet (docs/LLAMA.md lists what is)", flag);
  };
  no(c.bf16, "--bf16");
  no(c.fp16, "--fp16");
  no(c.save_interval > 0, "--save-interval");
  no(!c.resume_from.empty(), "--resume-from");
  PP3D_REQUIRE(c.export_safetensors.empty() || (c.tp == 1 && c.pp == 1),
               "--export-safetensors with --arch llama needs --tp 1 --pp 1 so far (got --tp {} --pp {})", c.tp, c.pp);
  no(!c.trace.empty(), "--trace");
  no(!resolve_device(c.device).is_cpu(), "a CUDA device (the CUDA ops exist, the loop is CPU-only so far)");
}

LlamaConfig llama_config(const TrainConfig& c, const ArchFlags& f, const CLI::App& app, int64_t vocab) {
  if (!c.init_from.empty()) {  // the model is the checkpoint's (its config.json)
    LlamaConfig m = load_llama_hf_config(c.init_from);
    PP3D_REQUIRE(vocab <= m.vocab_size, "--init-from '{}': the data's vocabulary ({}) is larger than the model's ({})",
                 c.init_from, vocab, m.vocab_size);
    const int64_t mult = std::lcm<int64_t>(64, std::max(c.tp, 1));
    m.padded_vocab_size = (m.vocab_size + mult - 1) / mult * mult;
    m.max_seq_len = c.seq_len;
    m.validate(c.tp);
    return m;
  }
  LlamaConfig m;
  m.vocab_size = vocab;
  // A multiple of 64 and of tp (the vocab-parallel head needs tp | Vp).
  const int64_t mult = std::lcm<int64_t>(64, std::max(c.tp, 1));
  m.padded_vocab_size = c.padded_vocab_size > 0 ? c.padded_vocab_size : (vocab + mult - 1) / mult * mult;
  m.hidden_size = c.hidden_size;
  m.num_layers = c.num_layers;
  m.num_heads = c.num_heads;
  m.num_kv_heads = f.num_kv_heads;
  // Llama's default FFN width: 8C/3 rounded up to a multiple of 64 (and so of most tp).
  m.mlp_hidden_size = c.mlp_hidden_size > 0 ? c.mlp_hidden_size : (8 * c.hidden_size / 3 + 63) / 64 * 64;
  m.max_seq_len = c.seq_len;
  m.rope_theta = f.rope_theta;
  m.norm_eps = f.norm_eps;
  m.tied_embeddings = app.count("--tied-embeddings") > 0 ? c.tied_embeddings : false;  // Llama: untied by default
  m.init_std = c.init_std;
  try {
    m.validate(c.tp);
  } catch (const Error& e) {
    PP3D_USER_FAIL("{}", e.what());
  }
  return m;
}

void run_llama(const TrainConfig& c, const ArchFlags& f, const CLI::App& app, std::shared_ptr<Communicator> world) {
  using Clock = std::chrono::steady_clock;
  check_llama_supported(c);
  const ParallelLayout lay = c.resolve_layout(world->size());
  ProcessGrid grid(world, c.tp, c.pp);
  auto data = std::make_shared<const TokenDataset>(load_dataset(c.data, c.seed));
  const int64_t vocab = c.vocab_size > 0 ? c.vocab_size : data->vocab_size;
  const LlamaConfig mc = llama_config(c, f, app, vocab);
  const DataLoader loader(data, lay.global_batch, c.seq_len, c.seed);
  auto be = make_cpu_backend();

  PipelineConfig pc;
  pc.schedule = parse_schedule(c.schedule);
  pc.virtual_stages = c.virtual_stages;
  pc.seq_len = c.seq_len;
  pc.micro_batch_size = lay.micro_batch;
  const LlamaLayout base = LlamaLayout::tensor_parallel(grid, c.sequence_parallel);
  LlamaOptions opts;
  opts.seed = c.seed;
  opts.recompute = c.recompute;
  const PipelineSplit split = PipelineSplit::parse(c.pipeline_split, mc.num_layers, grid.pp(), c.virtual_stages);
  PipelineStage stage(make_llama_chunks(mc, *be, base, opts, split, grid.pp_rank()), grid.pp_group(),
                      grid.embedding_group(), pc, split);
  if (!c.init_from.empty()) {  // before the optimizer takes its master copies
    load_llama_hf(c.init_from, mc, stage.parameters());
    if (world->rank() == 0 && !c.quiet) logger()->info("init from {} (Hugging Face Llama)", c.init_from);
  }
  ZeroConfig zc;
  zc.stage = c.zero_stage;
  zc.bucket_mb = c.bucket_size_mb;
  zc.prefetch_layers = c.prefetch_layers;
  zc.adamw.eps = c.adam_eps;
  zc.adamw.weight_decay = c.weight_decay;
  ZeroOptimizer zero(*be, stage.modules(), grid.dp_group(), zc);
  zero.set_micro_batches_per_step(static_cast<int>(lay.micro_batches));
  LrSchedule sched;
  sched.max_lr = c.lr;
  sched.min_lr = c.min_lr;
  sched.warmup_steps = c.warmup_steps;
  sched.total_steps = c.max_steps;
  sched.decay = parse_lr_decay(c.lr_schedule);
  sched.validate();
  std::shared_ptr<Communicator> mp = grid.mp_group();
  const SumSquaresReducer reduce_mp = [mp](double local) { return all_reduce_sum_double(*mp, local); };

  const bool log = world->rank() == 0 && !c.quiet;
  if (log) {
    logger()->info("llama: {} layers, hidden {}, {} heads / {} kv heads, ffn {}, vocab {} (padded {}), rope theta "
                   "{}, {} embeddings; data: {}",
                   mc.num_layers, mc.hidden_size, mc.num_heads, mc.resolved().num_kv_heads, mc.mlp_hidden_size,
                   mc.vocab_size, mc.padded_vocab_size, mc.rope_theta, mc.tied_embeddings ? "tied" : "untied",
                   data->description);
    logger()->info("layout: {}; zero stage {}, schedule {}", lay.str(), c.zero_stage, c.schedule);
  }
  const int64_t rows = lay.global_batch / lay.dp;
  const float weight = 1.0f / static_cast<float>(lay.global_batch * c.seq_len);
  double loss = 0.0;
  for (int64_t step = 0; step < c.max_steps; ++step) {
    const auto t0 = Clock::now();
    std::vector<MicroBatch> mbs;
    for (int64_t m = 0; m < lay.micro_batches; ++m) {
      const int64_t r0 = grid.dp_rank() * rows + m * lay.micro_batch;
      Batch b = loader.get_rows(step, r0, r0 + lay.micro_batch);
      mbs.push_back({b.inputs, b.targets});
    }
    zero.zero_grad();
    const StepResult r = stage.run_step(mbs, weight);
    zero.finish_gradient_sync();
    const float norm = c.grad_clip > 0 ? zero.clip_grad_norm(c.grad_clip, reduce_mp) : zero.grad_norm(reduce_mp);
    const float lr = sched.lr(step);
    zero.step(lr);
    loss = all_reduce_sum_double(*grid.dp_group(), r.loss);
    PP3D_REQUIRE(std::isfinite(loss), "step {}: the loss is {} (not finite); lower --lr", step, loss);
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    if (log && (step % std::max<int64_t>(c.log_interval, 1) == 0 || step + 1 == c.max_steps))
      logger()->info("step {:>5}/{} | loss {:.4f} | lr {:.3e} | grad norm {:.3f} | {:.0f} ms", step + 1, c.max_steps,
                     loss, lr, norm, ms);
  }
  if (!c.export_safetensors.empty()) {
    zero.gather_parameters();  // ZeRO-3: whole values on every rank
    if (world->rank() == 0) save_llama_hf(c.export_safetensors, mc, stage.parameters());
    zero.release_parameters();
    if (log) logger()->info("exported {}/model.safetensors + config.json (Hugging Face Llama)", c.export_safetensors);
  }
  if (log) logger()->info("done: final train loss {:.4f}", loss);
}

}  // namespace pp3d::cli
