// Data: synthetic corpus structure, text/shard readers, batch determinism.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <regex>
#include <sstream>

#include <unistd.h>

#include "pp3d/core/error.h"
#include "pp3d/train/data.h"
#include "data_test_util.h"

namespace fs = std::filesystem;
using namespace pp3d;
using pp3d::test::error_of;
constexpr auto ints = pp3d::test::i32_values;

namespace {

fs::path temp_dir(const std::string& name) { return pp3d::test::fresh_temp_dir("data_test_" + name); }

void write_bytes(const fs::path& p, const std::string& s) {
  std::ofstream o(p, std::ios::binary);
  o << s;
}

}  // namespace

TEST_CASE("synthetic corpus: deterministic, split streams differ, arithmetic is right", "[data]") {
  const std::string a = generate_synthetic_text(7, 200000);
  CHECK(a == generate_synthetic_text(7, 200000));
  CHECK(a != generate_synthetic_text(8, 200000));
  CHECK(a.size() >= 200000);
  CHECK(a.compare(0, 1000, generate_synthetic_text(7, 1000), 0, 1000) == 0);  // prefix-stable

  const std::regex gets(R"(^(\w+) has (\d+) (\w+)s and gets (\d+) more, so (\w+) has (\d+) (\w+)s\.$)");
  const std::regex gave(R"(^(\w+) had (\d+) (\w+)s and gave (\d+) to (\w+), so (\w+) has (\d+) (\w+)s left\.$)");
  const std::regex op(R"(^(\d+) (plus|minus|times) (\d+) is (\d+)\.$)");
  const std::regex recall(R"(^(\w+) puts the (\w+) (\w+) in the (\w+)\. (\w+) asks where the (\w+) (\w+) is\. it is in the (\w+)\.$)");
  std::istringstream in(a);
  std::string line;
  int checked = 0, lines = 0, ops[3] = {0, 0, 0};
  while (std::getline(in, line)) {
    ++lines;
    std::smatch m;
    if (std::regex_match(line, m, gets)) {
      CHECK(std::stoi(m[2]) + std::stoi(m[4]) == std::stoi(m[6]));
      CHECK((m[1] == m[5] && m[3] == m[7]));
      ++checked;
    } else if (std::regex_match(line, m, gave)) {
      CHECK(std::stoi(m[2]) - std::stoi(m[4]) == std::stoi(m[7]));
      CHECK((m[1] == m[6] && m[1] != m[5]));
      ++checked;
    } else if (std::regex_match(line, m, op)) {
      const int x = std::stoi(m[1]), y = std::stoi(m[3]), z = std::stoi(m[4]);
      const int expect = m[2] == "plus" ? x + y : m[2] == "minus" ? x - y : x * y;
      CHECK(z == expect);
      ++ops[m[2] == "plus" ? 0 : m[2] == "minus" ? 1 : 2];
      ++checked;
    } else if (std::regex_match(line, m, recall)) {
      CHECK((m[2] == m[6] && m[3] == m[7] && m[4] == m[8] && m[1] != m[5]));
      ++checked;
    }
  }
  // Every kind of statement occurs, and the checked kinds are a large share.
  CHECK(ops[0] > 100);
  CHECK(ops[1] > 100);
  CHECK(ops[2] > 100);
  CHECK(checked > lines / 2);

  const TokenDataset d = make_synthetic_dataset({3, 100000, 20000});
  CHECK(d.vocab_size == 256);
  CHECK(d.train.size() >= 100000);
  CHECK(d.val.size() >= 20000);
  const auto train = d.train.to_vector(), val = d.val.to_vector();
  CHECK(!std::equal(val.begin(), val.begin() + 1000, train.begin()));
  // English-like text: unigram entropy between 3 and 5 bits per byte.
  const double h = unigram_entropy_bits(std::vector<uint16_t>(train.begin(), train.end()), 256);
  CHECK(h == unigram_entropy_bits(d, int64_t{1} << 30));
  CHECK(h > 3.0);
  CHECK(h < 5.0);
}

