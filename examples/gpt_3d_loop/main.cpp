// The GPT 3D training loop, assembled from pp3d's public primitives — the
// program to copy when writing your own trainer (pp3d-train's Trainer adds
// checkpoints, mixed precision, evaluation, monitoring and failure handling on
// the same pieces):
//
//   world = init_world()                       mpirun / torchrun / one process
//   grid  = ProcessGrid(world, tp, pp)         dp = world / (tp * pp)
//   stage = GptPipelineStage(config, grid)     this rank's GPT chunk(s) as pipeline modules
//   zero  = ZeroOptimizer(stage.chunks(), dp)  ZeRO 0-3 over the DP group
//   per step: micro-batches of this DP rank's rows -> stage.run_step (schedule)
//             -> zero.finish_gradient_sync -> global-norm clip -> zero.step(lr)
//
//   mpirun -n 8 pp3d-gpt-3d-loop --tp 2 --pp 2 --zero-stage 1 --max-steps 50
// Prints one line per step: "step N loss L grad_norm G lr R".
#include <CLI/CLI.hpp>
#include <cstdio>
#include <memory>
#include <vector>

#include <pp3d/pp3d.h>

int main(int argc, char** argv) {
  CLI::App app{"pp3d-gpt-3d-loop: a GPT trained with TP x PP x DP/ZeRO from the public primitives"};
  int tp = 1, pp = 1, zero_stage = 0, virtual_stages = 1;
  int64_t layers = 4, hidden = 128, heads = 4, seq = 64, micro_batch = 16, micro_batches = 1, steps = 20;
  int64_t warmup = 40;
  float lr = 2e-3f, min_lr = 2e-4f, clip = 1.0f, weight_decay = 0.1f;
  uint64_t seed = 1337;
  std::string schedule = "1f1b", data;
  app.add_option("--tp", tp, "tensor-parallel size");
  app.add_option("--pp", pp, "pipeline-parallel size");
  app.add_option("--zero-stage", zero_stage, "ZeRO stage 0-3");
  app.add_option("--schedule", schedule, "gpipe | 1f1b | interleaved | zb-h1");
  app.add_option("--virtual-stages", virtual_stages, "chunks per pipeline rank (interleaved)");
  app.add_option("--num-layers", layers);
  app.add_option("--hidden-size", hidden);
  app.add_option("--num-heads", heads);
  app.add_option("--seq-len", seq);
  app.add_option("--batch-size", micro_batch, "rows per micro-batch");
  app.add_option("--micro-batches", micro_batches, "micro-batches per step per DP rank");
  app.add_option("--max-steps", steps);
  app.add_option("--warmup-steps", warmup);
  app.add_option("--lr", lr);
  app.add_option("--min-lr", min_lr);
  app.add_option("--grad-clip", clip);
  app.add_option("--weight-decay", weight_decay);
  app.add_option("--seed", seed);
  app.add_option("--data", data, "text file / llm.c shards; default: the embedded corpus");
  CLI11_PARSE(app, argc, argv);

  try {
    auto world = pp3d::init_world();
    pp3d::ProcessGrid grid(world, tp, pp);
    const int64_t global_batch = micro_batch * micro_batches * grid.dp();

    // Data: the global batch of step s is a pure function of (seed, s), so
    // every layout trains on the same rows; DP rank r takes its slice.
    auto dataset = std::make_shared<pp3d::TokenDataset>(pp3d::load_dataset(data));
    pp3d::DataLoader loader(dataset, global_batch, seq, seed);

    pp3d::GptConfig model;
    model.num_layers = layers;
    model.hidden_size = hidden;
    model.num_heads = heads;
    model.max_seq_len = seq;
    model.vocab_size = dataset->vocab_size;
    if (model.padded_vocab() % tp != 0) model.padded_vocab_size = pp3d::round_up_vocab(model.vocab_size, 64 * tp);

    auto backend = pp3d::make_cpu_backend();
    pp3d::PipelineConfig pc;
    pc.schedule = pp3d::parse_schedule(schedule);
    pc.virtual_stages = virtual_stages;
    pc.micro_batch_size = micro_batch;
    pc.seq_len = seq;
    pp3d::GptOptions opts;
    opts.seed = seed;
    pp3d::GptPipelineStage stage(model, *backend, grid, pc, {}, opts);

    pp3d::ZeroConfig zc;
    zc.stage = zero_stage;
    zc.adamw.weight_decay = weight_decay;
    pp3d::ZeroOptimizer zero(*backend, stage.chunks(), grid.dp_group(), zc);
    zero.set_micro_batches_per_step(static_cast<int>(micro_batches));
    // The global gradient norm: ZeRO sums over DP, this adds the TP x PP parts
    // (counted_in_norm keeps replicated tensors and the tied wte copy from counting twice).
    std::shared_ptr<pp3d::Communicator> mp = grid.mp_group();
    const pp3d::SumSquaresReducer reduce_mp = [mp](double s) { return pp3d::all_reduce_sum_double(*mp, s); };

    pp3d::LrSchedule lrs;
    lrs.max_lr = lr;
    lrs.min_lr = min_lr;
    lrs.warmup_steps = std::min(warmup, steps);
    lrs.total_steps = steps;
    lrs.validate();

    const float loss_weight = 1.0f / static_cast<float>(global_batch * seq);  // mean over the global batch
    const int64_t row0 = grid.dp_rank() * micro_batch * micro_batches;
    for (int64_t step = 0; step < steps; ++step) {
      std::vector<pp3d::MicroBatch> mbs(static_cast<std::size_t>(micro_batches));
      for (int64_t m = 0; m < micro_batches; ++m) {
        const pp3d::Batch b = loader.get_rows(step, row0 + m * micro_batch, row0 + (m + 1) * micro_batch);
        mbs[static_cast<std::size_t>(m)] = {b.inputs, b.targets};
      }
      zero.zero_grad();
      const pp3d::StepResult r = stage.run_step(mbs, loss_weight);  // + the tied-embedding gradient sum
      zero.finish_gradient_sync();
      const double loss = pp3d::all_reduce_sum_double(*grid.dp_group(), r.loss);
      const float norm = zero.grad_norm(reduce_mp);
      const float c = pp3d::clip_coefficient(norm, clip);
      if (clip > 0.0f && c < 1.0f) zero.scale_gradients(c);
      zero.step(lrs.lr(step));
      if (world->rank() == 0)
        std::printf("step %lld loss %.9g grad_norm %.6g lr %.6g\n", static_cast<long long>(step + 1), loss, norm,
                    lrs.lr(step));
    }
    pp3d::finalize_world();
  } catch (const pp3d::Error& e) {
    std::fprintf(stderr, "pp3d-gpt-3d-loop: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
