// The planner's Llama description (GptConfig arch llama): parameter counts
// against pp3d::Llama and the published Llama 3 counts, FLOPs per token, the
// model files, and the search's kv-head rule.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>

#include <unistd.h>

#include "pp3d/backend/backend.h"
#include "pp3d/core/error.h"
#include "pp3d/model/llama.h"
#include "pp3d/plan/hardware.h"
#include "pp3d/plan/model_file.h"
#include "pp3d/plan/planner.h"

using namespace pp3d;

namespace {

LlamaConfig small_llama(bool tied, int64_t kv_heads) {
  LlamaConfig c;
  c.vocab_size = 250;  // padded to 256
  c.hidden_size = 64;
  c.num_layers = 4;
  c.num_heads = 8;
  c.num_kv_heads = kv_heads;
  c.mlp_hidden_size = 176;
  c.max_seq_len = 32;
  c.tied_embeddings = tied;
  return c;
}

// Elements of the parameters one pp3d::Llama instance owns (a tied head on
// the embedding's stage is the embedding: counted once).
double owned_elements(Llama& m) {
  double n = 0;
  for (Layer* layer : m.layers())
    for (Parameter* p : layer->parameters()) n += double(p->value.numel());
  if (m.config().tied_embeddings && m.layout().has_embedding && m.layout().has_head)
    n -= double(m.find_parameter("model.embed_tokens.weight")->value.numel());
  return n;
}

struct TempFile {
  std::filesystem::path path;
  TempFile(const std::string& name, const std::string& text) {
    path = std::filesystem::temp_directory_path() / ("pp3d_llama_plan_" + std::to_string(::getpid()) + "_" + name);
    std::ofstream(path) << text;
  }
  ~TempFile() {
    std::error_code ec;
    std::filesystem::remove(path, ec);
  }
  std::string str() const { return path.string(); }
};

std::string models_dir() { return std::string(PP3D_SOURCE_DIR) + "/configs/models/"; }

}  // namespace

TEST_CASE("planner: Llama parameter count equals pp3d::Llama's", "[planner][llama]") {
  auto be = make_cpu_backend();
  for (const bool tied : {false, true})
    for (const int64_t kv : {int64_t(8), int64_t(2), int64_t(1)}) {
      const LlamaConfig lc = small_llama(tied, kv);
      const GptConfig pc = llama_plan_config(lc);
      Llama whole(lc, *be);
      INFO("tied " << tied << " kv " << kv);
      CHECK(double(pc.num_parameters()) == owned_elements(whole));
      // Per stage and TP rank: stage_parameters() against the shards a rank builds.
      for (const int tp : {1, 2})
        for (const int pp : {1, 2}) {
          if (kv % tp != 0) continue;
          Layout l;
          l.tp = tp;
          l.pp = pp;
          for (int st = 0; st < pp; ++st) {
            LlamaLayout ll;
            ll.tp_size = tp;
            ll.tp_rank = tp - 1;
            ll.first_layer = st * lc.num_layers / pp;
            ll.end_layer = (st + 1) * lc.num_layers / pp;
            ll.has_embedding = st == 0;
            ll.has_head = st == pp - 1;
            Llama shard(lc, *be, ll);
            INFO("tp " << tp << " pp " << pp << " stage " << st);
            CHECK(stage_parameters(pc, l, st) == owned_elements(shard));
          }
        }
    }
}

