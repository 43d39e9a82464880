// pp3d-generate: sample text from a trained GPT or Llama with KV-cached
// decoding (include/pp3d/model/generate.h, llama_generate.h). The model comes
// from a pp3d checkpoint (--checkpoint DIR, either architecture), an llm.c
// GPT-2 checkpoint (--init-from FILE) or a Hugging Face Llama directory
// (--init-from DIR). stdout gets the prompt followed by the generated text —
// decoded with the tokenizer the run's data was made with (bytes, the
// tokenizer.json copied into the checkpoint or shipped in the Hugging Face
// directory), token ids otherwise — streamed token by token; the model summary
// goes to stderr.
#include <cstdio>
#include <filesystem>
#include <optional>
#include <sstream>
#include <string>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "pp3d/core/error.h"
#include "pp3d/model/generate.h"
#include "pp3d/train/inference.h"
#include "pp3d/train/tokenizer.h"
#include "pp3d/train/trainer.h"

namespace {

// Comma / space separated token ids.
std::vector<int32_t> parse_ids(const std::string& s) {
  std::vector<int32_t> ids;
  std::string cleaned = s;
  for (char& c : cleaned)
    if (c == ',') c = ' ';
  std::istringstream in(cleaned);
  std::string tok;
  while (in >> tok) {
    std::size_t used = 0;
    long v = -1;
    try {
      v = std::stol(tok, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    PP3D_CHECK(used == tok.size() && v >= 0 && v <= 0x7fffffff, "--prompt-ids: '{}' is not a token id", tok);
    ids.push_back(static_cast<int32_t>(v));
  }
  return ids;
}

// How ids become text: a tokenizer.json (the run's, copied into its checkpoint,
// or --tokenizer), bytes (ids < 256; prepare_data's byte-level end-of-text 256
// shown as <|endoftext|>), or the ids themselves.
struct TextCodec {
  std::optional<pp3d::BpeTokenizer> tokenizer;
  bool bytes = false;
  bool escape = true;

  std::vector<int32_t> encode(const std::string& text) const {
    if (tokenizer) return tokenizer->encode(text);
    PP3D_CHECK(bytes, "this model's tokens are neither bytes nor from a known tokenizer: give the prompt as "
               "--prompt-ids, or the tokenizer.json the data was made with as --tokenizer");
    return pp3d::encode_bytes(text);
  }
  // `first`: no separator before the first id of the ids-only form.
  std::string show(const std::vector<int32_t>& toks, bool first) const {
    if (tokenizer) return tokenizer->decode(toks);
    std::string out;
    for (int32_t t : toks) {
      if (!bytes) {
        out += (first ? "" : " ") + std::to_string(t);
        first = false;
      } else if (t >= 256) {
        out += t == 256 ? "<|endoftext|>" : "<" + std::to_string(t) + ">";
      } else if (const auto c = static_cast<unsigned char>(t); !escape || (c >= 32 && c < 127) || c == '\n' ||
                                                                 c == '\t') {
        out.push_back(static_cast<char>(c));
      } else {
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\x%02x", c);
        out += buf;
      }
    }
    return out;
  }
};

// The tokenizer a checkpoint recorded ("bytes", "tokenizer.json", "unknown"; older checkpoints: none).
std::string recorded_tokenizer(const pp3d::InferenceModel& m) {
  const auto j = nlohmann::json::parse(m.trainer_config_json, nullptr, false);
  return j.is_object() ? j.value("tokenizer", "") : "";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"pp3d-generate: generate text from a trained GPT or Llama (KV-cached decoding; see "
               "docs/GENERATION.md, docs/LLAMA.md)"};
  std::string checkpoint, init_from, prompt, prompt_ids, tokenizer_path, device = "cpu";
  pp3d::GenerateOptions g;
  g.max_new_tokens = 64;
  g.sampling.temperature = 0.8f;
  bool raw = false;
  app.add_option("--checkpoint", checkpoint, "pp3d checkpoint directory, GPT or Llama (or a run's output dir "
                 "holding 'latest')");
  app.add_option("--init-from", init_from, "llm.c GPT-2 checkpoint file (fp32), or a Hugging Face Llama directory "
                 "(config.json + safetensors, e.g. from pp3d-train --arch llama --export-safetensors)");
  app.add_option("--prompt", prompt, "prompt text, encoded with the run's tokenizer (bytes, or the tokenizer.json "
                 "the checkpoint carries; default: a newline)");
  app.add_option("--prompt-ids", prompt_ids, "prompt as token ids, e.g. 50256,464 (any vocabulary)");
  app.add_option("--max-new-tokens", g.max_new_tokens, "tokens to generate")->capture_default_str();
  app.add_option("--temperature", g.sampling.temperature, "softmax temperature; 0 = greedy (argmax)")
      ->capture_default_str();
  app.add_option("--top-k", g.sampling.top_k, "sample among the k most likely tokens (0 = all)")->capture_default_str();
  app.add_option("--top-p", g.sampling.top_p, "nucleus sampling: among the most likely tokens holding this share of "
                 "the probability, after --top-k (1 = all)")->capture_default_str();
  app.add_option("--seed", g.sampling.seed, "sampling seed (same seed, same sample)")->capture_default_str();
  app.add_option("--stop-token", g.stop_token, "stop after this token id (e.g. 10 = newline for bytes; -1 = never)")
      ->capture_default_str();
  app.add_option("--device", device, "cpu | cuda | auto")->check(CLI::IsMember({"cpu", "cuda", "auto"}))
      ->capture_default_str();
  app.add_option("--tokenizer", tokenizer_path, "Hugging Face tokenizer.json (byte-level BPE) to encode the prompt "
                 "and decode the output (default: the one the checkpoint or Hugging Face directory carries, if "
                 "any)");
  app.add_flag("--raw", raw, "write generated bytes unescaped (default: non-printable bytes as \\xNN)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    g.sampling.validate();
    PP3D_CHECK(g.max_new_tokens >= 0, "--max-new-tokens must be >= 0, got {}", g.max_new_tokens);
    PP3D_CHECK(prompt.empty() || prompt_ids.empty(), "give --prompt or --prompt-ids, not both");
    pp3d::InferenceModel m = pp3d::load_inference_model(checkpoint, init_from, pp3d::resolve_device(device));
    const int64_t V = m.config.vocab_size;
    std::fprintf(stderr, "model: %s\nfrom: %s\n", pp3d::describe_model(m).c_str(), m.source.c_str());
    TextCodec codec;
    codec.escape = !raw;
    const std::string recorded = recorded_tokenizer(m);
    if (tokenizer_path.empty() && recorded == "tokenizer.json") {
      tokenizer_path = (std::filesystem::path(m.checkpoint_dir) / "tokenizer.json").string();
      PP3D_CHECK(std::filesystem::exists(tokenizer_path), "the checkpoint was trained on tokenizer.json data but "
                 "'{}' is missing; give the tokenizer as --tokenizer", tokenizer_path);
    }
    const auto hf_tokenizer = std::filesystem::path(init_from) / "tokenizer.json";
    if (tokenizer_path.empty() && m.is_llama() && !init_from.empty() && std::filesystem::exists(hf_tokenizer))
      tokenizer_path = hf_tokenizer.string();  // a Hugging Face directory's own tokenizer
    if (!tokenizer_path.empty()) {
      codec.tokenizer = pp3d::BpeTokenizer::from_file(tokenizer_path);
      PP3D_CHECK(codec.tokenizer->vocab_size() <= V, "the tokenizer '{}' has {} tokens, more than the model's "
                 "vocabulary {}", tokenizer_path, codec.tokenizer->vocab_size(), V);
      std::fprintf(stderr, "tokenizer: %s\n", tokenizer_path.c_str());
    }
    codec.bytes = V == 256 || recorded == "bytes";
    std::vector<int32_t> ids;
    if (!prompt_ids.empty()) {
      ids = parse_ids(prompt_ids);
    } else {
      ids = codec.encode(prompt.empty() ? std::string("\n") : prompt);
    }
    PP3D_CHECK(!ids.empty(), "the prompt is empty");
    for (int32_t id : ids) PP3D_CHECK(id < V, "prompt token {} is outside the model's vocabulary [0, {})", id, V);
    std::fputs(codec.show(ids, true).c_str(), stdout);
    g.on_token = [&](int32_t t) {
      std::fputs(codec.show({t}, false).c_str(), stdout);
      std::fflush(stdout);
    };
    (void)pp3d::generate(m, ids, g);
    std::fputs("\n", stdout);
  } catch (const pp3d::Error& e) {
    std::fprintf(stderr, "pp3d-generate: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pp3d-generate: unexpected error: %s\n", e.what());
    return 3;
  }
  return 0;
}
