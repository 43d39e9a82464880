// Layout-independent parameter initialisation: shards equal slices of the full tensor.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <vector>

#include "pp3d/backend/backend.h"
#include "pp3d/core/rng.h"
#include "pp3d/model/gpt.h"

using namespace pp3d;

namespace {
// Rows [r0, r1) x cols [c0, c1) of a row-major [*, cols] matrix.
std::vector<float> block(const std::vector<float>& full, int64_t cols, int64_t r0, int64_t r1, int64_t c0,
                         int64_t c1) {
  std::vector<float> out;
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t c = c0; c < c1; ++c) out.push_back(full[static_cast<std::size_t>(r * cols + c)]);
  return out;
}
}  // namespace

TEST_CASE("init: a row or column shard equals that slice of the full tensor", "[model][init]") {
  const InitSpec init{InitKind::Normal, 0.5f, 0.02f};
  const Tensor full = make_initial_values({12, 7}, {}, init, 42, "h.0.mlp.c_fc.weight");
  const auto f = full.to_vector();
  // the full tensor is the documented formula, element by element
  const uint64_t key = rng_key(42, "h.0.mlp.c_fc.weight");
  for (std::size_t i = 0; i < f.size(); ++i) REQUIRE(f[i] == 0.5f + 0.02f * rng_normal(key, i));
  const Tensor rows = make_initial_values({12, 7}, {0, 3, 5, 1}, init, 42, "h.0.mlp.c_fc.weight");
  CHECK(rows.shape() == Shape{5, 7});
  CHECK(rows.to_vector() == block(f, 7, 3, 8, 0, 7));
  const Tensor cols = make_initial_values({12, 7}, {1, 2, 4, 1}, init, 42, "h.0.mlp.c_fc.weight");
  CHECK(cols.shape() == Shape{12, 4});
  CHECK(cols.to_vector() == block(f, 7, 0, 12, 2, 6));
  // fused q|k|v: the same rows of each of the 3 segments, concatenated
  const Tensor seg = make_initial_values({12, 7}, {0, 1, 2, 3}, init, 42, "h.0.mlp.c_fc.weight");
  std::vector<float> expect = block(f, 7, 1, 3, 0, 7);
  for (int s = 1; s < 3; ++s) {
    auto b = block(f, 7, 4 * s + 1, 4 * s + 3, 0, 7);
    expect.insert(expect.end(), b.begin(), b.end());
  }
  CHECK(seg.to_vector() == expect);
  // names and seeds give different streams
  CHECK(make_initial_values({12, 7}, {}, init, 43, "h.0.mlp.c_fc.weight").to_vector() != f);
  CHECK(make_initial_values({12, 7}, {}, init, 42, "h.1.mlp.c_fc.weight").to_vector() != f);
  CHECK_THROWS_WITH(make_initial_values({12, 7}, {0, 3, 10, 1}, init, 42, "x"), Catch::Contains("exceeds"));
}

