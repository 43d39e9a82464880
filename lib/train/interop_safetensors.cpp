// safetensors export with Hugging Face GPT-2 names (Conv1D weights [in, out]).
#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "pp3d/core/error.h"
#include "pp3d/train/interop.h"
#include "train/interop_internal.h"

namespace pp3d {

namespace {

struct OutTensor {
  std::string name;
  Shape shape;
  std::vector<float> data;
};

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// HF GPT-2 Conv1D layers store weight as [in, out]; pp3d (and llm.c) store [out, in].
bool is_conv1d_weight(const std::string& name) {
  return ends_with(name, "attn.c_attn.weight") || ends_with(name, "attn.c_proj.weight") ||
         ends_with(name, "mlp.c_fc.weight") || ends_with(name, "mlp.c_proj.weight");
}

OutTensor convert(const Parameter& p, const GptConfig& cfg) {
  detail::check_unsharded(p, "export_safetensors");
  OutTensor t;
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
  std::vector<OutTensor> tensors;
  for (const Parameter* p : params) {
    bool dup = false;  // a head stage's tied wte copy would repeat the name
    for (const auto& t : tensors) dup = dup || (p->name == "wte" && t.name == "wte.weight");
    if (!dup) tensors.push_back(convert(*p, cfg));
  }
  PP3D_CHECK(!tensors.empty(), "export_safetensors: no parameters to write");
  nlohmann::ordered_json header;
  header["__metadata__"] = {{"format", "pt"}, {"producer", "pp3d"}};
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    const uint64_t bytes = 4 * t.data.size();
    header[t.name] = {{"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string hs = header.dump();
  hs.append((8 - hs.size() % 8) % 8, ' ');  // keep the data 8-byte aligned
  const uint64_t n = hs.size();
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));  // little endian
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  PP3D_CHECK(out.good(), "cannot open '{}' for writing", path);
  out.write(reinterpret_cast<const char*>(len), 8);
  out.write(hs.data(), static_cast<std::streamsize>(hs.size()));
  for (const auto& t : tensors)
    out.write(reinterpret_cast<const char*>(t.data.data()), static_cast<std::streamsize>(4 * t.data.size()));
  PP3D_CHECK(out.good(), "write error on '{}'", path);
}

}  // namespace pp3d
