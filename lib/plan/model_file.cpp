#include "pp3d/plan/model_file.h"

#include <yaml-cpp/yaml.h>

#include <set>

#include "pp3d/core/error.h"

namespace pp3d {

GptConfig load_gpt_config_yaml(const std::string& path) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    PP3D_FAIL("cannot read model file '{}': {}", path, e.what());
  }
  PP3D_CHECK(root.IsMap(), "model file '{}' must be a YAML map of key: value", path);
  static const std::set<std::string> required = {"num_layers", "hidden_size", "num_heads", "vocab_size", "seq_len"};
  static const std::set<std::string> optional = {"padded_vocab_size", "mlp_hidden_size", "tied_embeddings", "ln_eps",
                                                 "init_std"};
  PP3D_CHECK(!root["arch"] || root["arch"].as<std::string>() == "gpt2",
             "model file '{}' describes arch '{}': the planner models GPT-2-style models only so far (docs/LLAMA.md)",
             path, root["arch"] ? root["arch"].as<std::string>() : "");
  for (const auto& kv : root) {
    const auto key = kv.first.as<std::string>();
    if (key == "arch") continue;
    PP3D_CHECK(required.count(key) || optional.count(key),
               "model file '{}': unknown key '{}' (known: num_layers, hidden_size, num_heads, vocab_size, seq_len, "
               "padded_vocab_size, mlp_hidden_size, tied_embeddings, ln_eps, init_std)",
               path, key);
  }
  for (const auto& key : required) PP3D_CHECK(root[key], "model file '{}': missing key '{}'", path, key);
  auto get_int = [&](const char* key) -> int64_t {
    try {
      return root[key].as<int64_t>();
    } catch (const YAML::Exception&) {
      PP3D_FAIL("model file '{}': key '{}' must be an integer", path, key);
    }
  };
  GptConfig cfg;
  cfg.num_layers = get_int("num_layers");
  cfg.hidden_size = get_int("hidden_size");
  cfg.num_heads = get_int("num_heads");
  cfg.vocab_size = get_int("vocab_size");
  cfg.max_seq_len = get_int("seq_len");
  if (root["padded_vocab_size"]) cfg.padded_vocab_size = get_int("padded_vocab_size");
  if (root["mlp_hidden_size"]) cfg.mlp_hidden_size = get_int("mlp_hidden_size");
  try {
    if (root["tied_embeddings"]) cfg.tied_embeddings = root["tied_embeddings"].as<bool>();
    if (root["ln_eps"]) cfg.ln_eps = root["ln_eps"].as<float>();
    if (root["init_std"]) cfg.init_std = root["init_std"].as<float>();
  } catch (const YAML::Exception& e) {
    PP3D_FAIL("model file '{}': bad value: {}", path, e.what());
  }
  try {
    cfg.validate();
  } catch (const Error& e) {
    PP3D_FAIL("model file '{}': {}", path, e.what());
  }
  return cfg;
}

}  // namespace pp3d