TEST_CASE("init: tensor-parallel shards of every GPT parameter equal slices of the serial model", "[model][init]") {
  auto be = make_cpu_backend();
  GptConfig cfg;
  cfg.vocab_size = 30;
  cfg.padded_vocab_size = 32;
  cfg.max_seq_len = 8;
  cfg.num_layers = 2;
  cfg.num_heads = 4;
  cfg.hidden_size = 16;
  Gpt serial(cfg, *be);
  const int64_t C = 16, F = 64, V = 32;
  for (int tp : {2, 4}) {
    for (int r = 0; r < tp; ++r) {
      GptLayout l;
      l.tp_size = tp;
      l.tp_rank = r;
      Gpt shard(cfg, *be, l);
      REQUIRE(shard.parameters().size() == serial.parameters().size());
      for (Parameter* p : shard.parameters()) {
        Parameter* s = serial.find_parameter(p->name);
        REQUIRE(s != nullptr);
        CHECK(p->global_shape == s->global_shape);
        const auto f = s->value.to_vector();
        const std::string& n = p->name;
        auto ends = [&](const char* suffix) { return n.size() >= std::strlen(suffix) &&
                                                     n.compare(n.size() - std::strlen(suffix), std::string::npos, suffix) == 0; };
        std::vector<float> expect;
        if (ends("c_attn.weight") || ends("c_attn.bias")) {
          const int64_t cols = ends("weight") ? C : 1, h = C / tp;
          for (int s3 = 0; s3 < 3; ++s3) {
            auto b = block(f, cols, s3 * C + r * h, s3 * C + (r + 1) * h, 0, cols);
            expect.insert(expect.end(), b.begin(), b.end());
          }
        } else if (ends("c_fc.weight") || ends("c_fc.bias")) {
          const int64_t cols = ends("weight") ? C : 1;
          expect = block(f, cols, r * F / tp, (r + 1) * F / tp, 0, cols);
        } else if (ends("attn.c_proj.weight")) {
          expect = block(f, C, 0, C, r * C / tp, (r + 1) * C / tp);
        } else if (ends("mlp.c_proj.weight")) {
          expect = block(f, F, 0, C, r * F / tp, (r + 1) * F / tp);
        } else if (n == "wte") {
          expect = block(f, C, r * V / tp, (r + 1) * V / tp, 0, C);
        } else {  // replicated: LayerNorms, wpe, row-parallel biases
          expect = f;
          CHECK(p->replicated_in_tp);
          CHECK(p->counted_in_norm == (r == 0));
        }
        INFO(n << " tp " << tp << " rank " << r);
        CHECK(p->value.to_vector() == expect);
      }
    }
  }
}

TEST_CASE("init: GPT-2 conventions (stds, ones/zeros, weight-decay flags)", "[model][init]") {
  auto be = make_cpu_backend();
  GptConfig cfg;
  cfg.vocab_size = 500;
  cfg.max_seq_len = 64;
  cfg.num_layers = 4;
  cfg.num_heads = 4;
  cfg.hidden_size = 64;
  Gpt model(cfg, *be);
  auto stddev = [](const std::vector<float>& v) {
    double s = 0, s2 = 0;
    for (float x : v) { s += x; s2 += static_cast<double>(x) * x; }
    const double m = s / v.size();
    return std::sqrt(s2 / v.size() - m * m);
  };
  CHECK(model.find_parameter("wte")->value.shape() == Shape{512, 64});
  CHECK(stddev(model.find_parameter("wte")->value.to_vector()) == Approx(0.02).epsilon(0.03));
  CHECK(stddev(model.find_parameter("wpe")->value.to_vector()) == Approx(0.01).epsilon(0.03));
  CHECK(stddev(model.find_parameter("h.1.attn.c_attn.weight")->value.to_vector()) == Approx(0.02).epsilon(0.03));
  CHECK(stddev(model.find_parameter("h.1.mlp.c_fc.weight")->value.to_vector()) == Approx(0.02).epsilon(0.03));
  const double resid = 0.02 / std::sqrt(8.0);
  CHECK(stddev(model.find_parameter("h.3.attn.c_proj.weight")->value.to_vector()) == Approx(resid).epsilon(0.05));
  CHECK(stddev(model.find_parameter("h.3.mlp.c_proj.weight")->value.to_vector()) == Approx(resid).epsilon(0.03));
  for (Parameter* p : model.parameters()) {
    INFO(p->name);
    CHECK(p->weight_decay == (p->global_shape.size() == 2));
    CHECK(p->value.category() == MemCategory::Params);
    CHECK(p->grad.category() == MemCategory::Grads);
    const auto v = p->value.to_vector();
    if (p->name.find("ln_") != std::string::npos && p->name.find(".weight") != std::string::npos)
      for (float x : v) REQUIRE(x == 1.0f);
    if (p->name.find(".bias") != std::string::npos)
      for (float x : v) REQUIRE(x == 0.0f);
  }
  CHECK(model.num_local_parameters() == cfg.num_parameters());
  CHECK(model.parameters().size() == 2 + 12 * 4 + 2);
  CHECK(model.parameters()[2]->name == "h.0.ln_1.weight");
  CHECK(model.parameters().back()->name == "ln_f.bias");
}
