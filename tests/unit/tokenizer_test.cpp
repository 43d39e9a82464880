// BpeTokenizer against Hugging Face `tokenizers`: the committed fixture
// (tools/make_tokenizer_fixture.py) holds a byte-level BPE tokenizer.json and
// the ids `tokenizers` gives for texts with contractions, whitespace runs,
// accents, Greek, Cyrillic, CJK, emoji and an embedded <|endoftext|>.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "data_test_util.h"
#include "pp3d/train/tokenizer.h"

using namespace pp3d;
namespace fs = std::filesystem;

namespace {
const std::string kDir = std::string(PP3D_SOURCE_DIR) + "/tests/fixtures/tokenizer";
}

TEST_CASE("tokenizer: encode and decode equal Hugging Face tokenizers on the fixture", "[tokenizer]") {
  const BpeTokenizer tok = BpeTokenizer::from_file(kDir + "/tokenizer.json");
  REQUIRE(tok.can_encode());
  CHECK(tok.token_id("<|endoftext|>") == 0);
  std::ifstream in(kDir + "/cases.json");
  const auto cases = nlohmann::json::parse(in).at("cases");
  REQUIRE(cases.size() >= 10);
  for (const auto& c : cases) {
    const auto text = c.at("text").get<std::string>();
    const auto ids = c.at("ids").get<std::vector<int32_t>>();
    INFO(text);
    CHECK(tok.encode(text) == ids);
    CHECK(tok.decode(ids) == text);
  }
}

TEST_CASE("tokenizer: unsupported files and ids are clear errors", "[tokenizer]") {
  using pp3d::test::error_of;
  const fs::path dir = pp3d::test::fresh_temp_dir("tokenizer");
  const BpeTokenizer tok = BpeTokenizer::from_file(kDir + "/tokenizer.json");
  CHECK_THAT(error_of([&] { tok.decode({100000}); }), Catch::Contains("token id 100000 is not in the tokenizer"));
  auto j = nlohmann::json::parse(std::ifstream(kDir + "/tokenizer.json"));
  j["pre_tokenizer"] = {{"type", "Metaspace"}};
  std::ofstream(dir / "meta.json") << j.dump();
  const BpeTokenizer meta = BpeTokenizer::from_file((dir / "meta.json").string());
  CHECK_FALSE(meta.can_encode());
  CHECK(meta.decode({300}) == tok.decode({300}));  // decoding still works
  CHECK_THAT(error_of([&] { meta.encode("x"); }), Catch::Contains("--prompt-ids"));
  j["model"]["type"] = "Unigram";
  std::ofstream(dir / "unigram.json") << j.dump();
  CHECK_THAT(error_of([&] { BpeTokenizer::from_file((dir / "unigram.json").string()); }),
             Catch::Contains("model type 'Unigram' is not supported"));
  std::ofstream(dir / "bad.json") << "{not json";
  CHECK_THAT(error_of([&] { BpeTokenizer::from_file((dir / "bad.json").string()); }),
             Catch::Contains("is not valid JSON"));
  CHECK_THAT(error_of([&] { BpeTokenizer::from_file((dir / "none.json").string()); }),
             Catch::Contains("cannot be read"));
  fs::remove_all(dir);
}
