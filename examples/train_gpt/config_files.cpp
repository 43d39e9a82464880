// --config file.yaml (every flag, keys = flag names) and --deepspeed-config
// file.json (the DeepSpeed keys that map onto pp3d-train's flags).
#include <cmath>
#include <fstream>
#include <set>

#include <yaml-cpp/yaml.h>

#include "cli.h"
#include "pp3d/core/error.h"
#include "pp3d/core/user_error.h"

namespace pp3d::cli {

std::string YamlConfig::to_config(const CLI::App*, bool, bool, std::string) const {
  return "# writing YAML configs is not supported; see --print-config\n";
}

namespace {

// data: as a YAML list -> Megatron's "W1 PATH1 W2 PATH2" string. Entries are
// {weight: W, path: P} maps, or the list is flat [W1, P1, W2, P2].
std::string blend_list_to_spec(const YAML::Node& list) {
  const std::string form = "--config: key 'data' as a list must hold {weight: W, path: P} entries or be the flat "
                           "list [W1, P1, W2, P2, ...]";
  std::vector<std::string> words;
  for (const auto& e : list) {
    if (e.IsMap()) {
      if (!e["weight"] || !e["path"] || e.size() != 2 || !e["weight"].IsScalar() || !e["path"].IsScalar())
        throw CLI::ConfigError(form);
      words.push_back(e["weight"].Scalar());
      words.push_back(e["path"].Scalar());
    } else if (e.IsScalar()) {
      words.push_back(e.Scalar());
    } else {
      throw CLI::ConfigError(form);
    }
  }
  std::string spec;
  for (const auto& w : words) {
    if (w.find_first_of(" \t") != std::string::npos)
      throw CLI::ConfigError("--config: data path '" + w + "' contains a space; blends need paths without spaces "
                             "(or use a blend file: --data blend.yaml)");
    spec += (spec.empty() ? "" : " ") + w;
  }
  return spec;
}

}  // namespace

std::vector<CLI::ConfigItem> YamlConfig::from_config(std::istream& in) const {
  YAML::Node root;
  try {
    root = YAML::Load(in);
  } catch (const YAML::Exception& e) {
    throw CLI::ConfigError(std::string("--config: not valid YAML: ") + e.what());
  }
  std::vector<CLI::ConfigItem> items;
  if (root.IsNull()) return items;
  if (!root.IsMap()) throw CLI::ConfigError("--config: the YAML file must be a map of flag names to values");
  for (const auto& kv : root) {
    const std::string key = kv.first.as<std::string>();
    std::string flag = key;
    for (char& ch : flag)
      if (ch == '_') ch = '-';
    const CLI::Option* op = app_->get_option_no_throw("--" + flag);
    if (op == nullptr || flag == "config" || flag == "help")
      throw CLI::ConfigError("--config: unknown key '" + key + "' (keys are pp3d-train flag names without the "
                             "dashes, e.g. num_layers or num-layers; see --help)");
    CLI::ConfigItem item;
    item.name = flag;
    const YAML::Node& v = kv.second;
    if (v.IsScalar()) {
      item.inputs.push_back(v.Scalar());
    } else if (v.IsSequence() && flag == "data") {
      item.inputs.push_back(blend_list_to_spec(v));
    } else if (v.IsSequence()) {
      for (const auto& e : v) {
        if (!e.IsScalar()) throw CLI::ConfigError("--config: key '" + key + "' holds a nested list");
        item.inputs.push_back(e.Scalar());
      }
    } else if (v.IsMap() && (flag == "fp16" || flag == "bf16")) {
      // DeepSpeed-style sections: fp16: {enabled, initial_scale_power, loss_scale_window, hysteresis,
      // min_loss_scale}, bf16: {enabled} -> the --fp16 / --bf16 / loss-scaler flags.
      for (const auto& e : v) {
        const std::string sub = e.first.as<std::string>();
        if (!e.second.IsScalar()) throw CLI::ConfigError("--config: key '" + key + "." + sub + "' must hold a value");
        CLI::ConfigItem si;
        const std::string val = e.second.Scalar();
        if (sub == "enabled") {
          si.name = flag;
          si.inputs.push_back(val);
        } else if (flag == "fp16" && sub == "initial_scale_power") {
          si.name = "initial-loss-scale";
          si.inputs.push_back(std::to_string(std::ldexp(1.0, std::stoi(val))));
        } else if (flag == "fp16" && (sub == "loss_scale_window" || sub == "hysteresis" || sub == "min_loss_scale")) {
          si.name = sub == "loss_scale_window" ? "loss-scale-window" : sub == "hysteresis" ? "hysteresis" : "min-loss-scale";
          si.inputs.push_back(val);
        } else {
          throw CLI::ConfigError("--config: unknown key '" + key + "." + sub + "' (fp16: enabled, initial_scale_power, "
                                 "loss_scale_window, hysteresis, min_loss_scale; bf16: enabled)");
        }
        items.push_back(std::move(si));
      }
      continue;
    } else {
      throw CLI::ConfigError("--config: key '" + key + "' must hold a value or a list, not a map or null");
    }
    items.push_back(std::move(item));
  }
  return items;
}

namespace {

// Sets `field` from `value` unless the flag was given on the command line or in the YAML file.
template <typename T, typename V>
void set_unless_given(const CLI::App& app, const char* flag, T& field, V value) {
  if (app.get_option(flag)->count() == 0) field = static_cast<T>(value);
}

void reject_unknown(const nlohmann::json& obj, const std::set<std::string>& known, const std::string& where,
                    const std::string& path) {
  PP3D_REQUIRE(obj.is_object(), "--deepspeed-config '{}': {} must be a JSON object", path, where);
  for (const auto& [k, v] : obj.items())
    PP3D_REQUIRE(known.count(k) != 0, "--deepspeed-config '{}': unknown or unsupported key '{}{}' (supported: {})",
                 path, where.empty() ? "" : where + ".", k, fmt::format("{}", fmt::join(known, ", ")));
}

bool enabled(const nlohmann::json& j) { return j.is_object() && j.value("enabled", false); }

}  // namespace

void apply_deepspeed_config(const std::string& path, const CLI::App& app, TrainConfig& c) {
  std::ifstream in(path);
  PP3D_REQUIRE(in.good(), "--deepspeed-config '{}' cannot be read", path);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    PP3D_REQUIRE(false, "--deepspeed-config '{}' is not valid JSON: {}", path, e.what());
  }
  reject_unknown(j, {"train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                     "gradient_clipping", "steps_per_print", "optimizer", "zero_optimization", "fp16", "bf16",
                     "wall_clock_breakdown", "zero_allow_untested_optimizer"}, "", path);
  if (j.contains("bf16")) {
    reject_unknown(j["bf16"], {"enabled"}, "bf16", path);
    if (enabled(j["bf16"])) set_unless_given(app, "--bf16", c.bf16, true);
  }
  if (j.contains("fp16")) {
    const auto& f = j["fp16"];
    reject_unknown(f, {"enabled", "loss_scale", "initial_scale_power", "loss_scale_window", "hysteresis",
                       "min_loss_scale"}, "fp16", path);
    if (enabled(f)) {
      PP3D_REQUIRE(f.value("loss_scale", 0.0) == 0.0, "--deepspeed-config '{}': fp16.loss_scale {} (a static loss "
                   "scale) is not supported; pp3d uses dynamic loss scaling (loss_scale 0)", path,
                   f.value("loss_scale", 0.0));
      set_unless_given(app, "--fp16", c.fp16, true);
      if (f.contains("initial_scale_power"))
        set_unless_given(app, "--initial-loss-scale", c.loss_scaler.init_scale,
                         std::ldexp(1.0, f["initial_scale_power"].get<int>()));
      if (f.contains("loss_scale_window"))
        set_unless_given(app, "--loss-scale-window", c.loss_scaler.scale_window, f["loss_scale_window"].get<int64_t>());
      if (f.contains("hysteresis")) set_unless_given(app, "--hysteresis", c.loss_scaler.hysteresis, f["hysteresis"].get<int>());
      if (f.contains("min_loss_scale"))
        set_unless_given(app, "--min-loss-scale", c.loss_scaler.min_scale, f["min_loss_scale"].get<double>());
    }
  }
  if (j.contains("train_batch_size")) set_unless_given(app, "--global-batch-size", c.global_batch_size, j["train_batch_size"].get<int64_t>());
  if (j.contains("train_micro_batch_size_per_gpu"))
    set_unless_given(app, "--batch-size", c.micro_batch_size, j["train_micro_batch_size_per_gpu"].get<int64_t>());
  if (j.contains("gradient_accumulation_steps"))
    set_unless_given(app, "--micro-batches", c.micro_batches, j["gradient_accumulation_steps"].get<int64_t>());
  if (j.contains("gradient_clipping")) set_unless_given(app, "--grad-clip", c.grad_clip, j["gradient_clipping"].get<double>());
  if (j.contains("steps_per_print")) set_unless_given(app, "--log-interval", c.log_interval, j["steps_per_print"].get<int64_t>());
  if (j.contains("optimizer")) {
    const auto& o = j["optimizer"];
    reject_unknown(o, {"type", "params"}, "optimizer", path);
    const std::string type = o.value("type", "AdamW");
    PP3D_REQUIRE(type == "AdamW" || type == "Adam" || type == "adamw" || type == "adam",
                 "--deepspeed-config '{}': optimizer.type '{}' is not supported (pp3d trains with AdamW)", path, type);
    if (o.contains("params")) {
      const auto& p = o["params"];
      reject_unknown(p, {"lr", "eps", "weight_decay", "betas"}, "optimizer.params", path);
      if (p.contains("lr")) set_unless_given(app, "--lr", c.lr, p["lr"].get<double>());
      if (p.contains("eps")) set_unless_given(app, "--adam-eps", c.adam_eps, p["eps"].get<double>());
      if (p.contains("weight_decay")) set_unless_given(app, "--weight-decay", c.weight_decay, p["weight_decay"].get<double>());
      if (p.contains("betas")) {
        const auto b = p["betas"].get<std::vector<double>>();
        PP3D_REQUIRE(b.size() == 2 && std::fabs(b[0] - 0.9) < 1e-9 && std::fabs(b[1] - 0.95) < 1e-9,
                     "--deepspeed-config '{}': optimizer.params.betas must be [0.9, 0.95] (pp3d's AdamW betas)", path);
      }
    }
  }
  if (j.contains("zero_optimization")) {
    const auto& z = j["zero_optimization"];
    reject_unknown(z, {"stage", "reduce_bucket_size", "allgather_bucket_size", "overlap_comm", "contiguous_gradients",
                       "reduce_scatter", "stage3_prefetch_bucket_size"}, "zero_optimization", path);
    if (z.contains("stage")) set_unless_given(app, "--zero-stage", c.zero_stage, z["stage"].get<int>());
    // DeepSpeed bucket sizes count elements; pp3d's are MB of f32 (one bucket size for both directions).
    const char* bucket_key = z.contains("reduce_bucket_size") ? "reduce_bucket_size" : "allgather_bucket_size";
    if (z.contains(bucket_key))
      set_unless_given(app, "--bucket-size-mb", c.bucket_size_mb, z[bucket_key].get<double>() * 4.0 / 1e6);
    // pp3d always overlaps the reductions with backward and keeps gradients in contiguous buckets.
    PP3D_REQUIRE(z.value("reduce_scatter", true), "--deepspeed-config '{}': zero_optimization.reduce_scatter false "
                 "is not supported (pp3d reduce-scatters in ZeRO 1-3)", path);
    if (z.contains("stage3_prefetch_bucket_size")) {
      // Elements -> whole layers of this model (12 C^2 + 13 C parameters per layer, / tp).
      const double per_layer = (12.0 * c.hidden_size * c.hidden_size + 13.0 * c.hidden_size) / c.tp;
      const double elems = z["stage3_prefetch_bucket_size"].get<double>();
      const auto layers = elems <= 0 ? 0 : static_cast<int>(std::min<double>(std::ceil(elems / per_layer), c.num_layers));
      set_unless_given(app, "--prefetch-layers", c.prefetch_layers, layers);
    }
  }
}

}  // namespace pp3d::cli