TEST_CASE("planner: Llama 3 model files match the published parameter counts", "[planner][llama]") {
  const GptConfig b1 = load_gpt_config_yaml(models_dir() + "llama-1b.yaml");
  CHECK(b1.is_llama());
  CHECK(b1.kv_heads() == 8);
  CHECK(b1.tied_embeddings);
  CHECK(b1.num_parameters() == 1235814400);  // Llama 3.2 1B (Hugging Face: 1,235,814,400)
  const GptConfig b8 = load_gpt_config_yaml(models_dir() + "llama-8b.yaml");
  CHECK(!b8.tied_embeddings);
  CHECK(b8.mlp_hidden() == 14336);
  CHECK(b8.num_parameters() == 8030261248);  // Llama 3 8B (Hugging Face: 8,030,261,248)
  // The tiny file: the model pp3d-train --arch llama builds from it (untied by default).
  const GptConfig tiny = load_gpt_config_yaml(models_dir() + "llama-tiny.yaml");
  LlamaConfig lc;
  lc.vocab_size = tiny.vocab_size;
  lc.hidden_size = tiny.hidden_size;
  lc.num_layers = tiny.num_layers;
  lc.num_heads = tiny.num_heads;
  lc.num_kv_heads = tiny.num_kv_heads;
  lc.mlp_hidden_size = tiny.mlp_hidden_size;
  lc.max_seq_len = tiny.max_seq_len;
  auto be = make_cpu_backend();
  Llama m(lc, *be);
  CHECK(!tiny.tied_embeddings);
  CHECK(double(tiny.num_parameters()) == owned_elements(m));
}

TEST_CASE("planner: Llama model file keys", "[planner][llama]") {
  // A GPT file's keys stay GPT's; ln_eps is not a Llama key, num_kv_heads not a GPT one.
  CHECK(!load_gpt_config_yaml(models_dir() + "small.yaml").is_llama());
  GptConfig g;
  g.num_kv_heads = 4;
  CHECK_THROWS_AS(g.validate(), Error);  // kv heads are for arch llama only
  GptConfig l = llama_plan_config(small_llama(false, 2));
  l.num_kv_heads = 3;  // does not divide 8 heads
  CHECK_THROWS_AS(l.validate(), Error);
  const std::string base = "arch: llama\nnum_layers: 2\nhidden_size: 64\nnum_heads: 4\nvocab_size: 256\nseq_len: 64\n";
  CHECK(load_gpt_config_yaml(TempFile("ok.yaml", base + "mlp_hidden_size: 192\nnum_kv_heads: 2\n").str()).kv_heads() == 2);
  CHECK_THROWS_WITH(load_gpt_config_yaml(TempFile("no_f.yaml", base).str()), Catch::Contains("needs mlp_hidden_size"));
  CHECK_THROWS_WITH(load_gpt_config_yaml(TempFile("ln.yaml", base + "mlp_hidden_size: 192\nln_eps: 1e-5\n").str()),
                    Catch::Contains("unknown key 'ln_eps'"));
  CHECK_THROWS_WITH(load_gpt_config_yaml(TempFile("arch.yaml", "arch: mamba\n").str()),
                    Catch::Contains("arch 'mamba'"));
  CHECK_THROWS_WITH(load_gpt_config_yaml(TempFile("kv.yaml", base + "mlp_hidden_size: 192\nnum_kv_heads: 3\n").str()),
                    Catch::Contains("num_kv_heads"));
}

TEST_CASE("planner: Llama FLOPs per token count matmul weights and attention", "[planner][llama]") {
  const GptConfig c = load_gpt_config_yaml(models_dir() + "llama-8b.yaml");
  const double L = 32, C = 4096, V = 128256, s = 8192;
  // Independent of the planner's per-block formula: all parameters minus the
  // embedding table and the norm weights are matmul weights (untied head included).
  const double matmul = double(c.num_parameters()) - V * C - (2 * L + 1) * C;
  CHECK(model_flops_per_token(c, 8192) == Approx(6 * matmul + 12 * L * s * C).epsilon(1e-12));
  // GQA: fewer kv heads, fewer FLOPs (k and v shrink), by exactly 6 * 2 * L * C * (Ckv - Ckv').
  GptConfig mha = c;
  mha.num_kv_heads = 32;
  CHECK(model_flops_per_token(mha, 8192) - model_flops_per_token(c, 8192) ==
        Approx(6 * 2 * L * C * (4096.0 - 1024.0)).epsilon(1e-12));
  // MFU uses it: model FLOPs per step = tokens * per-token FLOPs.
  PlanRequest req;
  req.gpus = 8;
  req.work.global_batch = 8;
  const Planner planner(c, cluster_preset("h100", 8), req);
  Layout lay;
  lay.tp = 2;
  lay.pp = 1;
  lay.dp = 4;
  lay.zero_stage = 1;
  lay.micro_batch = 1;
  lay.sequence_parallel = true;
  const Candidate cand = planner.evaluate(lay);
  CHECK(cand.time.model_flops == Approx(8 * s * model_flops_per_token(c, 8192)).epsilon(1e-12));
  CHECK(cand.time.mfu > 0.2);
  CHECK(cand.time.mfu < 0.7);
}

