// The Trainer with arch "llama" (issue 16), serial: the architecture defaults
// (untied head, SwiGLU width 8C/3 rounded up to 64), validate()'s messages for
// the Llama flags, the model description the Trainer, checkpoints and the
// planner share, model FLOPs by hand for a grouped-query Llama, Trainer::model()
// refusing a Llama, a GPT checkpoint refused by a Llama run by name, and the
// Llama initialised from a Hugging Face directory (--init-from) starting from
// those weights.
#include <filesystem>
#include <string>

#include <catch2/catch.hpp>

#include "pp3d/core/error.h"
#include "pp3d/model/llama_hf.h"
#include "pp3d/parallel/pipeline.h"
#include "pp3d/train/trainer.h"
#include "train/trainer_flops.h"

using namespace pp3d;
namespace fs = std::filesystem;

namespace {

std::string error_of(const TrainConfig& c, int world) {
  try {
    c.validate(world);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TrainConfig tiny_llama() {
  TrainConfig c;
  c.arch = "llama";
  c.num_layers = 2;
  c.hidden_size = 64;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.seq_len = 16;
  c.micro_batch_size = 2;
  c.max_steps = 4;
  c.warmup_steps = 0;
  c.eval_batches = 1;
  c.quiet = true;
  return c;
}

}  // namespace

TEST_CASE("TrainConfig arch llama: untied and 8C/3 by default, gpt2 unchanged", "[trainer][llama]") {
  TrainConfig c = tiny_llama();
  CHECK(c.is_llama());
  CHECK_FALSE(c.tied());
  CHECK(c.mlp_width() == 192);  // 8 * 64 / 3 = 170 -> 192
  c.hidden_size = 96;
  CHECK(c.mlp_width() == 256);  // 256 exactly
  c.tied_embeddings = true;
  c.mlp_hidden_size = 100;
  CHECK(c.tied());
  CHECK(c.mlp_width() == 100);
  TrainConfig g;
  CHECK(g.tied());
  CHECK(g.mlp_width() == 4 * g.hidden_size);
  const GptConfig d = model_description(tiny_llama());
  CHECK(d.is_llama());
  CHECK(d.kv_heads() == 2);
  CHECK(d.mlp_hidden() == 192);
  CHECK_FALSE(d.tied_embeddings);
  CHECK(d.max_seq_len == 16);
  CHECK_FALSE(model_description(g).is_llama());
}

TEST_CASE("TrainConfig arch llama: the kv-head flags are checked by name", "[trainer][llama]") {
  TrainConfig c = tiny_llama();
  CHECK(error_of(c, 2) == "(no error)");
  c.tp = 4;  // 2 kv heads over 4 TP ranks
  CHECK(error_of(c, 4).find("--tp 4 does not divide the 2 key/value heads (--num-kv-heads 2") != std::string::npos);
  c.tp = 1;
  c.num_kv_heads = 3;
  CHECK(error_of(c, 1).find("--num-kv-heads 3 does not divide --num-heads 4") != std::string::npos);
  c.num_kv_heads = 2;
  c.rope_theta = 0;
  CHECK(error_of(c, 1).find("--rope-theta must be > 0") != std::string::npos);
  TrainConfig g;
  g.num_kv_heads = 2;
  CHECK(error_of(g, 1).find("--num-kv-heads 2 is for --arch llama") != std::string::npos);
  g.num_kv_heads = 0;
  g.arch = "mamba";
  CHECK(error_of(g, 1).find("--arch 'mamba' is not one of gpt2, llama") != std::string::npos);
}

TEST_CASE("model FLOPs per token of a grouped-query Llama, by hand", "[trainer][flops][llama]") {
  GptConfig c = model_description(tiny_llama());
  c.vocab_size = 256;
  // Per block: q 64x64, k and v 64x32 each (2 of 4 heads' width), o 64x64; gate, up 64x192, down 192x64.
  const int64_t block = 64 * 64 + 2 * 64 * 32 + 64 * 64 + 3 * 64 * 192;
  CHECK(detail::matmul_parameters(c) == 2 * block + 256 * 64);
  const double forward = 2.0 * (2 * block + 256 * 64) + 2 * (2.0 * 2 * 16 * 64);
  CHECK(detail::model_flops_per_token(c, 16) == Approx(3.0 * forward).epsilon(1e-12));
}

TEST_CASE("Trainer llama: trains, model() refuses, a GPT checkpoint is refused by name", "[trainer][llama]") {
  const fs::path dir = fs::temp_directory_path() / "pp3d_unit_llama_trainer";
  fs::remove_all(dir);
  TrainConfig c = tiny_llama();
  c.output_dir = (dir / "llama").string();
  Trainer t(c);
  CHECK(t.model_config().is_llama());
  CHECK(t.model_config().vocab_size == 256);
  CHECK_THROWS_WITH(t.model(), Catch::Contains("this run's model is a Llama"));
  CHECK(t.pipeline().num_chunks() == 1);
  const double first = t.train_step().loss;
  for (int s = 1; s < 4; ++s) (void)t.train_step();
  CHECK(t.evaluate() < first);
  // A GPT run's checkpoint into a Llama run.
  TrainConfig g;
  g.num_layers = 1, g.hidden_size = 32, g.num_heads = 2, g.seq_len = 16, g.micro_batch_size = 2, g.max_steps = 2;
  g.warmup_steps = 0, g.save_interval = 1, g.eval_batches = 1, g.quiet = true;
  g.output_dir = (dir / "gpt").string();
  Trainer(g).run();
  TrainConfig r = tiny_llama();
  r.resume_from = (dir / "gpt" / "checkpoint-1").string();
  try {
    Trainer bad(r);
    FAIL("a Llama run resumed a GPT checkpoint");
  } catch (const Error& e) {
    const std::string m = e.what();
    CHECK(m.find("holds a gpt2 model") != std::string::npos);
    CHECK(m.find("this run builds --arch llama") != std::string::npos);
    CHECK(m.find("resume with --arch gpt2") != std::string::npos);
  }
  // --init-from a Hugging Face directory (the export of the trained Llama): its weights, not a fresh init.
  t.export_weights((dir / "hf").string());
  TrainConfig h = tiny_llama();
  h.num_layers = 7;  // ignored: the shape is config.json's
  h.init_from = (dir / "hf").string();
  Trainer from(h);
  CHECK(from.model_config().num_layers == 2);
  auto* mine = from.pipeline().parameters().front();
  auto* theirs = t.pipeline().parameters().front();
  REQUIRE(mine->name == theirs->name);
  CHECK(mine->value.to_vector() == theirs->value.to_vector());
  fs::remove_all(dir);
}
