// Reader of the PyTorch reference fixtures (tests/fixtures/*.bin, written by
// tools/make_reference.py and tools/make_llama_fixture.py; format in
// tools/README.md): named f32 / i32 records with their dims.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include "pp3d/core/tensor.h"
#include "pp3d/model/gpt_config.h"
#include "pp3d/optim/optimizer.h"

namespace pp3d::test {

struct Record {
  std::vector<int64_t> dims;
  std::vector<float> f;
  std::vector<int32_t> i;
};

inline std::map<std::string, Record> read_fixture(const std::string& path) {
  std::FILE* fp = std::fopen(path.c_str(), "rb");
  REQUIRE(fp != nullptr);
  auto rd = [&](void* p, std::size_t n) { REQUIRE(std::fread(p, 1, n, fp) == n); };
  char magic[8];
  rd(magic, 8);
  REQUIRE(std::memcmp(magic, "PP3DREF1", 8) == 0);
  uint32_t n = 0;
  rd(&n, 4);
  std::map<std::string, Record> out;
  for (uint32_t r = 0; r < n; ++r) {
    uint32_t nl = 0, dtype = 0, nd = 0;
    rd(&nl, 4);
    std::string name(nl, '\0');
    rd(name.data(), nl);
    rd(&dtype, 4);
    rd(&nd, 4);
    Record rec;
    rec.dims.resize(nd);
    rd(rec.dims.data(), 8 * nd);
    int64_t count = 1;
    for (int64_t d : rec.dims) count *= d;
    if (dtype == 0) {
      rec.f.resize(static_cast<std::size_t>(count));
      rd(rec.f.data(), 4 * count);
    } else {
      rec.i.resize(static_cast<std::size_t>(count));
      rd(rec.i.data(), 4 * count);
    }
    out.emplace(name, std::move(rec));
  }
  std::fclose(fp);
  return out;
}

// ||got - ref|| / ||ref|| in double (||got - ref|| when ref is all zeros).
inline double ref_rel_l2(const std::vector<float>& got, const std::vector<float>& ref) {
  REQUIRE(got.size() == ref.size());
  double num = 0, den = 0;
  for (std::size_t k = 0; k < got.size(); ++k) {
    const double d = static_cast<double>(got[k]) - ref[k];
    num += d * d;
    den += static_cast<double>(ref[k]) * ref[k];
  }
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

// PP3D_REF_VERBOSE=1 prints every compared quantity (to see the margins).
inline void report_margin(const std::string& what, double rel) {
  static const bool verbose = std::getenv("PP3D_REF_VERBOSE") != nullptr;
  if (verbose) std::printf("%-40s rel diff %.3e\n", what.c_str(), rel);
}

// The GPT config of a make_reference.py-family fixture ("config", "init_std" records).
inline GptConfig fixture_gpt_config(const std::map<std::string, Record>& fx) {
  const auto& c = fx.at("config").i;
  GptConfig cfg;
  cfg.num_layers = c[0];
  cfg.hidden_size = c[1];
  cfg.num_heads = c[2];
  cfg.vocab_size = c[3];
  cfg.padded_vocab_size = c[4];
  cfg.max_seq_len = c[7];
  cfg.init_std = fx.at("init_std").f[0];
  cfg.wpe_init_std = fx.at("init_std").f[1];
  return cfg;
}

// The fixture's "tokens" [B, T+1] as ids = [:, :T] and targets = [:, 1:] ([B, T] i32 tensors).
inline std::pair<Tensor, Tensor> fixture_batch(const std::map<std::string, Record>& fx) {
  const auto& c = fx.at("config").i;
  const int64_t T = c[5], B = c[6];
  const auto& tok = fx.at("tokens").i;
  std::vector<int32_t> ids, tgt;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      ids.push_back(tok[static_cast<std::size_t>(b * (T + 1) + t)]);
      tgt.push_back(tok[static_cast<std::size_t>(b * (T + 1) + t + 1)]);
    }
  return {Tensor::from_vector_i32({B, T}, ids), Tensor::from_vector_i32({B, T}, tgt)};
}

// The fixture's "adamw" record (lr, beta1, beta2, eps, weight_decay, max_norm, steps) as a config.
inline AdamWConfig fixture_adamw(const std::vector<float>& a) {
  AdamWConfig c;
  c.beta1 = a.at(1);
  c.beta2 = a.at(2);
  c.eps = a.at(3);
  c.weight_decay = a.at(4);
  return c;
}

// A pp3d training run compared with a mixed-precision reference's records
// "<prefix>loss", "<prefix>grad/<name>", "<prefix>losses", "<prefix>final_loss"
// and, when the run has logits, "<prefix>logits" (tools/make_bf16_reference.py,
// tools/make_llama_bf16_reference.py).
struct ReferenceRun {
  double loss0 = 0, final_loss = 0;
  std::vector<float> logits;  // empty: not compared
  std::map<std::string, std::vector<float>> grads;
  std::vector<double> losses;
};

struct ReferenceErrors {
  double loss = 0, logits = 0, grad_worst = 0, grad_all = 0, step_loss = 0, final_loss = 0;
};

// Relative errors of `r` against the records under `prefix`, each reported
// (PP3D_REF_VERBOSE) as "<tag> vs <prefix> <what>".
inline ReferenceErrors compare_to_reference(const std::map<std::string, Record>& fx, const ReferenceRun& r,
                                            const std::string& prefix, const std::string& tag) {
  ReferenceErrors e;
  const double ref0 = fx.at(prefix + "loss").f[0];
  e.loss = std::fabs(r.loss0 - ref0) / ref0;
  if (!r.logits.empty()) e.logits = ref_rel_l2(r.logits, fx.at(prefix + "logits").f);
  std::vector<float> all, all_ref;
  for (const auto& [name, got] : r.grads) {
    const auto& g = fx.at(prefix + "grad/" + name).f;
    e.grad_worst = std::max(e.grad_worst, ref_rel_l2(got, g));
    all.insert(all.end(), got.begin(), got.end());
    all_ref.insert(all_ref.end(), g.begin(), g.end());
  }
  e.grad_all = ref_rel_l2(all, all_ref);
  const auto& losses = fx.at(prefix + "losses").f;
  REQUIRE(losses.size() == r.losses.size());
  for (std::size_t s = 0; s < losses.size(); ++s)
    e.step_loss = std::max(e.step_loss, std::fabs(r.losses[s] - losses[s]) / losses[s]);
  const double ref_final = fx.at(prefix + "final_loss").f[0];
  e.final_loss = std::fabs(r.final_loss - ref_final) / ref_final;
  const std::string t = tag + " vs " + prefix;
  report_margin(t + " loss", e.loss);
  if (!r.logits.empty()) report_margin(t + " logits", e.logits);
  report_margin(t + " worst grad", e.grad_worst);
  report_margin(t + " all grads", e.grad_all);
  report_margin(t + " worst step loss", e.step_loss);
  report_margin(t + " final loss", e.final_loss);
  return e;
}

}  // namespace pp3d::test
