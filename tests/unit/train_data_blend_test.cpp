// Blends given as YAML blend files, and per-source validation (loader and
// Trainer: a source's validation loss in a blend equals the validation loss of
// that source alone).
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "data_test_util.h"
#include "pp3d/train/data.h"
#include "pp3d/train/trainer.h"

using namespace pp3d;
using pp3d::test::error_of;
using pp3d::test::i32_values;
namespace fs = std::filesystem;

namespace {

using pp3d::test::ramp;

// <dir>/a: ids < 100, <dir>/b: ids in [100, 200).
void write_two_sources(const fs::path& dir) {
  fs::create_directories(dir / "a");
  fs::create_directories(dir / "b");
  write_token_shard((dir / "a" / "a_train.bin").string(), ramp(6000, 0, 100));
  write_token_shard((dir / "a" / "a_val.bin").string(), ramp(900, 0, 100));
  write_token_shard((dir / "b" / "b_train.bin").string(), ramp(3000, 100, 100));
  write_token_shard((dir / "b" / "b_val.bin").string(), ramp(900, 100, 100));
}

void write_file(const fs::path& p, const std::string& text) { std::ofstream(p) << text; }

}  // namespace

TEST_CASE("blends: a YAML blend file equals Megatron's string form", "[data]") {
  const fs::path dir = pp3d::test::fresh_temp_dir("blend_yaml");
  write_two_sources(dir);
  const std::string spec = "0.7 " + (dir / "a").string() + " 0.3 " + (dir / "b").string();
  auto ref = std::make_shared<TokenDataset>(load_dataset(spec, 1, 200));
  write_file(dir / "blend.yaml", "- {weight: 0.7, path: a}\n- {weight: 0.3, path: b}\n");  // relative to the file
  write_file(dir / "flat.yml", "[7, a, 3, b]\n");                                           // NeMo's flat form
  for (const char* name : {"blend.yaml", "flat.yml"}) {
    auto d = std::make_shared<TokenDataset>(load_dataset((dir / name).string(), 1, 200));
    REQUIRE(d->blend.size() == 2);
    CHECK(d->blend[0].weight == Approx(0.7));
    CHECK(d->blend[1].spec == (dir / "b").string());
    const DataLoader a(ref, 6, 8, 3), b(d, 6, 8, 3);
    for (int64_t step : {0, 5, 40}) CHECK(i32_values(a.get_batch(step).inputs) == i32_values(b.get_batch(step).inputs));
  }
  write_file(dir / "neg.yaml", "- {weight: -1, path: a}\n");
  CHECK_THAT(error_of([&] { load_dataset((dir / "neg.yaml").string(), 1, 200); }),
             Catch::Contains("entry 1 has weight '-1'"));
  write_file(dir / "key.yaml", "- {weight: 1, file: a}\n");
  CHECK_THAT(error_of([&] { load_dataset((dir / "key.yaml").string(), 1, 200); }),
             Catch::Contains("exactly the keys weight and path"));
  write_file(dir / "map.yaml", "a: 1\n");
  CHECK_THAT(error_of([&] { load_dataset((dir / "map.yaml").string(), 1, 200); }),
             Catch::Contains("a blend file must be a list"));
  write_file(dir / "odd.yaml", "[1, a, 2]\n");
  CHECK_THAT(error_of([&] { load_dataset((dir / "odd.yaml").string(), 1, 200); }), Catch::Contains("3 items"));
  write_file(dir / "missing.yaml", "- {weight: 1, path: nothere}\n");
  CHECK_THAT(error_of([&] { load_dataset((dir / "missing.yaml").string(), 1, 200); }),
             Catch::Contains("does not exist"));
  fs::remove_all(dir);
}

TEST_CASE("blends: per-source validation rows come from that source only", "[data]") {
  const fs::path dir = pp3d::test::fresh_temp_dir("blend_val");
  write_two_sources(dir);
  auto d = std::make_shared<TokenDataset>(
      load_dataset("0.5 " + (dir / "a").string() + " 0.5 " + (dir / "b").string(), 1, 200));
  const DataLoader loader(d, 8, 16, 5);
  REQUIRE(loader.num_sources() == 2);
  CHECK(loader.source_name(1) == (dir / "b").string());
  bool mixed = false;
  for (int64_t i = 0; i < 4; ++i) {
    const auto a = i32_values(loader.get_source_val_rows(0, i, 0, 8).inputs);
    const auto b = i32_values(loader.get_source_val_rows(1, i, 0, 8).inputs);
    CHECK(std::all_of(a.begin(), a.end(), [](int32_t t) { return t < 100; }));
    CHECK(std::all_of(b.begin(), b.end(), [](int32_t t) { return t >= 100; }));
    CHECK(a == i32_values(loader.get_source_val_rows(0, i, 0, 8).inputs));  // fixed windows
    const auto m = i32_values(loader.get_val_batch(i).inputs);
    mixed = mixed || (std::any_of(m.begin(), m.end(), [](int32_t t) { return t < 100; }) &&
                      std::any_of(m.begin(), m.end(), [](int32_t t) { return t >= 100; }));
  }
  CHECK(mixed);  // the blended validation batch mixes both
  CHECK_THAT(error_of([&] { loader.get_source_val_rows(2, 0, 0, 8); }), Catch::Contains("source 2 does not exist"));
  fs::remove_all(dir);
}

TEST_CASE("Trainer: a blend reports each source's validation loss, equal to that source trained alone",
          "[data][trainer]") {
  const fs::path dir = pp3d::test::fresh_temp_dir("blend_trainer");
  write_two_sources(dir);
  TrainConfig c = pp3d::test::tiny_train_config(200, 2);
  c.eval_batches = 2;
  c.eval_interval = 1;
  c.output_dir = (dir / "out").string();
  c.data = "0.6 " + (dir / "a").string() + " 0.4 " + (dir / "b").string();
  double src_a = 0.0, src_b = 0.0;
  {
    Trainer t(c);  // before any step: the same initial weights as the single-source trainers below
    src_a = t.evaluate(0);
    src_b = t.evaluate(1);
    CHECK(src_a != src_b);
    t.run();
  }
  for (const auto& [src, expect] : {std::pair{"a", src_a}, std::pair{"b", src_b}}) {
    TrainConfig one = c;
    one.data = (dir / src).string();
    one.output_dir = (dir / (std::string("out_") + src)).string();
    Trainer t(one);
    CHECK(t.evaluate() == expect);  // the same windows of the same split through the same model
  }
  // metrics.jsonl: every evaluation step names both sources.
  std::ifstream in(dir / "out" / "metrics.jsonl");
  std::string line;
  int evals = 0;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    if (!j.contains("val_loss")) continue;
    ++evals;
    REQUIRE(j.contains("val_loss_by_source"));
    CHECK(j["val_loss_by_source"].size() == 2);
    CHECK(j["val_loss_by_source"].contains((dir / "b").string()));
  }
  CHECK(evals == 2);
  fs::remove_all(dir);
}
