// Checkpoints, single process: bitwise save/load round trip of a serial model
// + AdamW and a bitwise-identical continuation after resume; loading a serial
// checkpoint into tp = 2 shards (values and Adam state equal the serial
// slices, fused q|k|v included); manifest contents; the errors (corrupt byte,
// truncated shard, missing manifest / directory, shape mismatch, missing
// tensor); a failed save leaves the previous checkpoint intact; retention and
// the `latest` pointer; weights-only checkpoints.
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "pp3d/comm/local_communicator.h"
#include "pp3d/core/rng.h"
#include "pp3d/model/gpt.h"
#include "pp3d/model/arch_config.h"
#include "pp3d/train/checkpoint.h"
#include "pp3d/optim/optimizer.h"

using namespace pp3d;
namespace fs = std::filesystem;

namespace {

constexpr int64_t kB = 2, kT = 8;

GptConfig tiny(int64_t vocab = 61, int64_t layers = 2) {
  GptConfig c;
  c.vocab_size = vocab;
  c.max_seq_len = kT;
  c.num_layers = layers;
  c.num_heads = 2;
  c.hidden_size = 16;
  return c;
}

Tensor tokens(const char* what, int step) {
  std::vector<int32_t> v(kB * kT);
  const uint64_t key = rng_key(500 + static_cast<uint64_t>(step), what);
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<int32_t>(rng_uniform(key, i) * 61.0f) % 61;
  return Tensor::from_vector_i32({kB, kT}, v);
}

float train_step(Backend& be, Gpt& m, AdamW& opt, int step) {
  m.zero_grad();
  const float loss = m.train_step_forward_backward(tokens("ids", step), tokens("tgt", step));
  clip_grad_norm(be, m.parameters(), 1.0f);
  opt.step(3e-3f);
  return loss;
}

struct TempDir {
  fs::path path;
  TempDir() {
    static int n = 0;
    path = fs::temp_directory_path() / ("pp3d_ckpt_test_" + std::to_string(::getpid()) + "_" + std::to_string(n++));
    fs::remove_all(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string str() const { return path.string(); }
};

std::vector<float> snapshot(const std::vector<CheckpointTensor>& ts, const std::string& name) {
  for (const auto& t : ts)
    if (t.name == name) return t.data.to_vector();
  FAIL("no tensor " << name);
  return {};
}

// Local element l of shard s of `global` -> global flat index (naive).
int64_t global_index(const Shape& g, const ShardSpec& s, int64_t l) {
  const Shape local = shard_local_shape(g, s);
  const int64_t cols = local.size() == 2 ? local[1] : 1, gcols = g.size() == 2 ? g[1] : 1;
  int64_t r = l / cols, c = l % cols;
  auto map = [&](int64_t i, int64_t extent) { return (i / s.length) * (extent / s.segments) + s.offset + i % s.length; };
  if (s.dim == 0) r = map(r, g[0]);
  if (s.dim == 1) c = map(c, g[1]);
  return r * gcols + c;
}

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// A serial model trained 3 steps and saved at step 3 (in `dir`).
struct Saved {
  std::unique_ptr<Backend> be = make_cpu_backend();
  Gpt model{tiny(), *be};
  AdamW opt{*be, model.parameters()};
  std::string path;
  explicit Saved(const std::string& dir, int steps = 3) {
    for (int s = 0; s < steps; ++s) train_step(*be, model, opt, s);
    LocalCommunicator comm;
    CheckpointInfo info;
    info.step = steps;
    info.seed = 1337;
    info.optimizer_step = opt.step_count();
    info.model = tiny();
    info.trainer_config_json = R"({"lr": 0.003, "name": "unit"})";
    path = save_checkpoint(dir, info, checkpoint_tensors(opt), comm);
  }
};

}  // namespace

TEST_CASE("checkpoint: bitwise round trip and bitwise resume of a serial run", "[train][checkpoint]") {
  TempDir dir;
  auto be = make_cpu_backend();
  // Uninterrupted reference: 5 steps.
  Gpt ref(tiny(), *be);
  AdamW ref_opt(*be, ref.parameters());
  std::vector<float> ref_losses;
  for (int s = 0; s < 5; ++s) ref_losses.push_back(train_step(*be, ref, ref_opt, s));

  Saved saved(dir.str());
  REQUIRE(saved.path == (dir.path / "checkpoint-3").string());
  REQUIRE(fs::exists(dir.path / "checkpoint-3" / "manifest.json"));
  REQUIRE(fs::exists(dir.path / "checkpoint-3" / "rank-00000.bin"));
  const auto src = checkpoint_tensors(saved.opt);

  // A model with another seed (different initial weights) and fresh Adam state.
  GptOptions other;
  other.seed = 99;
  Gpt model(tiny(), *be, {}, other);
  AdamW opt(*be, model.parameters());
  const auto dst = checkpoint_tensors(opt);
  REQUIRE(snapshot(dst, "wte") != snapshot(src, "wte"));
  const CheckpointInfo info = load_checkpoint(resolve_checkpoint("latest", dir.str()), dst);
  opt.set_step_count(info.optimizer_step);
  REQUIRE(info.step == 3);
  REQUIRE(info.optimizer_step == 3);
  REQUIRE(info.seed == 1337);
  REQUIRE(info.model.hidden_size == 16);
  REQUIRE(nlohmann::json::parse(info.trainer_config_json)["name"] == "unit");
  REQUIRE(dst.size() == src.size());
  for (std::size_t i = 0; i < dst.size(); ++i) {
    CAPTURE(dst[i].name);
    REQUIRE(dst[i].name == src[i].name);
    const auto a = dst[i].data.to_vector(), b = src[i].data.to_vector();
    REQUIRE(std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
  }
  // Steps 3 and 4 after the resume are bitwise those of the uninterrupted run.
  for (int s = 3; s < 5; ++s) REQUIRE(train_step(*be, model, opt, s) == ref_losses[static_cast<std::size_t>(s)]);
}

TEST_CASE("checkpoint: a serial checkpoint loads into tp=2 shards", "[train][checkpoint]") {
  TempDir dir;
  Saved saved(dir.str());
  const auto src = checkpoint_tensors(saved.opt);
  for (int r = 0; r < 2; ++r) {
    GptLayout lay;
    lay.tp_rank = r;
    lay.tp_size = 2;
    GptOptions other;
    other.seed = 5;
    Gpt shard(tiny(), *saved.be, lay, other);
    AdamW opt(*saved.be, shard.parameters());
    const auto dst = checkpoint_tensors(opt);
    load_checkpoint(saved.path, dst);
    int sharded = 0;
    for (const CheckpointTensor& t : dst) {
      CAPTURE(r, t.name);
      const std::vector<float> full = snapshot(src, t.name), got = t.data.to_vector();
      for (std::size_t l = 0; l < got.size(); ++l)
        REQUIRE(got[l] == full[static_cast<std::size_t>(global_index(t.global_shape, t.shard, static_cast<int64_t>(l)))]);
      sharded += t.shard.sharded() && t.shard.segments == 3 ? 1 : 0;
    }
    REQUIRE(sharded >= 2 * 3);  // c_attn weight and bias of 2 layers, x (value, m, v)
  }
}

TEST_CASE("checkpoint: clear errors for corrupt, truncated, missing and mismatched checkpoints", "[train][checkpoint]") {
  TempDir dir;
  Saved saved(dir.str());
  auto& be = *saved.be;
  const auto load_into = [&](const GptConfig& cfg, const std::string& path) {
    Gpt m(cfg, be);
    AdamW o(be, m.parameters());
    load_checkpoint(path, checkpoint_tensors(o));
  };
  const std::string shard = (fs::path(saved.path) / "rank-00000.bin").string();

  SECTION("missing directory and manifest") {
    REQUIRE_THAT(error_of([&] { load_into(tiny(), dir.str() + "/nope"); }), Catch::Contains("does not exist"));
    fs::remove(fs::path(saved.path) / "manifest.json");
    REQUIRE_THAT(error_of([&] { load_into(tiny(), saved.path); }), Catch::Contains("has no manifest.json"));
  }
  SECTION("shape mismatch names the tensor and both shapes") {
    const std::string e = error_of([&] { load_into(tiny(/*vocab=*/200), saved.path); });
    REQUIRE_THAT(e, Catch::Contains("'wte'") && Catch::Contains("[64, 16]") && Catch::Contains("[256, 16]"));
  }
  SECTION("missing tensor") {
    REQUIRE_THAT(error_of([&] { load_into(tiny(61, 3), saved.path); }),
                 Catch::Contains("has no tensor 'h.2.ln_1.weight"));
  }
  SECTION("a flipped byte is a checksum error naming file and tensor") {
    // Corrupt the first byte of wte's piece (the manifest says where it is).
    std::ifstream in(fs::path(saved.path) / "manifest.json");
    const auto m = nlohmann::json::parse(in);
    const uint64_t off = m["tensors"]["wte"]["pieces"][0]["offset"].get<uint64_t>();
    std::fstream f(shard, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(off + 5));
    char c = 0;
    f.read(&c, 1);
    c = static_cast<char>(c ^ 0x10);
    f.seekp(static_cast<std::streamoff>(off + 5));
    f.write(&c, 1);
    f.close();
    const std::string e = error_of([&] { load_into(tiny(), saved.path); });
    REQUIRE_THAT(e, Catch::Contains("checksum mismatch") && Catch::Contains("rank-00000.bin") &&
                        Catch::Contains("'wte'"));
  }
  SECTION("truncated shard file") {
    fs::resize_file(shard, fs::file_size(shard) - 8);
    REQUIRE_THAT(error_of([&] { load_into(tiny(), saved.path); }),
                 Catch::Contains("truncated") && Catch::Contains("rank-00000.bin"));
  }
  SECTION("weights-only checkpoint: optimizer state required unless allowed") {
    LocalCommunicator comm;
    CheckpointInfo info;
    info.step = 7;
    info.model = tiny();
    const std::string w = save_checkpoint(dir.str(), info, parameter_checkpoint_tensors(saved.model.parameters()), comm);
    Gpt m(tiny(), be);
    AdamW o(be, m.parameters());
    REQUIRE_THAT(error_of([&] { load_checkpoint(w, checkpoint_tensors(o)); }), Catch::Contains("'wte.exp_avg'"));
    o.state()[0].m.fill_from(std::vector<float>(static_cast<std::size_t>(o.state()[0].m.numel()), 1.0f));
    CheckpointLoadOptions lo;
    lo.allow_missing_optimizer_state = true;
    load_checkpoint(w, checkpoint_tensors(o), lo);
    REQUIRE(o.state()[0].m.to_vector() == std::vector<float>(static_cast<std::size_t>(o.state()[0].m.numel()), 0.0f));
    REQUIRE(m.find_parameter("wpe")->value.to_vector() == saved.model.find_parameter("wpe")->value.to_vector());
  }
}

TEST_CASE("checkpoint: a failed save leaves the previous checkpoint intact", "[train][checkpoint]") {
  TempDir dir;
  Saved saved(dir.str());
  const std::string before = nlohmann::json::parse(std::ifstream(fs::path(saved.path) / "manifest.json")).dump();
  const auto shard_size = fs::file_size(fs::path(saved.path) / "rank-00000.bin");
  LocalCommunicator comm;
  for (const char* phase : {"shard_written", "before_manifest", "before_rename"}) {
    CAPTURE(phase);
    train_step(*saved.be, saved.model, saved.opt, 3);
    CheckpointInfo info;
    info.step = 4;
    info.model = tiny();
    CheckpointSaveOptions so;
    so.fault_hook = [&](const std::string& p) {
      if (p == phase) throw std::runtime_error("injected disk failure");
    };
    REQUIRE_THAT(error_of([&] { save_checkpoint(dir.str(), info, checkpoint_tensors(saved.opt), comm, so); }),
                 Catch::Contains("injected disk failure") && Catch::Contains("rank 0"));
    // No partial checkpoint-4, no temporary left, `latest` and checkpoint-3 untouched.
    std::vector<std::string> entries;
    for (const auto& e : fs::directory_iterator(dir.path)) entries.push_back(e.path().filename().string());
    std::sort(entries.begin(), entries.end());
    REQUIRE(entries == std::vector<std::string>{"checkpoint-3", "latest"});
    REQUIRE(resolve_checkpoint("latest", dir.str()) == saved.path);
    REQUIRE(nlohmann::json::parse(std::ifstream(fs::path(saved.path) / "manifest.json")).dump() == before);
    REQUIRE(fs::file_size(fs::path(saved.path) / "rank-00000.bin") == shard_size);
  }
  Gpt m(tiny(), *saved.be);
  AdamW o(*saved.be, m.parameters());
  REQUIRE(load_checkpoint(saved.path, checkpoint_tensors(o)).step == 3);
}

TEST_CASE("checkpoint: retention keeps the newest N, latest follows, re-save replaces", "[train][checkpoint]") {
  TempDir dir;
  auto be = make_cpu_backend();
  Gpt m(tiny(), *be);
  AdamW o(*be, m.parameters());
  LocalCommunicator comm;
  CheckpointSaveOptions so;
  so.keep_last = 2;
  for (int s = 1; s <= 4; ++s) {
    CheckpointInfo info;
    info.step = s;
    info.model = tiny();
    save_checkpoint(dir.str(), info, checkpoint_tensors(o), comm, so);
  }
  REQUIRE(!fs::exists(dir.path / "checkpoint-1"));
  REQUIRE(!fs::exists(dir.path / "checkpoint-2"));
  REQUIRE(fs::exists(dir.path / "checkpoint-3"));
  REQUIRE(resolve_checkpoint("latest", dir.str()) == (dir.path / "checkpoint-4").string());
  REQUIRE(resolve_checkpoint(dir.str()) == (dir.path / "checkpoint-4").string());
  REQUIRE(read_checkpoint_info((dir.path / "checkpoint-3").string()).step == 3);
  // Saving step 4 again replaces it.
  CheckpointInfo info;
  info.step = 4;
  info.seed = 42;
  info.model = tiny();
  save_checkpoint(dir.str(), info, checkpoint_tensors(o), comm, so);
  REQUIRE(read_checkpoint_info((dir.path / "checkpoint-4").string()).seed == 42);
  REQUIRE_THAT(error_of([&] { resolve_checkpoint((dir.path / "nothing").string()); }), Catch::Contains("does not exist"));
}

TEST_CASE("checkpoint: a Llama model description survives the manifest", "[train][checkpoint]") {
  TempDir dir;
  LlamaConfig l;
  l.vocab_size = 97;
  l.hidden_size = 96;
  l.num_layers = 3;
  l.num_heads = 6;
  l.num_kv_heads = 2;
  l.mlp_hidden_size = 160;
  l.max_seq_len = 16;
  l.rope_theta = 500000.0f;
  l.norm_eps = 1e-6f;
  auto be = make_cpu_backend();
  Llama m(l, *be);
  LocalCommunicator comm;
  CheckpointInfo info;
  info.step = 1;
  info.model = to_gpt_config(l);
  const std::string path = save_checkpoint(dir.str(), info, parameter_checkpoint_tensors(m.parameters()), comm);
  const CheckpointInfo back = read_checkpoint_info(path);
  REQUIRE(back.model.is_llama());
  const LlamaConfig r = to_llama_config(back.model);
  REQUIRE(r.num_kv_heads == 2);
  REQUIRE(r.rope_theta == 500000.0f);
  REQUIRE(r.norm_eps == 1e-6f);
  REQUIRE(r.mlp_hidden_size == 160);
  REQUIRE(r.padded_vocab_size == 128);
  REQUIRE(!r.tied_embeddings);
  // A GPT manifest has no arch key and reads back as GPT-2.
  CheckpointInfo g;
  g.step = 2;
  g.model = tiny();
  Gpt gm(tiny(), *be);
  const std::string gpath = save_checkpoint(dir.str(), g, parameter_checkpoint_tensors(gm.parameters()), comm);
  REQUIRE(!nlohmann::json::parse(std::ifstream(gpath + "/manifest.json")).at("model").contains("arch"));
  REQUIRE(!read_checkpoint_info(gpath).model.is_llama());
  REQUIRE_THROWS_WITH(to_llama_config(tiny()), Catch::Contains("not a Llama"));
}
