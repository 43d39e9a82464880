// Hugging Face config.json + model.safetensors for pp3d::Llama (public headers only).
#include "pp3d/model/llama_hf.h"

#include <filesystem>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "pp3d/core/error.h"
#include "pp3d/core/safetensors.h"

namespace pp3d {

namespace {

namespace fs = std::filesystem;

// The HF shape of a parameter: vocabulary-padded tensors hold vocab_size rows there.
Shape hf_shape(const Parameter& p, const LlamaConfig& c) {
  Shape s = p.global_shape;
  if (s.size() == 2 && s[0] == c.padded_vocab_size &&
      (p.name == "model.embed_tokens.weight" || p.name == "lm_head.weight"))
    s[0] = c.vocab_size;
  return s;
}

}  // namespace

LlamaConfig load_llama_hf_config(const std::string& dir) {
  const std::string path = (fs::path(dir) / "config.json").string();
  std::ifstream in(path);
  PP3D_CHECK(in.good(), "cannot open '{}' (a Hugging Face Llama directory needs config.json)", path);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    PP3D_FAIL("'{}': {}", path, e.what());
  }
  auto req = [&](const char* key) {
    PP3D_CHECK(j.contains(key) && j[key].is_number_integer(), "'{}': missing integer key '{}'", path, key);
    return j[key].get<int64_t>();
  };
  LlamaConfig c;
  c.hidden_size = req("hidden_size");
  c.mlp_hidden_size = req("intermediate_size");
  c.num_heads = req("num_attention_heads");
  c.num_layers = req("num_hidden_layers");
  c.vocab_size = req("vocab_size");
  c.num_kv_heads = j.value("num_key_value_heads", c.num_heads);
  c.max_seq_len = j.value("max_position_embeddings", int64_t{2048});
  c.norm_eps = j.value("rms_norm_eps", 1e-6f);
  c.rope_theta = j.value("rope_theta", 10000.0f);
  c.tied_embeddings = j.value("tie_word_embeddings", false);
  PP3D_CHECK(j.value("hidden_act", std::string("silu")) == "silu", "'{}': hidden_act '{}' (pp3d's Llama uses silu)",
             path, j.value("hidden_act", std::string()));
  PP3D_CHECK(!j.value("attention_bias", false) && !j.value("mlp_bias", false),
             "'{}': attention_bias / mlp_bias are not implemented (pp3d's Llama has no biases)", path);
  PP3D_CHECK(!j.contains("rope_scaling") || j["rope_scaling"].is_null(),
             "'{}': rope_scaling {} is not implemented (plain RoPE only)", path,
             j.contains("rope_scaling") ? j["rope_scaling"].dump() : "");
  PP3D_CHECK(!j.contains("head_dim") || j["head_dim"].is_null() || j["head_dim"].get<int64_t>() == c.head_dim(),
             "'{}': head_dim {} differs from hidden_size / num_attention_heads = {} (not implemented)", path,
             j.contains("head_dim") ? j["head_dim"].dump() : "", c.head_dim());
  c.validate();
  return c;
}

void save_llama_hf(const std::string& dir, const LlamaConfig& config, const std::vector<Parameter*>& params) {
  const LlamaConfig c = config.resolved();
  fs::create_directories(dir);
  std::vector<SafeTensor> tensors;
  std::map<std::string, bool> seen;
  for (const Parameter* p : params) {
    if (seen[p->name]) continue;  // a tied head's copy of embed_tokens
    seen[p->name] = true;
    PP3D_CHECK(p->value.shape() == p->global_shape,
               "save_llama_hf needs whole tensors, but '{}' is a shard ({} of {}); save from a tp = 1 model",
               p->name, shape_str(p->value.shape()), shape_str(p->global_shape));
    SafeTensor t{p->name, hf_shape(*p, c), {}};
    t.data = p->value.device().is_cpu() ? p->value.to_vector() : p->value.to(Device::cpu()).to_vector();
    t.data.resize(static_cast<std::size_t>(shape_numel(t.shape)));  // drop the vocabulary padding rows
    tensors.push_back(std::move(t));
  }
  const std::size_t expected = 3 + 9 * static_cast<std::size_t>(c.num_layers) - (c.tied_embeddings ? 1 : 0);
  PP3D_CHECK(tensors.size() == expected, "save_llama_hf: {} tensors given, a whole {}-layer model has {}",
             tensors.size(), c.num_layers, expected);
  write_safetensors((fs::path(dir) / "model.safetensors").string(), tensors);
  nlohmann::ordered_json j;
  j["architectures"] = {"LlamaForCausalLM"};
  j["model_type"] = "llama";
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.mlp_hidden_size;
  j["num_attention_heads"] = c.num_heads;
  j["num_key_value_heads"] = c.num_kv_heads;
  j["num_hidden_layers"] = c.num_layers;
  j["vocab_size"] = c.vocab_size;
  j["max_position_embeddings"] = c.max_seq_len;
  j["rms_norm_eps"] = c.norm_eps;
  j["rope_theta"] = c.rope_theta;
  j["tie_word_embeddings"] = c.tied_embeddings;
  j["hidden_act"] = "silu";
  j["attention_bias"] = false;
  j["mlp_bias"] = false;
  j["torch_dtype"] = "float32";
  std::ofstream out(fs::path(dir) / "config.json");
  out << j.dump(2) << "\n";
  PP3D_CHECK(out.good(), "write error on '{}/config.json'", dir);
}

void load_llama_hf(const std::string& dir, const LlamaConfig& config, const std::vector<Parameter*>& params) {
  const LlamaConfig c = config.resolved();
  const std::string path = (fs::path(dir) / "model.safetensors").string();
  const std::map<std::string, SafeTensor> file = read_safetensors(path);
  for (Parameter* p : params) {
    const auto it = file.find(p->name);
    PP3D_CHECK(it != file.end(), "'{}' has no tensor '{}'", path, p->name);
    const Shape want = hf_shape(*p, c);
    PP3D_CHECK(it->second.shape == want, "'{}': tensor '{}' is {}, the model needs {}", path, p->name,
               shape_str(it->second.shape), shape_str(want));
    std::vector<float> full = it->second.data;
    full.resize(static_cast<std::size_t>(shape_numel(p->global_shape)), 0.0f);  // zero padding rows
    // This rank's slice (rows for dim 0, columns for dim 1; one segment).
    std::vector<float> local;
    const int64_t rows = p->global_shape[0], cols = p->global_shape.size() > 1 ? p->global_shape[1] : 1;
    const ShardSpec& s = p->shard;
    PP3D_CHECK(s.segments == 1, "load_llama_hf: '{}' has {} shard segments (expected 1)", p->name, s.segments);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t k = 0; k < cols; ++k) {
        const int64_t idx = s.dim == 0 ? r : s.dim == 1 ? k : s.offset;
        if (!s.sharded() || (idx >= s.offset && idx < s.offset + s.length))
          local.push_back(full[static_cast<std::size_t>(r * cols + k)]);
      }
    PP3D_CHECK(static_cast<int64_t>(local.size()) == p->value.numel(), "load_llama_hf: '{}' slice has {} values, "
               "the shard {}", p->name, local.size(), p->value.numel());
    Tensor host = Tensor::empty(p->value.shape(), p->value.dtype());
    host.fill_from(local);
    p->value.copy_from(host);
  }
}

}  // namespace pp3d
