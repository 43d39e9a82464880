#include "pp3d/plan/model_file.h"

#include <yaml-cpp/yaml.h>

#include <set>

#include "pp3d/core/error.h"
#include "pp3d/model/arch_config.h"

namespace pp3d {

namespace {

const std::set<std::string> kRequired = {"num_layers", "hidden_size", "num_heads", "vocab_size", "seq_len"};
const std::set<std::string> kOptionalGpt = {"padded_vocab_size", "mlp_hidden_size", "tied_embeddings", "ln_eps",
                                            "init_std"};
const std::set<std::string> kOptionalLlama = {"padded_vocab_size", "mlp_hidden_size", "tied_embeddings",
                                              "num_kv_heads",      "rope_theta",      "norm_eps",
                                              "init_std"};

std::string joined(const std::set<std::string>& a, const std::set<std::string>& b) {
  std::string out;
  for (const auto* s : {&a, &b})
    for (const auto& k : *s) out += (out.empty() ? "" : ", ") + k;
  return out;
}

}  // namespace

GptConfig load_gpt_config_yaml(const std::string& path) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    PP3D_FAIL("cannot read model file '{}': {}", path, e.what());
  }
  PP3D_CHECK(root.IsMap(), "model file '{}' must be a YAML map of key: value", path);
  const std::string arch = root["arch"] ? root["arch"].as<std::string>() : "gpt2";
  PP3D_CHECK(arch == "gpt2" || arch == "llama", "model file '{}': arch '{}' is not one of gpt2, llama", path, arch);
  const bool llama = arch == "llama";
  const std::set<std::string>& optional = llama ? kOptionalLlama : kOptionalGpt;
  for (const auto& kv : root) {
    const auto key = kv.first.as<std::string>();
    if (key == "arch") continue;
    PP3D_CHECK(kRequired.count(key) || optional.count(key), "model file '{}': unknown key '{}' for arch {} (known: {})",
               path, key, arch, joined(kRequired, optional));
  }
  for (const auto& key : kRequired) PP3D_CHECK(root[key], "model file '{}': missing key '{}'", path, key);
  PP3D_CHECK(!llama || root["mlp_hidden_size"], "model file '{}': arch llama needs mlp_hidden_size (SwiGLU width)",
             path);
  auto get_int = [&](const char* key) -> int64_t {
    try {
      return root[key].as<int64_t>();
    } catch (const YAML::Exception&) {
      PP3D_FAIL("model file '{}': key '{}' must be an integer", path, key);
    }
  };
  GptConfig cfg;
  cfg.arch = llama ? ModelArch::Llama : ModelArch::Gpt2;
  cfg.tied_embeddings = !llama;  // Llama: untied unless the file says otherwise
  cfg.num_layers = get_int("num_layers");
  cfg.hidden_size = get_int("hidden_size");
  cfg.num_heads = get_int("num_heads");
  cfg.vocab_size = get_int("vocab_size");
  cfg.max_seq_len = get_int("seq_len");
  if (root["padded_vocab_size"]) cfg.padded_vocab_size = get_int("padded_vocab_size");
  if (root["mlp_hidden_size"]) cfg.mlp_hidden_size = get_int("mlp_hidden_size");
  if (root["num_kv_heads"]) cfg.num_kv_heads = get_int("num_kv_heads");
  try {
    if (root["tied_embeddings"]) cfg.tied_embeddings = root["tied_embeddings"].as<bool>();
    if (root["ln_eps"]) cfg.ln_eps = root["ln_eps"].as<float>();
    if (root["norm_eps"]) cfg.ln_eps = root["norm_eps"].as<float>();
    if (root["init_std"]) cfg.init_std = root["init_std"].as<float>();
    if (root["rope_theta"]) PP3D_CHECK(root["rope_theta"].as<float>() > 0, "rope_theta must be > 0");
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

GptConfig llama_plan_config(const LlamaConfig& llama) { return to_gpt_config(llama); }

}  // namespace pp3d