TEST_CASE("unigram entropy against closed forms", "[data]") {
  CHECK(unigram_entropy_bits({1, 2, 3, 0}, 4) == Approx(2.0));
  CHECK(unigram_entropy_bits({5, 5, 5}, 8) == Approx(0.0));
  // p = (3/4, 1/4)
  CHECK(unigram_entropy_bits({0, 0, 0, 1}, 2) ==
        Approx(-(0.75 * std::log2(0.75) + 0.25 * std::log2(0.25))));
  CHECK_THROWS_AS(unigram_entropy_bits({9}, 4), Error);
}

TEST_CASE("DataLoader: batches are a pure function of (seed, step, row)", "[data]") {
  auto d = std::make_shared<TokenDataset>();
  std::vector<uint16_t> train, val;
  for (int i = 0; i < 5000; ++i) train.push_back(static_cast<uint16_t>((i * 7 + i / 13) % 256));
  for (int i = 0; i < 700; ++i) val.push_back(static_cast<uint16_t>((i * 3) % 256));
  d->train = train;
  d->val = val;
  const int64_t B = 12, T = 16;
  const Sampler sampler = GENERATE(Sampler::Random, Sampler::Epoch);
  DataLoader a(d, B, T, 42, sampler), b(d, B, T, 42, sampler), c(d, B, T, 43, sampler);
  const Batch full = a.get_batch(5);
  REQUIRE(full.inputs.shape() == Shape{B, T});
  REQUIRE(full.targets.shape() == Shape{B, T});
  CHECK(ints(full.inputs) == ints(b.get_batch(5).inputs));
  CHECK(ints(full.inputs) != ints(a.get_batch(6).inputs));
  CHECK(ints(full.inputs) != ints(c.get_batch(5).inputs));
  // Each row is a window of the train split; targets are inputs shifted by one.
  const auto in = ints(full.inputs), tg = ints(full.targets);
  for (int64_t r = 0; r < B; ++r) {
    const int64_t s = a.window_start(5, r, false);
    REQUIRE(s >= 0);
    REQUIRE(s + T + 1 <= static_cast<int64_t>(d->train.size()));
    for (int64_t t = 0; t < T; ++t) {
      CHECK(in[r * T + t] == d->train[s + t]);
      CHECK(tg[r * T + t] == d->train[s + t + 1]);
    }
  }
  // Any row range (a DP rank's or a micro-batch's) equals that slice of the full batch.
  for (auto [r0, r1] : {std::pair<int64_t, int64_t>{0, 3}, {3, 6}, {5, 12}, {11, 12}}) {
    const Batch part = b.get_rows(5, r0, r1);
    CHECK(part.row0 == r0);
    CHECK(ints(part.inputs) == ints(full.inputs.slice(r0, r1)));
    CHECK(ints(part.targets) == ints(full.targets.slice(r0, r1)));
  }
  // Validation batches come from the val split and repeat exactly.
  const Batch v = a.get_val_batch(1);
  CHECK(ints(v.inputs) == ints(b.get_val_batch(1).inputs));
  CHECK(ints(v.targets) == ints(b.get_val_rows(1, 0, B).targets));
  const int64_t vs = a.window_start(1, 0, true);
  CHECK(ints(v.inputs)[0] == d->val[vs]);
  CHECK_THROWS_AS(a.get_rows(0, 4, 4), Error);
  CHECK_THROWS_AS(a.get_rows(0, 0, B + 1), Error);
  CHECK_THROWS_AS(DataLoader(d, B, 700, 1, sampler), Error);  // val split too short
}

