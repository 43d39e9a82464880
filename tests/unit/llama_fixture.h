// The weights of tools/make_llama_fixture.py's Llama (shared by the f32 and the
// 16-bit reference tests): a pure function of (parameter name, element index).
#pragma once

#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "pp3d/model/llama.h"
#include "reference_fixture.h"

namespace pp3d::test {

inline uint64_t fnv1a64(const std::string& s) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001B3ull;
  return h;
}

// tools/make_llama_fixture.py: fixture_value (splitmix64 of fnv1a64(name) + e).
inline std::vector<float> llama_fixture_value(const std::string& name, int64_t n, bool norm, double wscale,
                                              double nscale) {
  std::vector<float> out(static_cast<std::size_t>(n));
  const uint64_t base = fnv1a64(name);
  for (int64_t e = 0; e < n; ++e) {
    uint64_t z = base + static_cast<uint64_t>(e) + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    const double u = static_cast<double>(z >> 11) * 0x1.0p-53;
    out[static_cast<std::size_t>(e)] = static_cast<float>(norm ? 1.0 + nscale * (2.0 * u - 1.0) : wscale * (2.0 * u - 1.0));
  }
  return out;
}

// Sets every parameter of a whole (unsharded) Llama to the fixture's weights,
// rounded to the parameter dtype (Tensor::fill_from); vocabulary padding rows are zero.
// The scales come from an f32 record: snapped back to the script's decimal
// constants (0.17, 0.1), so every value is the script's f32 value bitwise (a
// 1-ulp f32 difference would flip some 16-bit roundings of the weights).
inline void set_llama_fixture_weights(Llama& m, double wscale, double nscale) {
  wscale = std::round(wscale * 1e6) / 1e6;
  nscale = std::round(nscale * 1e6) / 1e6;
  for (Parameter* p : m.parameters()) {
    const bool norm = p->global_shape.size() == 1;
    const int64_t rows =
        p->global_shape[0] == m.config().padded_vocab_size ? m.config().vocab_size : p->global_shape[0];
    const int64_t cols = norm ? 1 : p->global_shape[1];
    std::vector<float> v = llama_fixture_value(p->name, rows * cols, norm, wscale, nscale);
    v.resize(static_cast<std::size_t>(p->value.numel()), 0.0f);
    p->value.fill_from(v);
  }
}

// The model of a make_llama_fixture.py-family fixture ("config": L, C, Hq, Hkv,
// F, V, B, T; "config_f": rope theta, norm eps, weight and norm scales); untied.
inline LlamaConfig llama_fixture_config(const std::map<std::string, Record>& fx) {
  const auto& c = fx.at("config").i;
  const auto& cf = fx.at("config_f").f;
  LlamaConfig cfg;
  cfg.num_layers = c[0];
  cfg.hidden_size = c[1];
  cfg.num_heads = c[2];
  cfg.num_kv_heads = c[3];
  cfg.mlp_hidden_size = c[4];
  cfg.vocab_size = c[5];
  cfg.max_seq_len = c[7];
  cfg.rope_theta = cf[0];
  cfg.norm_eps = cf[1];
  cfg.tied_embeddings = false;
  return cfg;
}

}  // namespace pp3d::test
