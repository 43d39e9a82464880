// Interop: llm.c checkpoint round trip / shard loading / errors; safetensors export.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <functional>
#include <fstream>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "pp3d/backend/backend.h"
#include "pp3d/core/error.h"
#include "pp3d/model/gpt.h"
#include "pp3d/train/interop.h"

namespace fs = std::filesystem;
using namespace pp3d;

namespace {

GptConfig tiny_config() {
  GptConfig c;
  c.vocab_size = 100;  // padded to 128
  c.max_seq_len = 16;
  c.num_layers = 2;
  c.num_heads = 2;
  c.hidden_size = 8;
  return c;
}

fs::path temp_file(const std::string& name) {
  return fs::temp_directory_path() / ("pp3d_interop_" + std::to_string(::getpid()) + "_" + name);
}

std::string read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

float float_at(const std::string& bytes, std::size_t byte_offset) {
  float f;
  std::memcpy(&f, bytes.data() + byte_offset, 4);
  return f;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

}  // namespace

TEST_CASE("llm.c checkpoint: write -> read reproduces every tensor, file order is llm.c's", "[interop]") {
  auto be = make_cpu_backend();
  const GptConfig cfg = tiny_config();
  Gpt a(cfg, *be, {}, GptOptions{11});
  Gpt b(cfg, *be, {}, GptOptions{22});
  const fs::path path = temp_file("rt.bin");
  save_llmc_checkpoint(path.string(), cfg, a.parameters());

  const std::string bytes = read_all(path);
  const int64_t C = 8, L = 2, Vp = 128, T = 16;
  const int64_t nparams = Vp * C + T * C + L * (12 * C * C + 13 * C) + 2 * C;
  REQUIRE(static_cast<int64_t>(bytes.size()) == 1024 + 4 * nparams);
  int32_t hd[8];
  std::memcpy(hd, bytes.data(), sizeof(hd));
  CHECK(hd[0] == 20240326);
  CHECK(hd[1] == 3);
  CHECK((hd[2] == T && hd[3] == 100 && hd[4] == L && hd[5] == 2 && hd[6] == C && hd[7] == Vp));
  // Hand-computed offset of h.1.mlp.c_fc.bias[5]: wte, wpe, ln1w, ln1b, qkvw, qkvb, attprojw,
  // attprojb, ln2w, ln2b, fcw (all L layers each), then fcb of layer 0, then layer 1.
  const int64_t fcb = Vp * C + T * C + L * C + L * C + L * 3 * C * C + L * 3 * C + L * C * C + L * C + L * C +
                      L * C + L * 4 * C * C + 1 * 4 * C + 5;
  CHECK(float_at(bytes, 1024 + 4 * fcb) == a.find_parameter("h.1.mlp.c_fc.bias")->value.to_vector()[5]);
  const int64_t qkv = Vp * C + T * C + 2 * L * C + 1 * 3 * C * C + 7 * C + 3;  // h.1 qkv weight [7, 3]
  CHECK(float_at(bytes, 1024 + 4 * qkv) == a.find_parameter("h.1.attn.c_attn.weight")->value.to_vector()[7 * C + 3]);

  const GptConfig read = read_llmc_config(path.string());
  CHECK((read.num_layers == 2 && read.hidden_size == 8 && read.num_heads == 2 && read.vocab_size == 100 &&
         read.padded_vocab() == 128 && read.max_seq_len == 16));

  load_llmc_checkpoint(path.string(), cfg, b.parameters());
  for (Parameter* p : a.parameters()) {
    INFO(p->name);
    CHECK(p->value.to_vector() == b.find_parameter(p->name)->value.to_vector());
  }
  fs::remove(path);
}

TEST_CASE("llm.c checkpoint: shards load exactly their slice, shape differences handled", "[interop]") {
  auto be = make_cpu_backend();
  const GptConfig cfg = tiny_config();
  Gpt full(cfg, *be, {}, GptOptions{5});
  const fs::path path = temp_file("shard.bin");
  save_llmc_checkpoint(path.string(), cfg, full.parameters());

  // Hand-made shards of a tp=2, rank 1 layout (q|k|v rows, row-parallel columns, vocab rows).
  auto shard_param = [](const std::string& name, Shape global, ShardSpec s) {
    Parameter p;
    p.name = name;
    p.global_shape = global;
    p.shard = s;
    p.value = Tensor::zeros(shard_local_shape(global, s));
    return p;
  };
  const int64_t C = 8;
  Parameter qkv = shard_param("h.1.attn.c_attn.weight", {3 * C, C}, {0, C / 2, C / 2, 3});
  Parameter proj = shard_param("h.0.mlp.c_proj.weight", {C, 4 * C}, {1, 2 * C, 2 * C, 1});
  Parameter bias = shard_param("h.0.attn.c_attn.bias", {3 * C}, {0, C / 2, C / 2, 3});
  Parameter wte = shard_param("wte", {128, C}, {0, 64, 64, 1});
  load_llmc_checkpoint(path.string(), cfg, {&qkv, &proj, &bias, &wte});

  const auto fq = full.find_parameter("h.1.attn.c_attn.weight")->value.to_vector();
  const auto lq = qkv.value.to_vector();
  for (int64_t seg = 0; seg < 3; ++seg)
    for (int64_t r = 0; r < C / 2; ++r)
      for (int64_t c = 0; c < C; ++c)
        REQUIRE(lq[(seg * C / 2 + r) * C + c] == fq[(seg * C + C / 2 + r) * C + c]);
  const auto fp = full.find_parameter("h.0.mlp.c_proj.weight")->value.to_vector();
  const auto lp = proj.value.to_vector();
  for (int64_t r = 0; r < C; ++r)
    for (int64_t c = 0; c < 2 * C; ++c) REQUIRE(lp[r * 2 * C + c] == fp[r * 4 * C + 2 * C + c]);
  const auto fb = full.find_parameter("h.0.attn.c_attn.bias")->value.to_vector();
  const auto lb = bias.value.to_vector();
  for (int64_t seg = 0; seg < 3; ++seg)
    for (int64_t i = 0; i < C / 2; ++i) REQUIRE(lb[seg * C / 2 + i] == fb[seg * C + C / 2 + i]);
  // Rows 64..127 of wte (100..127 are the padding rows, read as stored).
  const auto fw = full.find_parameter("wte")->value.to_vector();
  const auto lw = wte.value.to_vector();
  for (int64_t r = 0; r < 64; ++r)
    for (int64_t c = 0; c < C; ++c) REQUIRE(lw[r * C + c] == fw[(64 + r) * C + c]);

  // A pipeline stage (layers [1, 2) + head) loads its blocks and its tied wte copy.
  GptLayout stage;
  stage.first_layer = 1;
  stage.last_layer = 2;
  stage.has_embedding = false;
  Gpt last(cfg, *be, stage, GptOptions{9});
  load_llmc_checkpoint(path.string(), cfg, last.parameters());
  for (Parameter* p : last.parameters()) {
    INFO(p->name);
    CHECK(p->value.to_vector() == full.find_parameter(p->name)->value.to_vector());
  }

  // A model with shorter context and a different vocab padding reads a prefix of wpe.
  GptConfig other = cfg;
  other.max_seq_len = 8;
  other.padded_vocab_size = 192;
  Gpt small(other, *be, {}, GptOptions{3});
  load_llmc_checkpoint(path.string(), other, small.parameters());
  const auto sw = small.find_parameter("wpe")->value.to_vector();
  const auto fwp = full.find_parameter("wpe")->value.to_vector();
  CHECK(std::vector<float>(fwp.begin(), fwp.begin() + 8 * C) == sw);
  const auto swte = small.find_parameter("wte")->value.to_vector();
  CHECK(swte[99 * C + 1] == fw[99 * C + 1]);
  CHECK(swte[127 * C + 1] == fw[127 * C + 1]);
  CHECK(swte[150 * C + 1] == 0.0f);  // past the file's padded vocabulary
  fs::remove(path);
}

TEST_CASE("llm.c checkpoint: bad files and mismatched models are rejected clearly", "[interop]") {
  auto be = make_cpu_backend();
  const GptConfig cfg = tiny_config();
  Gpt m(cfg, *be);
  const fs::path path = temp_file("bad.bin");
  save_llmc_checkpoint(path.string(), cfg, m.parameters());
  const std::string good = read_all(path);
  auto write = [&](std::string b) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << b;
  };
  std::string b = good;
  b[0] = 0;
  write(b);
  CHECK_THAT(error_of([&] { read_llmc_config(path.string()); }), Catch::Contains("magic at byte offset 0"));
  b = good;
  b[4] = 5;
  write(b);
  CHECK_THAT(error_of([&] { read_llmc_config(path.string()); }), Catch::Contains("version 5"));
  write(good.substr(0, good.size() - 4));
  CHECK_THAT(error_of([&] { read_llmc_config(path.string()); }), Catch::Contains("truncated"));
  write(good);
  GptConfig wrong = cfg;
  wrong.num_layers = 3;
  Gpt w(wrong, *be);
  CHECK_THAT(error_of([&] { load_llmc_checkpoint(path.string(), wrong, w.parameters()); }),
             Catch::Contains("L2") && Catch::Contains("checkpoint's shape"));
  fs::remove(path);
}

