// Hugging Face interop of pp3d::Llama: config.json + model.safetensors round
// trip bitwise (save, load into a differently seeded model, save again: the
// same bytes), loading into tensor-parallel shards and a pipeline stage (the
// slices of the full tensors), BF16 files, and the errors for what pp3d does
// not implement.
#include <catch2/catch.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "pp3d/backend/backend.h"
#include "pp3d/core/safetensors.h"
#include "pp3d/model/llama_hf.h"

using namespace pp3d;

namespace {

namespace fs = std::filesystem;

LlamaConfig tiny(bool tied) {
  LlamaConfig c;
  c.vocab_size = 61;  // padded to 64: padding rows are dropped / zero-filled
  c.hidden_size = 32;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.mlp_hidden_size = 48;
  c.max_seq_len = 16;
  c.rope_theta = 500000.0f;
  c.norm_eps = 1e-6f;
  c.tied_embeddings = tied;
  return c;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

fs::path tmp_dir(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / ("pp3d_llama_hf_" + name);
  fs::remove_all(d);
  return d;
}

// The slice `shard` of a full row-major tensor.
std::vector<float> slice(const std::vector<float>& full, const Shape& g, const ShardSpec& s) {
  if (!s.sharded()) return full;
  const int64_t rows = g[0], cols = g.size() > 1 ? g[1] : 1;
  std::vector<float> out;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < cols; ++k) {
      const int64_t idx = s.dim == 0 ? r : k;
      if (idx >= s.offset && idx < s.offset + s.length) out.push_back(full[static_cast<std::size_t>(r * cols + k)]);
    }
  return out;
}

}  // namespace

TEST_CASE("llama HF round trip is bitwise and loads into any layout", "[model][llama][interop]") {
  auto be = make_cpu_backend();
  for (const bool tied : {false, true}) {
    CAPTURE(tied);
    const LlamaConfig cfg = tiny(tied);
    LlamaOptions o1, o2;
    o1.seed = 1;
    o2.seed = 2;
    Llama a(cfg, *be, {}, o1), b(cfg, *be, {}, o2);
    const fs::path da = tmp_dir(tied ? "a_tied" : "a"), db = tmp_dir(tied ? "b_tied" : "b");
    save_llama_hf(da.string(), cfg, a.parameters());
    const auto file = read_safetensors((da / "model.safetensors").string());
    CHECK(file.size() == (tied ? 20u : 21u));
    CHECK(file.at("model.embed_tokens.weight").shape == Shape{61, 32});
    CHECK(file.at("model.layers.1.self_attn.k_proj.weight").shape == Shape{16, 32});
    CHECK(file.count("lm_head.weight") == (tied ? 0u : 1u));

    const LlamaConfig back = load_llama_hf_config(da.string());
    CHECK(back.vocab_size == 61);
    CHECK(back.num_kv_heads == 2);
    CHECK(back.mlp_hidden_size == 48);
    CHECK(back.rope_theta == 500000.0f);
    CHECK(back.norm_eps == 1e-6f);
    CHECK(back.tied_embeddings == tied);

    REQUIRE(a.find_parameter("model.norm.weight")->value.to_vector() != std::vector<float>{});
    REQUIRE(a.find_parameter("model.layers.0.mlp.up_proj.weight")->value.to_vector() !=
            b.find_parameter("model.layers.0.mlp.up_proj.weight")->value.to_vector());
    load_llama_hf(da.string(), cfg, b.parameters());
    for (Parameter* p : a.parameters()) {
      INFO(p->name);
      std::vector<float> want = p->value.to_vector();
      if (p->global_shape[0] == 64)  // padding rows come back as zeros
        std::fill(want.begin() + 61 * 32, want.end(), 0.0f);
      CHECK(b.find_parameter(p->name)->value.to_vector() == want);
    }
    save_llama_hf(db.string(), cfg, b.parameters());
    CHECK(slurp(da / "model.safetensors") == slurp(db / "model.safetensors"));
    CHECK(slurp(da / "config.json") == slurp(db / "config.json"));

    // tp rank 1 of 2, a last pipeline stage (layer 1 + head): the slices of the full tensors.
    LlamaLayout l;
    l.tp_rank = 1;
    l.tp_size = 2;
    l.first_layer = 1;
    l.has_embedding = false;
    Llama shard(cfg, *be, l, o2);
    load_llama_hf(da.string(), cfg, shard.parameters());
    int checked = 0;
    for (Parameter* p : shard.parameters()) {
      INFO(p->name);
      const std::vector<float> full = b.find_parameter(p->name)->value.to_vector();
      CHECK(p->value.to_vector() == slice(full, p->global_shape, p->shard));
      ++checked;
    }
    CHECK(checked == (tied ? 11 : 11));  // 9 block tensors + norm + head (or the tied embed_tokens copy)
  }
}

TEST_CASE("safetensors reads BF16 and rejects bad files", "[interop]") {
  const fs::path d = tmp_dir("bf16");
  fs::create_directories(d);
  const std::string header = R"({"x":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}})";
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  bytes += header;
  const unsigned char data[4] = {0x80, 0x3F, 0x00, 0xC0};  // 1.0, -2.0
  bytes.append(reinterpret_cast<const char*>(data), 4);
  std::ofstream(d / "x.safetensors", std::ios::binary) << bytes;
  const auto t = read_safetensors((d / "x.safetensors").string());
  CHECK(t.at("x").data == std::vector<float>{1.0f, -2.0f});
  std::ofstream(d / "short.safetensors", std::ios::binary) << bytes.substr(0, bytes.size() - 2);
  CHECK_THROWS_WITH(read_safetensors((d / "short.safetensors").string()), Catch::Contains("data offsets"));
}

TEST_CASE("llama HF errors name the tensor or key", "[model][llama][interop]") {
  auto be = make_cpu_backend();
  const LlamaConfig cfg = tiny(false);
  Llama a(cfg, *be);
  const fs::path d = tmp_dir("errors");
  save_llama_hf(d.string(), cfg, a.parameters());
  LlamaConfig wide = cfg;
  wide.mlp_hidden_size = 64;
  Llama w(wide, *be);
  CHECK_THROWS_WITH(load_llama_hf(d.string(), wide, w.parameters()),
                    Catch::Contains("tensor 'model.layers.0.mlp.gate_proj.weight' is [48, 32], the model needs [64, 32]"));
  LlamaConfig tied = cfg;
  tied.tied_embeddings = false;
  std::ofstream(d / "config.json") << R"({"hidden_size": 32, "intermediate_size": 48, "num_attention_heads": 4,
    "num_hidden_layers": 2, "vocab_size": 61, "rope_scaling": {"type": "llama3", "factor": 8.0}})";
  CHECK_THROWS_WITH(load_llama_hf_config(d.string()), Catch::Contains("rope_scaling"));
  std::ofstream(d / "config.json") << R"({"hidden_size": 32})";
  CHECK_THROWS_WITH(load_llama_hf_config(d.string()), Catch::Contains("missing integer key 'intermediate_size'"));
}
