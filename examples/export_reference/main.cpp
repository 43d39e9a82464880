// pp3d-export-reference OUT.bin
//
// Writes the inputs of the PyTorch reference (tools/make_reference.py): the
// model config, the optimizer settings, the tokens and every initial parameter
// of pp3d's deterministic GPT init (seed 1337), in the record format described
// in tools/README.md. The C++ test (tests/unit/gpt_reference_test.cpp)
// re-creates the same weights from the seed, so the committed fixture only
// holds torch's outputs plus the config and tokens.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "pp3d/backend/backend.h"
#include "pp3d/core/rng.h"
#include "pp3d/model/gpt.h"

namespace {

struct Writer {
  std::FILE* f;
  std::vector<std::pair<std::string, std::vector<char>>> recs;
  void add(const std::string& name, uint32_t dtype, const std::vector<int64_t>& dims, const void* data,
           std::size_t bytes) {
    std::vector<char> r;
    auto put = [&](const void* p, std::size_t n) { r.insert(r.end(), (const char*)p, (const char*)p + n); };
    const uint32_t nl = static_cast<uint32_t>(name.size()), nd = static_cast<uint32_t>(dims.size());
    put(&nl, 4);
    put(name.data(), nl);
    put(&dtype, 4);
    put(&nd, 4);
    put(dims.data(), 8 * nd);
    put(data, bytes);
    recs.emplace_back(name, std::move(r));
  }
  void f32(const std::string& name, const std::vector<int64_t>& dims, const std::vector<float>& v) {
    add(name, 0, dims, v.data(), v.size() * 4);
  }
  void i32(const std::string& name, const std::vector<int64_t>& dims, const std::vector<int32_t>& v) {
    add(name, 1, dims, v.data(), v.size() * 4);
  }
  void write() {
    std::fwrite("PP3DREF1", 1, 8, f);
    const uint32_t n = static_cast<uint32_t>(recs.size());
    std::fwrite(&n, 4, 1, f);
    for (auto& [name, r] : recs) std::fwrite(r.data(), 1, r.size(), f);
  }
};

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT.bin\n", argv[0]);
    return 2;
  }
  try {
    // The reference configuration (the fixture records it; the test reads it back).
    const int64_t L = 2, C = 64, H = 4, V = 251, T = 16, B = 4, max_seq = 32, seed = 1337;
    pp3d::GptConfig cfg;
    cfg.vocab_size = V;
    cfg.max_seq_len = max_seq;
    cfg.num_layers = L;
    cfg.num_heads = H;
    cfg.hidden_size = C;
    // Larger than GPT-2's 0.02/0.01 so that every nonlinearity (GELU's cubic
    // term, softmax, LayerNorm) is far from linear and a wrong constant shows.
    cfg.init_std = 0.25f;
    cfg.wpe_init_std = 0.25f;
    cfg.validate();
    auto be = pp3d::make_cpu_backend();
    pp3d::GptOptions opts;
    opts.seed = static_cast<uint64_t>(seed);
    pp3d::Gpt model(cfg, *be, {}, opts);

    Writer w{std::fopen(argv[1], "wb"), {}};
    if (w.f == nullptr) {
      std::fprintf(stderr, "cannot open %s for writing\n", argv[1]);
      return 1;
    }
    w.i32("config", {9}, {(int32_t)L, (int32_t)C, (int32_t)H, (int32_t)V, (int32_t)cfg.padded_vocab(), (int32_t)T,
                          (int32_t)B, (int32_t)max_seq, (int32_t)seed});
    w.f32("init_std", {2}, {cfg.init_std, cfg.wpe_init_std});
    // lr, beta1, beta2, eps, weight_decay (matrices only), max grad norm, steps
    w.f32("adamw", {7}, {1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 1.0f, 5.0f});
    // B rows of T+1 tokens: ids = tokens[:, :T], targets = tokens[:, 1:]. A
    // repeating pattern plus noise, so that the loss visibly drops in 5 steps.
    std::vector<int32_t> tok(static_cast<std::size_t>(B * (T + 1)));
    const uint64_t key = pp3d::rng_key(static_cast<uint64_t>(seed), "reference_tokens");
    for (std::size_t i = 0; i < tok.size(); ++i) {
      const float u = pp3d::rng_uniform(key, i);
      tok[i] = u < 0.5f ? static_cast<int32_t>((i * 7) % V) : static_cast<int32_t>(u * 2.0f * (V - 1)) % V;
    }
    w.i32("tokens", {B, T + 1}, tok);
    for (pp3d::Parameter* p : model.parameters()) w.f32("init/" + p->name, p->global_shape, p->value.to_vector());
    w.write();
    std::fclose(w.f);
    std::printf("wrote %zu records to %s\n", w.recs.size(), argv[1]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
