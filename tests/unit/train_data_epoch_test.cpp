// Data at scale: 32-bit shards, the epoch sampler (every window once per epoch,
// layout independence, bitwise resume mid-epoch) and weighted blends.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>

#include <unistd.h>

#include "pp3d/core/error.h"
#include "pp3d/train/data.h"
#include "data_test_util.h"
#include "pp3d/train/trainer.h"

namespace fs = std::filesystem;
using namespace pp3d;
using pp3d::test::error_of;
constexpr auto ints = pp3d::test::i32_values;

namespace {

fs::path temp_dir(const std::string& name) { return pp3d::test::fresh_temp_dir("epoch_test_" + name); }

using pp3d::test::ramp;

}  // namespace

TEST_CASE("token shards: 32-bit ids round trip through a mapping, header checks name file and offset", "[data]") {
  const fs::path dir = temp_dir("wide");
  const auto tok = ramp(5000, 60000, 70000);  // ids up to 129999: a Llama-3-sized vocabulary
  const std::string path = (dir / "w_train_000.bin").string();
  write_token_shard(path, tok);
  CHECK(fs::file_size(path) == 1024 + 4 * tok.size());
  const TokenSplit s = map_token_shard(path);
  REQUIRE(s.pieces().size() == 1);
  CHECK(s.pieces()[0].bytes_per_token == 4);
  CHECK(s.pieces()[0].owner != nullptr);  // the mapping, not a heap copy
  CHECK(s.to_vector() == tok);
  CHECK(read_token_shard(path, 130000) == tok);
  // A 16-bit shard forced to 32 bits reads back the same.
  write_token_shard((dir / "n.bin").string(), ramp(100, 0, 300), true);
  CHECK(map_token_shard((dir / "n.bin").string()).pieces()[0].bytes_per_token == 4);
  CHECK(read_token_shard((dir / "n.bin").string(), 300) == ramp(100, 0, 300));

  // The first id >= 100000: error names the file and its byte offset.
  const auto first_bad = std::find_if(tok.begin(), tok.end(), [](uint32_t t) { return t >= 100000; }) - tok.begin();
  CHECK_THAT(error_of([&] { read_token_shard(path, 100000); }),
             Catch::Contains("w_train_000.bin") && Catch::Contains("token " + std::to_string(tok[first_bad])) &&
                 Catch::Contains("byte offset " + std::to_string(1024 + 4 * first_bad)));
  // Truncated by one byte: named with the file's end offset.
  fs::resize_file(path, fs::file_size(path) - 1);
  CHECK_THAT(error_of([&] { map_token_shard(path); }),
             Catch::Contains("truncated") && Catch::Contains("byte offset " + std::to_string(1024 + 4 * 5000 - 1)));
  // Negative count.
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(8);
    const int32_t minus = -5;
    f.write(reinterpret_cast<const char*>(&minus), 4);
  }
  CHECK_THAT(error_of([&] { map_token_shard(path); }), Catch::Contains("negative token count -5 at byte offset 8"));
  CHECK_THAT(error_of([&] { map_token_shard((dir / "none.bin").string()); }), Catch::Contains("none.bin"));
  // A mapped split reports bad ids with the file offset during batch reads too.
  auto d = std::make_shared<TokenDataset>();
  d->train = map_token_shard((dir / "n.bin").string());
  d->val = d->train;
  d->vocab_size = 250;
  const DataLoader loader(d, 4, 8, 1, Sampler::Epoch);
  std::string e;
  for (int64_t step = 0; step < 10 && e.empty(); ++step) {
    try {
      loader.get_batch(step);
    } catch (const Error& x) {
      e = x.what();
    }
  }
  CHECK_THAT(e, Catch::Contains("n.bin") && Catch::Contains(">= the vocabulary size 250"));
  fs::remove_all(dir);
}

TEST_CASE("permute_index is a bijection of 0 .. n-1 that depends on the key", "[data]") {
  for (uint64_t n : {1u, 2u, 3u, 5u, 16u, 17u, 1000u, 4097u}) {
    std::vector<int> seen(n, 0);
    for (uint64_t i = 0; i < n; ++i) ++seen[permute_index(i, n, 42)];
    CHECK(std::all_of(seen.begin(), seen.end(), [](int c) { return c == 1; }));
  }
  int moved = 0;
  for (uint64_t i = 0; i < 1000; ++i) moved += permute_index(i, 1000, 1) != permute_index(i, 1000, 2);
  CHECK(moved > 900);
  CHECK_THROWS_AS(permute_index(5, 5, 1), Error);
}

