// Trainer: construction (grid, data, pipeline stage, ZeRO optimizer) and accessors.
#include "pp3d/train/trainer.h"

#include <cmath>

#include "pp3d/comm/bootstrap.h"
#include "pp3d/comm/collectives_util.h"
#include "pp3d/comm/local_communicator.h"
#include "pp3d/core/error.h"
#include "pp3d/core/log.h"
#include "pp3d/core/user_error.h"
#include "pp3d/model/gpt_pipeline.h"
#include "pp3d/parallel/process_grid.h"
#include "pp3d/parallel/zero_optimizer.h"
#include "pp3d/train/interop.h"

namespace pp3d {

namespace {

// One GPU per rank on its node (local rank modulo the visible GPUs).
Device rank_device(const std::string& spec, int world_size) {
  Device d = resolve_device(spec);
  if (!d.is_cpu() && world_size > 1) d = Device::cuda(local_rank() % std::max(1, cuda_device_count()));
  return d;
}

}  // namespace

Trainer::Trainer(TrainConfig config, std::shared_ptr<Communicator> world)
    : cfg_(std::move(config)),
      world_(std::move(world)),
      mp_(MixedPrecision::dtype_from_flags(cfg_.bf16, cfg_.fp16), cfg_.loss_scaler) {
  if (world_ == nullptr) world_ = std::make_shared<LocalCommunicator>();
  cfg_.validate(world_->size());  // before any allocation
  layout_ = cfg_.resolve_layout(world_->size());
  const Device device = rank_device(cfg_.device, world_->size());

  GptConfig mc = model_description(cfg_);
  if (!cfg_.init_from.empty()) {  // the flags' shape was checked by validate()
    PP3D_REQUIRE(mc.num_heads % cfg_.tp == 0, "--tp {} does not divide the {} heads of --init-from '{}'", cfg_.tp,
                 mc.num_heads, cfg_.init_from);
    PP3D_REQUIRE(mc.kv_heads() % cfg_.tp == 0, "--tp {} does not divide the {} key/value heads of --init-from '{}'",
                 cfg_.tp, mc.kv_heads(), cfg_.init_from);
  }
  // llm.c shards are checked against the model's vocabulary (GPT-2's unless --vocab-size says otherwise).
  const int64_t shard_vocab = cfg_.vocab_size > 0 && cfg_.init_from.empty() ? cfg_.vocab_size : mc.vocab_size;
  auto data = std::make_shared<TokenDataset>(load_dataset(cfg_.data, 20240601, shard_vocab));
  if (cfg_.init_from.empty()) {
    mc.vocab_size = cfg_.vocab_size > 0 ? cfg_.vocab_size : data->vocab_size;
    mc.padded_vocab_size = cfg_.padded_vocab_size;
  }
  PP3D_CHECK(data->vocab_size <= mc.vocab_size,
             "the data's vocabulary ({} tokens) does not fit the model's ({}); raise --vocab-size", data->vocab_size,
             mc.vocab_size);
  // The vocabulary is split over TP: when the default padding (64) does not divide, pad to 64 * tp.
  if (mc.padded_vocab_size == 0 && mc.padded_vocab() % cfg_.tp != 0)
    mc.padded_vocab_size = round_up_vocab(mc.vocab_size, 64 * cfg_.tp);
  PP3D_CHECK(mc.padded_vocab() % cfg_.tp == 0, "the padded vocabulary {} (--padded-vocab-size) is not divisible by "
             "--tp {}", mc.padded_vocab(), cfg_.tp);
  mc.validate();
  unigram_bits_ = pp3d::unigram_entropy_bits(*data);  // a bounded prefix: mapped shards stay unread
  dataset_ = std::move(data);
  loader_ = std::make_unique<DataLoader>(dataset_, layout_.global_batch, cfg_.seq_len, cfg_.seed,
                                         parse_sampler(cfg_.sampler));

  grid_ = std::make_unique<ProcessGrid>(world_, cfg_.tp, cfg_.pp);
  backend_ = make_backend(device);
  build_model(mc);  // stage_, model_config_ and --init-from (trainer_model.cpp)

  ZeroConfig zc;
  zc.stage = cfg_.zero_stage;
  zc.bucket_mb = cfg_.bucket_size_mb;
  zc.prefetch_layers = cfg_.prefetch_layers;
  zc.adamw.weight_decay = cfg_.weight_decay;
  zc.adamw.eps = cfg_.adam_eps;
  zero_ = std::make_unique<ZeroOptimizer>(*backend_, stage_->modules(), grid_->dp_group(), zc);
  zero_->set_micro_batches_per_step(static_cast<int>(layout_.micro_batches));
  // Global gradient norm: ZeRO sums over DP; the TP x PP partial sums are added here
  // (counted_in_norm keeps replicated tensors and the tied wte copy from counting twice).
  std::shared_ptr<Communicator> mp = grid_->mp_group();
  mp_reducer_ = [mp](double local) { return all_reduce_sum_double(*mp, local); };

  schedule_.max_lr = cfg_.lr;
  schedule_.min_lr = cfg_.min_lr;
  schedule_.warmup_steps = cfg_.warmup_steps;
  schedule_.total_steps = cfg_.max_steps;
  schedule_.decay = parse_lr_decay(cfg_.lr_schedule);
  schedule_.validate();
  if (!cfg_.resume_from.empty()) resume();
}

Trainer::~Trainer() = default;

Gpt& Trainer::model() {
  PP3D_CHECK(!model_config_.is_llama(), "Trainer::model() is the GPT chunk; this run's model is a Llama (use "
             "pipeline().module(0))");
  return static_cast<GptPipelineStage&>(*stage_).chunk(0);
}

}  // namespace pp3d
