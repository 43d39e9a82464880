// pp3d-train: train a GPT on one process or on many (mpirun, or torchrun-style
// RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT) with tensor, pipeline and data
// parallelism + ZeRO. All logic lives in pp3d::Trainer; this file maps the
// command line (and --config YAML / --deepspeed-config JSON) to a TrainConfig.
#include <cstdio>
#include <cstdlib>

#include "cli.h"
#include "pp3d/comm/bootstrap.h"
#include "pp3d/core/error.h"
#include "pp3d/core/log.h"
#include "pp3d/plan/auto_layout.h"

int main(int argc, char** argv) {
  pp3d::TrainConfig c;
  CLI::App app{"pp3d-train: train a GPT-2-style model with tensor x pipeline x data parallelism and ZeRO "
               "(see docs/USAGE_GUIDE.md). Launch N ranks with mpirun -n N, or torchrun-style environment "
               "variables; dp = N / (tp x pp). SIGINT/SIGTERM: checkpoint at the next step, exit 0; a NaN/Inf loss stops "
               "before the update (exit 2)."};
  pp3d::cli::add_train_options(app, c);
  app.config_formatter(std::make_shared<pp3d::cli::YamlConfig>(&app));
  app.set_config("--config", "", "YAML file of flag values (keys = flag names without dashes; also "
                 "configs/models/*.yaml); command-line flags override it");
  std::string deepspeed;
  app.add_option("--deepspeed-config", deepspeed,
                 "DeepSpeed-style JSON (zero_optimization.stage, reduce_bucket_size, stage3_prefetch_bucket_size, "
                 "train_batch_size, gradient_clipping, optimizer.params, ...); fills what the flags and --config "
                 "leave unset; unknown keys are rejected");
  std::string plan_gpu;
  app.add_option("--plan-gpu", plan_gpu, "GPU preset the planner assumes for --tp/--pp/--zero-stage auto on CUDA "
                 "(h100, h200, a100; default h100); CPU ranks use the cpu preset shared by the ranks");
  bool print_config = false;
  app.add_flag("--print-config", print_config, "print the resolved settings as JSON and exit");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  std::shared_ptr<pp3d::Communicator> world;
  try {
    if (!deepspeed.empty()) pp3d::cli::apply_deepspeed_config(deepspeed, app, c);
    if (print_config) {
      std::printf("%s\n", pp3d::cli::config_json(c).dump(2).c_str());
      return 0;
    }
    if (c.log_all_ranks) setenv("PP3D_LOG_ALL_RANKS", "1", 1);
    world = pp3d::init_world();
    try {
      // --tp/--pp/--zero-stage auto: the planner's choice, the same on every rank (a pure function).
      const pp3d::AutoLayoutRequest autos = pp3d::AutoLayoutRequest::from(c);
      if (autos.any()) {
        const bool cuda = pp3d::resolve_device(c.device).is_cuda();
        const pp3d::AutoLayoutChoice choice = pp3d::resolve_auto_layout(
            c, world->size(), pp3d::trainer_cluster(cuda, world->size(), plan_gpu), autos);
        if (world->rank() == 0 && !c.quiet) pp3d::logger()->info("{}", choice.summary);
      }
      c.validate(world->size());  // before any allocation; the same verdict on every rank
    } catch (const pp3d::Error& e) {
      if (world->rank() == 0) std::fprintf(stderr, "pp3d-train: error: %s\n", e.what());
      pp3d::finalize_world();
      return 2;
    }
    pp3d::Trainer trainer(c, world);
    trainer.run();
  } catch (const pp3d::Error& e) {
    std::fprintf(stderr, "pp3d-train: error%s: %s\n",
                 world && world->size() > 1 ? (" on rank " + std::to_string(world->rank())).c_str() : "", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pp3d-train: unexpected error: %s\n", e.what());
    return 3;
  }
  pp3d::finalize_world();
  return 0;
}