TEST_CASE("epoch sampler: every non-overlapping window exactly once per epoch, reshuffled, any layout", "[data]") {
  const fs::path dir = temp_dir("epoch");
  // Three shards of 101, 58 and 7 tokens at T = 8: 12 + 7 + 0 windows (the last shard is too short).
  const std::vector<int64_t> lengths{101, 58, 7};
  std::vector<uint32_t> all;
  for (std::size_t i = 0; i < lengths.size(); ++i) {
    const auto t = ramp(lengths[i], static_cast<uint32_t>(1000 * i), 1000);
    write_token_shard((dir / ("e_train_" + std::to_string(i) + ".bin")).string(), t);
    all.insert(all.end(), t.begin(), t.end());
  }
  write_token_shard((dir / "e_val_0.bin").string(), ramp(40, 0, 1000));
  auto d = std::make_shared<TokenDataset>(load_dataset(dir.string(), 1, 3000));
  const int64_t B = 5, T = 8, N = 19;
  const DataLoader loader(d, B, T, 7);  // auto: epoch for shards
  REQUIRE(loader.sampler() == Sampler::Epoch);
  REQUIRE(loader.epoch_windows() == std::vector<int64_t>{N});
  std::set<int64_t> expected;
  for (int64_t k = 0; k < 12; ++k) expected.insert(k * T);
  for (int64_t k = 0; k < 7; ++k) expected.insert(101 + k * T);

  std::vector<int64_t> starts;  // samples of 4 epochs, in order
  for (int64_t step = 0; static_cast<int64_t>(starts.size()) < 4 * N; ++step) {
    const Batch b = loader.get_batch(step);
    const auto in = ints(b.inputs), tg = ints(b.targets);
    for (int64_t r = 0; r < B; ++r) {
      const int64_t s = loader.window_start(step, r, false);
      starts.push_back(s);
      for (int64_t t = 0; t < T; ++t) {
        REQUIRE(in[r * T + t] == static_cast<int32_t>(all[s + t]));
        REQUIRE(tg[r * T + t] == static_cast<int32_t>(all[s + t + 1]));
      }
    }
  }
  std::vector<std::vector<int64_t>> epochs;
  for (int e = 0; e < 4; ++e) {
    epochs.emplace_back(starts.begin() + e * N, starts.begin() + (e + 1) * N);
    CHECK(std::set<int64_t>(epochs[e].begin(), epochs[e].end()) == expected);  // each window once
  }
  CHECK(epochs[0] != epochs[1]);
  CHECK(epochs[1] != epochs[2]);
  // Epoch 1 ends with sample 18 (step 3, rows 15..19), epoch 2 with sample 37 (step 7).
  CHECK(loader.epoch_events(2).empty());
  REQUIRE(loader.epoch_events(3).size() == 1);
  CHECK_THAT(loader.epoch_events(3)[0], Catch::Contains("epoch 1 of the training data (19 windows"));
  CHECK(loader.epoch_events(7).size() == 1);

  // Layout independence: any row split (DP ranks x micro-batches) reads the same rows.
  const DataLoader again(d, B, T, 7);
  for (int64_t step : {0, 3, 11}) {
    const auto full = ints(loader.get_batch(step).inputs);
    for (int64_t split : {1, 5}) {
      std::vector<int32_t> joined;
      for (int64_t r0 = 0; r0 < B; r0 += split) {
        const auto part = ints(again.get_rows(step, r0, std::min(B, r0 + split)).inputs);
        joined.insert(joined.end(), part.begin(), part.end());
      }
      CHECK(joined == full);
    }
  }
  CHECK(ints(DataLoader(d, B, T, 8).get_batch(0).inputs) != ints(loader.get_batch(0).inputs));  // seeded
  // Validation windows repeat exactly and come from the val split.
  CHECK(ints(loader.get_val_batch(2).inputs) == ints(again.get_val_batch(2).inputs));
  // Every shard shorter than a window: a clear error.
  CHECK_THAT(error_of([&] { DataLoader(d, B, 200, 7, Sampler::Epoch); }), Catch::Contains("seq_len + 1"));
  fs::remove_all(dir);
}