TEST_CASE("planner: Llama search skips tp that does not divide num_kv_heads", "[planner][llama]") {
  GptConfig c = load_gpt_config_yaml(models_dir() + "llama-tiny.yaml");  // 4 heads, 2 kv heads
  PlanRequest req;
  req.gpus = 4;
  req.work.global_batch = 16;
  const Planner planner(c, cluster_preset("h100", 8), req);
  const PlanResult res = planner.search();
  REQUIRE(!res.feasible.empty());
  for (const Candidate& cand : res.feasible) {
    CHECK(c.kv_heads() % cand.layout.tp == 0);
    // zb-h1 with sequence parallelism: its split backward's memory is not modelled for Llama.
    CHECK(!(cand.layout.schedule == Schedule::ZeroBubbleH1 && cand.layout.sequence_parallel && cand.layout.tp > 1));
  }
  REQUIRE(res.rejected.count("tp does not divide num_kv_heads") == 1);
  CHECK(res.rejected.at("tp does not divide num_kv_heads") > 0);
  Layout bad;
  bad.tp = 4;
  bad.dp = 1;
  CHECK_THROWS_WITH(planner.evaluate(bad), Catch::Contains("does not divide num_kv_heads=2"));
  // The same shape as GPT-2 would accept tp = 4 (4 heads): the rule is Llama's.
  GptConfig gpt = c;
  gpt.arch = ModelArch::Gpt2;
  gpt.num_kv_heads = 0;
  CHECK(Planner(gpt, cluster_preset("h100", 8), req).evaluate(bad).layout.tp == 4);
}

TEST_CASE("planner: Llama activation bytes per layer (16-bit, flash)", "[planner][llama]") {
  const GptConfig c = load_gpt_config_yaml(models_dir() + "llama-8b.yaml");  // 32 heads / 8 kv, F 14336
  const double s = 8192, h = 4096, a = 32, F = 14336, sbh = s * h;
  const ModelOptions opt;  // flash attention, no dropout
  const Precision bf16 = Precision::bf16();
  // t = 2 with SP: sbh (8/2 + (4 + 4 * 8/32 + 6F/h) / 2) + 4 a s / 2 = 570.9 MB (docs/PLANNER.md).
  const double sp2 = activation_bytes_per_layer(c, 8192, 1, 2, true, Recompute::None, bf16, opt);
  CHECK(sp2 == Approx(sbh * (4 + (4 + 1 + 6 * F / h) / 2) + 4 * a * s / 2).epsilon(1e-12));
  CHECK(sp2 / 1e6 == Approx(570.9).margin(0.05));
  // GQA's k and v: full multi-head attention adds 2 sbh (1 - 8/32) x 2 B per layer at t = 1.
  GptConfig mha = c;
  mha.num_kv_heads = 32;
  const double t1 = activation_bytes_per_layer(c, 8192, 1, 1, false, Recompute::None, bf16, opt);
  CHECK(activation_bytes_per_layer(mha, 8192, 1, 1, false, Recompute::None, bf16, opt) - t1 ==
        Approx(2 * 2 * sbh * (1 - 8.0 / 32)).epsilon(1e-12));
  // No dropout masks for a Llama even when asked (it has no dropout); recompute keeps the input.
  ModelOptions drop = opt;
  drop.dropout = true;
  CHECK(activation_bytes_per_layer(c, 8192, 1, 1, false, Recompute::None, bf16, drop) == t1);
  CHECK(activation_bytes_per_layer(c, 8192, 1, 2, true, Recompute::Full, bf16, opt) == Approx(2 * sbh / 2));
}
