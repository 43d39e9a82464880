// safetensors export with Hugging Face GPT-2 names (Conv1D weights [in, out]).
#include <cstdint>
#include <string>
#include <vector>

#include "pp3d/core/error.h"
#include "pp3d/core/safetensors.h"
#include "pp3d/train/interop.h"
#include "train/interop_internal.h"

namespace pp3d {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// HF GPT-2 Conv1D layers store weight as [in, out]; pp3d (and llm.c) store [out, in].
bool is_conv1d_weight(const std::string& name) {
  return ends_with(name, "attn.c_attn.weight") || ends_with(name, "attn.c_proj.weight") ||
         ends_with(name, "mlp.c_fc.weight") || ends_with(name, "mlp.c_proj.weight");
}

SafeTensor convert(const Parameter& p, const GptConfig& cfg) {
  detail::check_unsharded(p, "export_safetensors");
  SafeTensor t;
  std::vector<float> v = detail::host_values(p);
  if (p.name == "wte" || p.name == "lm_head.weight") {
    const int64_t C = p.global_shape[1];
    t.name = p.name == "wte" ? "wte.weight" : p.name;
    t.shape = {cfg.vocab_size, C};
    v.resize(static_cast<std::size_t>(cfg.vocab_size * C));  // drop the padding rows
    t.data = std::move(v);
  } else if (p.name == "wpe") {
    t.name = "wpe.weight";
    t.shape = p.global_shape;
    t.data = std::move(v);
  } else if (is_conv1d_weight(p.name)) {
    const int64_t out = p.global_shape[0], in = p.global_shape[1];
    t.name = p.name;
    t.shape = {in, out};
    t.data.resize(v.size());
    for (int64_t o = 0; o < out; ++o)
      for (int64_t i = 0; i < in; ++i) t.data[static_cast<std::size_t>(i * out + o)] = v[static_cast<std::size_t>(o * in + i)];
  } else {
    t.name = p.name;
    t.shape = p.global_shape;
    t.data = std::move(v);
  }
  return t;
}

}  // namespace

void export_safetensors(const std::string& path, const GptConfig& config, const std::vector<Parameter*>& params) {
  const GptConfig cfg = config.resolved();
  std::vector<SafeTensor> tensors;
  for (const Parameter* p : params) {
    bool dup = false;  // a head stage's tied wte copy would repeat the name
    for (const auto& t : tensors) dup = dup || (p->name == "wte" && t.name == "wte.weight");
    if (!dup) tensors.push_back(convert(*p, cfg));
  }
  PP3D_CHECK(!tensors.empty(), "export_safetensors: no parameters to write");
  write_safetensors(path, tensors);
}

}  // namespace pp3d