TEST_CASE("blends: the schedule honours the weights within 1% and sources are read in their own order", "[data]") {
  // Schedule alone: 3 parts, 100k samples, every prefix within a few samples of the weights.
  std::vector<BlendPart> parts{{0.5, "a", nullptr}, {0.3, "b", nullptr}, {0.2, "c", nullptr}};
  const auto f = blend_fractions(parts);
  std::vector<int64_t> counts(3, 0);
  for (uint64_t g = 0; g < 100000; ++g) {
    const BlendSlot s = blend_slot(f, g);
    REQUIRE(s.index == counts[s.part]);  // a part's samples are numbered 0, 1, 2, ...
    ++counts[s.part];
    if (g % 997 == 0) {
      for (int p = 0; p < 3; ++p) REQUIRE(std::abs(counts[p] - parts[p].weight * (g + 1)) < 3.0);
    }
  }
  CHECK(blend_counts(f, 100000) == counts);

  // Through load_dataset and the loader: part a holds ids < 100, part b ids >= 100.
  const fs::path dir = temp_dir("blend");
  fs::create_directories(dir / "a");
  fs::create_directories(dir / "b");
  write_token_shard((dir / "a" / "a_train.bin").string(), ramp(20000, 0, 100));
  write_token_shard((dir / "a" / "a_val.bin").string(), ramp(300, 0, 100));
  write_token_shard((dir / "b" / "b_train.bin").string(), ramp(500, 100, 100));
  write_token_shard((dir / "b" / "b_val.bin").string(), ramp(300, 100, 100));
  const std::string spec = "0.7 " + (dir / "a").string() + " 0.3 " + (dir / "b").string();
  auto d = std::make_shared<TokenDataset>(load_dataset(spec, 1, 200));
  REQUIRE(d->blend.size() == 2);
  CHECK(d->blend[0].weight == Approx(0.7));
  const int64_t B = 10, T = 8, steps = 300;
  const DataLoader loader(d, B, T, 3);
  int64_t from_a = 0;
  for (int64_t step = 0; step < steps; ++step) {
    const auto in = ints(loader.get_batch(step).inputs);
    for (int64_t r = 0; r < B; ++r) {
      const bool a = in[r * T] < 100;
      CHECK(a == (loader.blend_part(step, r, false) == 0));
      from_a += a;
    }
  }
  CHECK(std::abs(static_cast<double>(from_a) / (B * steps) - 0.7) < 0.01);
  // Part b (62 windows) runs through several epochs while part a (2499) is in its first.
  bool b_epoch = false, a_epoch = false;
  for (int64_t step = 0; step < steps; ++step) {
    for (const auto& e : loader.epoch_events(step)) {
      b_epoch = b_epoch || e.find("/b'") != std::string::npos;
      a_epoch = a_epoch || e.find("/a'") != std::string::npos;
    }
  }
  CHECK(b_epoch);
  CHECK_FALSE(a_epoch);
  CHECK_THAT(error_of([&] { load_dataset("0.7 " + (dir / "a").string() + " 0.3", 1, 200); }),
             Catch::Contains("WEIGHT PATH"));
  CHECK_THAT(error_of([&] { load_dataset("0.7 " + (dir / "a").string() + " -1 x", 1, 200); }),
             Catch::Contains("'-1' (word 3) should be a positive weight"));
  fs::remove_all(dir);
}

TEST_CASE("Trainer: a run resumed mid-epoch continues bitwise, the embedded corpus keeps random windows",
          "[data][trainer]") {
  const fs::path dir = temp_dir("resume");
  write_token_shard((dir / "r_train_000.bin").string(), ramp(161, 0, 97));  // 20 windows of 8: 5 steps of 4
  write_token_shard((dir / "r_val_000.bin").string(), ramp(80, 0, 97));
  TrainConfig c = pp3d::test::tiny_train_config(97, 8);
  c.data = dir.string();
  c.save_interval = 3;
  c.output_dir = (dir / "out").string();
  std::vector<double> losses;
  {
    Trainer t(c);
    REQUIRE(t.data().sampler() == Sampler::Epoch);
    t.run();
  }
  {
    TrainConfig straight = c;
    straight.save_interval = 0;
    straight.output_dir = (dir / "out2").string();
    Trainer t(straight);
    for (int i = 0; i < 8; ++i) losses.push_back(t.train_step().loss);
  }
  TrainConfig r = c;
  r.resume_from = (dir / "out" / "checkpoint-3").string();
  r.save_interval = 0;
  Trainer t(r);
  REQUIRE(t.step() == 3);
  for (int i = 3; i < 8; ++i) CHECK(t.train_step().loss == losses[i]);  // across the epoch end in step 5

  auto corpus = std::make_shared<TokenDataset>(make_synthetic_dataset({1, 20000, 5000}));
  CHECK(DataLoader(corpus, 4, 8, 1).sampler() == Sampler::Random);
  fs::remove_all(dir);
}