TEST_CASE("safetensors export: header offsets consistent, HF names and layouts", "[interop]") {
  auto be = make_cpu_backend();
  const GptConfig cfg = tiny_config();
  Gpt m(cfg, *be, {}, GptOptions{17});
  const fs::path path = temp_file("model.safetensors");
  export_safetensors(path.string(), cfg, m.parameters());
  const std::string bytes = read_all(path);
  REQUIRE(bytes.size() > 8);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  REQUIRE(8 + n <= bytes.size());
  CHECK(n % 8 == 0);
  const auto header = nlohmann::json::parse(bytes.substr(8, n));
  const std::size_t data0 = 8 + n;

  // Every tensor: F32, offsets tile the data section exactly, size = prod(shape) * 4.
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  int tensors = 0;
  for (const auto& [name, v] : header.items()) {
    if (name == "__metadata__") continue;
    ++tensors;
    CHECK(v["dtype"] == "F32");
    uint64_t numel = 1;
    for (auto d : v["shape"]) numel *= d.get<uint64_t>();
    const uint64_t b0 = v["data_offsets"][0], b1 = v["data_offsets"][1];
    CHECK(b1 - b0 == 4 * numel);
    ranges.emplace_back(b0, b1);
  }
  std::sort(ranges.begin(), ranges.end());
  CHECK(ranges.front().first == 0);
  for (std::size_t i = 1; i < ranges.size(); ++i) CHECK(ranges[i].first == ranges[i - 1].second);
  CHECK(data0 + ranges.back().second == bytes.size());
  CHECK(tensors == 4 + 12 * 2);

  auto tensor_at = [&](const std::string& name, std::size_t flat) {
    return float_at(bytes, data0 + header.at(name)["data_offsets"][0].get<std::size_t>() + 4 * flat);
  };
  const int64_t C = 8;
  CHECK(header["wte.weight"]["shape"] == nlohmann::json({100, C}));
  CHECK(header["wpe.weight"]["shape"] == nlohmann::json({16, C}));
  CHECK(header["h.1.attn.c_attn.weight"]["shape"] == nlohmann::json({C, 3 * C}));
  CHECK(header["h.0.mlp.c_proj.weight"]["shape"] == nlohmann::json({4 * C, C}));
  CHECK(header["ln_f.bias"]["shape"] == nlohmann::json({C}));
  const auto wte = m.find_parameter("wte")->value.to_vector();
  CHECK(tensor_at("wte.weight", 99 * C + 7) == wte[99 * C + 7]);
  // HF Conv1D: hf[i, o] = ours[o, i].
  const auto qkv = m.find_parameter("h.1.attn.c_attn.weight")->value.to_vector();
  for (int64_t i = 0; i < C; ++i)
    for (int64_t o = 0; o < 3 * C; ++o) REQUIRE(tensor_at("h.1.attn.c_attn.weight", i * 3 * C + o) == qkv[o * C + i]);
  const auto fcp = m.find_parameter("h.0.mlp.c_proj.weight")->value.to_vector();  // ours [C, 4C]
  CHECK(tensor_at("h.0.mlp.c_proj.weight", 5 * C + 3) == fcp[3 * 4 * C + 5]);
  const auto ln = m.find_parameter("h.1.ln_2.weight")->value.to_vector();
  CHECK(tensor_at("h.1.ln_2.weight", 2) == ln[2]);
  fs::remove(path);
}
