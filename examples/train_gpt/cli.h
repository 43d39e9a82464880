// pp3d-train's command line: the flags of a TrainConfig (cli.cpp), the YAML
// config-file reader (--config, keys = flag names) and the DeepSpeed JSON
// mapping (--deepspeed-config) (config_files.cpp). Internal to the program.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "pp3d/train/trainer.h"

namespace pp3d::cli {

// Registers every TrainConfig flag on `app`, bound to `c`.
void add_train_options(CLI::App& app, TrainConfig& c);
// The resolved settings as JSON (keys = flag names with '_'), for --print-config.
nlohmann::ordered_json config_json(const TrainConfig& c);

// Lowers derived defaults that would reject a run the user did not misconfigure (--warmup-steps above
// --max-steps, --min-lr above --lr) unless the user gave them; returns one log line per change.
std::vector<std::string> clamp_derived_defaults(const CLI::App& app, TrainConfig& c);
// Throws a user pp3d::Error when --data, --init-from or --resume-from names a missing path.
void check_paths(const TrainConfig& c);

// CLI11 config formatter for YAML files: a flat map whose keys are flag names
// without the dashes ('-' or '_'); lists give multi-value flags. Unknown keys,
// nested maps and unreadable files are rejected naming the key / file.
class YamlConfig : public CLI::Config {
 public:
  explicit YamlConfig(const CLI::App* app) : app_(app) {}
  std::string to_config(const CLI::App*, bool, bool, std::string) const override;
  std::vector<CLI::ConfigItem> from_config(std::istream& in) const override;

 private:
  const CLI::App* app_;
};

// Applies a DeepSpeed-style JSON config to `c` for every setting whose flag was
// not given on the command line or in the YAML config (app option counts).
// Unknown or unsupported keys throw pp3d::Error naming the key.
void apply_deepspeed_config(const std::string& path, const CLI::App& app, TrainConfig& c);

}  // namespace pp3d::cli