TEST_CASE("text dataset: folder files concatenated in sorted order, last 10% validation", "[data]") {
  const fs::path dir = temp_dir("text");
  fs::create_directories(dir / "sub");
  write_bytes(dir / "b.txt", std::string(50, 'b'));
  write_bytes(dir / "a.txt", std::string(30, 'a'));
  write_bytes(dir / "sub" / "c.txt", std::string(20, 'c'));
  const TokenDataset d = load_dataset(dir.string());
  CHECK(d.vocab_size == 256);
  REQUIRE(d.train.size() == 90);
  REQUIRE(d.val.size() == 10);
  CHECK(d.train[0] == 'a');
  CHECK(d.train[30] == 'b');
  CHECK(d.train[80] == 'c');
  CHECK(d.val[0] == 'c');
  CHECK_THAT(error_of([&] { load_dataset((dir / "missing").string()); }), Catch::Contains("does not exist"));
  fs::remove_all(dir);
}

TEST_CASE("llm.c shards: round trip and bad files name the file and offset", "[data]") {
  const fs::path dir = temp_dir("shards");
  std::vector<uint16_t> tok;
  for (int i = 0; i < 3000; ++i) tok.push_back(static_cast<uint16_t>((i * 37) % 50257));
  const std::string good = (dir / "x_train_000.bin").string();
  write_llmc_shard(good, tok);
  CHECK(fs::file_size(good) == 1024 + 2 * tok.size());
  CHECK(read_llmc_shard(good, 50257) == tok);

  std::vector<uint16_t> vtok(tok.begin(), tok.begin() + 500);
  write_llmc_shard((dir / "x_val_000.bin").string(), vtok);
  TokenDataset d = load_dataset(dir.string());
  auto u32 = [](const std::vector<uint16_t>& v) { return std::vector<uint32_t>(v.begin(), v.end()); };
  CHECK(d.train.to_vector() == u32(tok));
  CHECK(d.val.to_vector() == u32(vtok));
  d = load_llmc_dataset(good);  // sibling val file found by name
  CHECK(d.val.to_vector() == u32(vtok));

  std::string bytes;
  {
    std::ifstream in(good, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  auto corrupt = [&](const std::string& name, auto edit) {
    std::string b = bytes;
    edit(b);
    const std::string p = (dir / name).string();
    write_bytes(p, b);
    return p;
  };
  const std::string bad_magic = corrupt("magic.bin", [](std::string& b) { b[0] = 1; });
  auto e = error_of([&] { read_llmc_shard(bad_magic, 50257); });
  CHECK_THAT(e, Catch::Contains("magic.bin") && Catch::Contains("magic at byte offset 0"));

  const std::string bad_version = corrupt("version.bin", [](std::string& b) { b[4] = 3; });
  e = error_of([&] { read_llmc_shard(bad_version, 50257); });
  CHECK_THAT(e, Catch::Contains("version.bin") && Catch::Contains("version 3 at byte offset 4"));
  const std::string bad_width = corrupt("width.bin", [](std::string& b) { b[4] = 2; });  // v2 with 2-byte ids
  e = error_of([&] { read_llmc_shard(bad_width, 50257); });
  CHECK_THAT(e, Catch::Contains("width.bin") && Catch::Contains("2 bytes per token at byte offset 12"));

  const std::string truncated = corrupt("trunc.bin", [](std::string& b) { b.resize(b.size() - 3); });
  e = error_of([&] { read_llmc_shard(truncated, 50257); });
  CHECK_THAT(e, Catch::Contains("trunc.bin") && Catch::Contains("truncated") &&
                    Catch::Contains("byte offset " + std::to_string(bytes.size() - 3)));

  const std::string short_header = corrupt("short.bin", [](std::string& b) { b.resize(100); });
  CHECK_THAT(error_of([&] { read_llmc_shard(short_header, 50257); }),
             Catch::Contains("short.bin") && Catch::Contains("truncated"));

  // Token 1000 (index 27: 27 * 37 = 999 < 1000, index 28 -> 1036) is the first >= 1000.
  e = error_of([&] { read_llmc_shard(good, 1000); });
  CHECK_THAT(e, Catch::Contains("x_train_000.bin") && Catch::Contains("token 1036 at byte offset " +
                                                                      std::to_string(1024 + 2 * 28) + " is >="));
  fs::remove_all(dir);
}
