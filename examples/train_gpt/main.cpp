// pp3d-train: train a GPT (or, --arch llama, a Llama) on one process or on many (mpirun, or torchrun-style
// RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT) with tensor, pipeline and data
// parallelism + ZeRO. All logic lives in pp3d::Trainer; this file maps the
// command line (and --config YAML / --deepspeed-config JSON) to a TrainConfig.
#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "cli.h"
#include "cli_errors.h"
#include "pp3d/comm/bootstrap.h"
#include "pp3d/core/error.h"
#include "pp3d/core/log.h"
#include "pp3d/plan/auto_layout.h"

namespace {

// Resolves --tp/--pp/--zero-stage/--schedule auto (the same on every rank: a pure function) and validates c for
// world_size ranks before anything is allocated. Returns the planner's "auto layout: ..." line or "".
std::string resolve_and_validate(pp3d::TrainConfig& c, int world_size, const std::string& plan_gpu) {
  std::string summary;
  const pp3d::AutoLayoutRequest autos = pp3d::AutoLayoutRequest::from(c);
  if (autos.any()) {
    const bool cuda = pp3d::resolve_device(c.device).is_cuda();
    summary = pp3d::resolve_auto_layout(c, world_size, pp3d::trainer_cluster(cuda, world_size, plan_gpu), autos)
                  .summary;
  }
  c.validate(world_size);
  return summary;
}

}  // namespace

int main(int argc, char** argv) {
  pp3d::TrainConfig c;
  CLI::App app{"pp3d-train: train a GPT-2-style or (--arch llama) Llama-style model with tensor x pipeline x data parallelism and ZeRO "
               "(see docs/USAGE_GUIDE.md). Launch N ranks with mpirun -n N, or torchrun-style environment "
               "variables; dp = N / (tp x pp). A flag given twice takes its last value. SIGINT/SIGTERM: checkpoint "
               "at the next step, exit 0; bad input: one error sentence, exit 2; a NaN/Inf loss stops before the "
               "update (exit 2)."};
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
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
  app.add_flag("--print-config", print_config, "validate, print the resolved settings as JSON and exit (for "
               "--check-config N ranks, else tp x pp)");
  int check_ranks = 0;
  app.add_option("--check-config", check_ranks, "validate every flag, file path and the layout for N ranks "
                 "without launching them, print the layout and exit (0: valid; 2: the error). ./train and "
                 "scripts/run_*.sh run it before mpirun")->check(CLI::PositiveNumber);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return pp3d::cli::report_parse_error(app, e);
  }
  std::shared_ptr<pp3d::Communicator> world;
  try {
    if (!deepspeed.empty()) pp3d::cli::apply_deepspeed_config(deepspeed, app, c);
    const std::vector<std::string> notes = pp3d::cli::clamp_derived_defaults(app, c);
    if (print_config || check_ranks > 0) {
      const int ranks = check_ranks > 0 ? check_ranks : std::max(c.tp, 1) * std::max(c.pp, 1);
      const std::string summary = resolve_and_validate(c, ranks, plan_gpu);
      pp3d::cli::check_paths(c);
      (void)pp3d::resolve_device(c.device);
      if (print_config) {
        std::printf("%s\n", pp3d::cli::config_json(c).dump(2).c_str());
      } else {
        for (const std::string& n : notes) std::printf("%s\n", n.c_str());
        if (!summary.empty()) std::printf("%s\n", summary.c_str());
        std::printf("config OK: %s\n", c.resolve_layout(ranks).str().c_str());
      }
      return 0;
    }
    if (c.log_all_ranks) setenv("PP3D_LOG_ALL_RANKS", "1", 1);
    world = pp3d::init_world();
    try {
      const std::string summary = resolve_and_validate(c, world->size(), plan_gpu);
      if (world->rank() == 0 && !c.quiet) {
        for (const std::string& n : notes) pp3d::logger()->info("{}", n);
        if (!summary.empty()) pp3d::logger()->info("{}", summary);
      }
    } catch (const pp3d::Error& e) {
      if (world->rank() == 0) pp3d::cli::report_error(e, -1);  // the same verdict on every rank: print once
      pp3d::finalize_world();
      return 2;
    }
    pp3d::Trainer trainer(c, world);  // gpt2 or llama (--arch)
    trainer.run();
  } catch (const pp3d::Error& e) {
    pp3d::cli::report_error(e, world && world->size() > 1 ? world->rank() : -1);
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pp3d-train: unexpected error: %s\n", e.what());
    return 3;
  }
  pp3d::finalize_world();
  return 0;
}
