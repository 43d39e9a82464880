// Inference on a Llama (include/pp3d/train/inference.h): load_inference_model
// reads a pp3d checkpoint whose manifest says arch llama and a Hugging Face
// directory (config.json + model.safetensors) into the same weights; generate
// and evaluate_validation through the InferenceModel equal the original
// model's; the validation loss equals the mean cross-entropy computed here in
// double from the KV-cached decoder's logits (an independent code path).
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "pp3d/comm/local_communicator.h"
#include "pp3d/core/error.h"
#include "pp3d/model/arch_config.h"
#include "pp3d/model/llama_generate.h"
#include "pp3d/model/llama_hf.h"
#include "pp3d/train/checkpoint.h"
#include "pp3d/train/inference.h"

using namespace pp3d;
namespace fs = std::filesystem;

namespace {

LlamaConfig tiny_llama() {
  LlamaConfig c;
  c.vocab_size = 256;  // bytes: the embedded corpus fits
  c.hidden_size = 32;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.mlp_hidden_size = 48;
  c.max_seq_len = 32;
  c.init_std = 0.1f;
  return c;
}

fs::path fresh_dir(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / ("pp3d_llama_inference_" + name);
  fs::remove_all(d);
  return d;
}

// Mean over the batch's tokens of -log softmax(logits)[target], in double.
double cross_entropy(const std::vector<float>& logits, const std::vector<int32_t>& targets, int64_t Vp, int64_t V) {
  double sum = 0.0;
  for (std::size_t i = 0; i < targets.size(); ++i) {
    const float* row = logits.data() + i * static_cast<std::size_t>(Vp);
    double mx = row[0];
    for (int64_t v = 1; v < V; ++v) mx = std::max(mx, static_cast<double>(row[v]));
    double z = 0.0;
    for (int64_t v = 0; v < V; ++v) z += std::exp(row[v] - mx);
    sum += std::log(z) + mx - row[targets[i]];
  }
  return sum / static_cast<double>(targets.size());
}

}  // namespace

TEST_CASE("llama inference: pp3d checkpoint and Hugging Face directory load, generate and evaluate",
          "[llama][inference]") {
  auto be = make_cpu_backend();
  const LlamaConfig cfg = tiny_llama();
  LlamaOptions opts;
  opts.seed = 3;
  Llama ref(cfg, *be, {}, opts);

  const fs::path ckpt = fresh_dir("ckpt"), hf = fresh_dir("hf");
  CheckpointInfo info;
  info.step = 7;
  info.seed = 11;
  info.model = to_gpt_config(cfg);
  LocalCommunicator local;
  (void)save_checkpoint(ckpt.string(), info, parameter_checkpoint_tensors(ref.parameters()), local);
  save_llama_hf(hf.string(), cfg, ref.parameters());

  InferenceModel from_ckpt = load_inference_model(ckpt.string(), "", Device::cpu());
  InferenceModel from_hf = load_inference_model("", hf.string(), Device::cpu());
  const int64_t V = cfg.vocab_size, C = cfg.hidden_size;
  for (InferenceModel* m : {&from_ckpt, &from_hf}) {
    INFO(m->source);
    REQUIRE(m->is_llama());
    CHECK(m->model == nullptr);
    CHECK(m->config.is_llama());
    CHECK(m->config.kv_heads() == 2);
    CHECK(describe_model(*m).find("llama L2 C32 H4/2kv F48 V256") == 0);
    const LlamaConfig got = m->llama->config();
    CHECK(got.num_kv_heads == cfg.num_kv_heads);
    CHECK(got.rope_theta == cfg.rope_theta);
    CHECK(got.tied_embeddings == cfg.tied_embeddings);
    int checked = 0;
    for (Parameter* p : ref.parameters()) {
      INFO(p->name);
      const Parameter* q = m->llama->find_parameter(p->name);
      REQUIRE(q != nullptr);
      std::vector<float> want = p->value.to_vector(), have = q->value.to_vector();
      if (p->global_shape[0] == ref.config().padded_vocab_size) {  // HF holds the real rows only
        want.resize(static_cast<std::size_t>(V * C));
        have.resize(static_cast<std::size_t>(V * C));
      }
      CHECK(have == want);
      ++checked;
    }
    CHECK(checked == 3 + 9 * cfg.num_layers);
  }
  CHECK(from_ckpt.step == 7);
  CHECK(from_ckpt.seed == 11);
  CHECK(from_hf.source.find("Hugging Face Llama") == 0);

  // Generation through the InferenceModel is the original model's.
  const std::vector<int32_t> prompt = encode_bytes("alice ");
  GenerateOptions g;
  g.max_new_tokens = 12;
  g.sampling = {.temperature = 0.8f, .top_k = 0, .seed = 5, .top_p = 0.9f};
  const std::vector<int32_t> want_tokens = generate(ref, prompt, g);
  CHECK(generate(from_ckpt, prompt, g) == want_tokens);
  CHECK(generate(from_hf, prompt, g) == want_tokens);

  // Validation loss: identical from every source, and equal to the mean
  // cross-entropy of the decoder's logits over the same windows.
  auto data = std::make_shared<const TokenDataset>(load_dataset("", 20240601, 256));
  EvalOptions o;
  o.batches = 3;
  o.batch_size = 2;
  o.seq_len = 16;
  o.seed = 9;
  const EvalResult r = evaluate_validation(ref, data, o);
  CHECK(evaluate_validation(from_ckpt, data, o).loss == r.loss);
  CHECK(evaluate_validation(from_hf, data, o).loss == r.loss);
  REQUIRE(r.batch_losses.size() == 3u);
  CHECK(r.tokens == 3 * 2 * 16);
  const DataLoader loader(data, o.batch_size, o.seq_len, o.seed);
  double mean = 0.0;
  for (int64_t i = 0; i < o.batches; ++i) {
    const Batch b = loader.get_val_rows(i, 0, o.batch_size);
    LlamaKvCache cache(ref, o.batch_size, o.seq_len);
    const std::vector<float> logits = forward_decode(ref, b.inputs, cache, true).to_vector();
    const int32_t* t = b.targets.data<int32_t>();
    const std::vector<int32_t> targets(t, t + b.targets.numel());
    const double want = cross_entropy(logits, targets, ref.config().padded_vocab_size, V);
    INFO("batch " << i << " eval " << r.batch_losses[static_cast<std::size_t>(i)] << " independent " << want);
    CHECK(std::fabs(r.batch_losses[static_cast<std::size_t>(i)] - want) <= 1e-5 * want);
    mean += want / static_cast<double>(o.batches);
  }
  CHECK(std::fabs(r.loss - mean) <= 1e-5 * mean);
  CHECK(r.loss > 1.0);  // a random model: near log(256) = 5.5, not a trivially small number
}

TEST_CASE("llama inference: load errors name the flag or file", "[llama][inference]") {
  CHECK_THROWS_WITH(load_inference_model("", "", Device::cpu()),
                    Catch::Contains("--init-from FILE|DIR (llm.c checkpoint file, or Hugging Face Llama directory)"));
  const fs::path empty = fresh_dir("empty");
  fs::create_directories(empty);
  CHECK_THROWS_WITH(load_inference_model("", empty.string(), Device::cpu()), Catch::Contains("config.json"));
  CHECK_THROWS_WITH(load_inference_model("", (empty / "nope.bin").string(), Device::cpu()),
                    Catch::Contains("cannot open llm.c checkpoint"));
}
