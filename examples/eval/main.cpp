// pp3d-eval: validation loss and perplexity of a trained GPT or Llama on the same data
// options as pp3d-train (embedded corpus, text, llm.c shards). With the
// trainer's --seed, --batch-size, --seq-len and --eval-batches (here
// --batches) it prints the number the trainer logged as val_loss
// (include/pp3d/train/inference.h). Progress goes to stderr (a bar on a TTY).
#include <unistd.h>

#include <cstdio>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "pp3d/core/error.h"
#include "pp3d/train/inference.h"
#include "pp3d/train/trainer.h"

int main(int argc, char** argv) {
  CLI::App app{"pp3d-eval: validation loss / perplexity of a trained GPT or Llama (see docs/GENERATION.md, "
               "docs/LLAMA.md)"};
  std::string checkpoint, init_from, data, device = "cpu";
  pp3d::EvalOptions o;
  std::optional<uint64_t> seed;
  bool json = false;
  app.add_option("--checkpoint", checkpoint, "pp3d checkpoint directory, GPT or Llama (or a run's output dir "
                 "holding 'latest')");
  app.add_option("--init-from", init_from, "llm.c GPT-2 checkpoint file (fp32), or a Hugging Face Llama directory "
                 "(config.json + safetensors, e.g. from pp3d-train --arch llama --export-safetensors)");
  app.add_option("--data", data, "text file/folder, .bin token shard(s) or a blend 'W1 PATH1 W2 PATH2'; default: "
                 "embedded synthetic corpus");
  app.add_option("--batches", o.batches, "validation batches (pp3d-train: --eval-batches)")->capture_default_str();
  app.add_option("--batch-size", o.batch_size, "rows per batch (pp3d-train: --batch-size)")->capture_default_str();
  app.add_option("--seq-len", o.seq_len, "tokens per row; 0 = the model's context")->capture_default_str();
  app.add_option("--seed", seed, "data seed of the validation windows (default: the checkpoint's training seed, "
                 "else 1337 = pp3d-train's default)");
  app.add_option("--device", device, "cpu | cuda | auto")->check(CLI::IsMember({"cpu", "cuda", "auto"}))
      ->capture_default_str();
  app.add_flag("--json", json, "print the result as one JSON object");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    o.validate();
    pp3d::InferenceModel m = pp3d::load_inference_model(checkpoint, init_from, pp3d::resolve_device(device));
    o.seed = seed.value_or(m.seed);
    std::fprintf(stderr, "model: %s\nfrom: %s\n", pp3d::describe_model(m).c_str(), m.source.c_str());
    auto ds = std::make_shared<pp3d::TokenDataset>(pp3d::load_dataset(data, 20240601, m.config.vocab_size));
    std::fprintf(stderr, "data: %s\n", ds->description.c_str());
    const bool tty = isatty(fileno(stderr)) != 0;
    o.progress = [tty](int64_t done, int64_t total, double mean) {
      if (!tty) return;
      const int width = 30, fill = static_cast<int>(width * done / total);
      std::fprintf(stderr, "\reval [%s%s] %lld/%lld  loss %.4f", std::string(fill, '#').c_str(),
                   std::string(width - fill, '.').c_str(), static_cast<long long>(done),
                   static_cast<long long>(total), mean);
      if (done == total) std::fputc('\n', stderr);
      std::fflush(stderr);
    };
    const pp3d::EvalResult r = pp3d::evaluate_validation(m, ds, o);
    const int64_t T = r.tokens / (o.batches * o.batch_size);
    if (json) {
      std::printf("{\"val_loss\": %.9g, \"perplexity\": %.9g, \"batches\": %lld, \"batch_size\": %lld, "
                  "\"seq_len\": %lld, \"seed\": %llu, \"tokens\": %lld, \"seconds\": %.3f}\n",
                  r.loss, r.perplexity, static_cast<long long>(o.batches), static_cast<long long>(o.batch_size),
                  static_cast<long long>(T), static_cast<unsigned long long>(o.seed),
                  static_cast<long long>(r.tokens), r.seconds);
    } else {
      std::printf("val_loss %.6f  perplexity %.4f  (%lld batches x %lld rows x %lld tokens = %lld tokens, seed "
                  "%llu, %.2f s, %.0f tokens/s)\n",
                  r.loss, r.perplexity, static_cast<long long>(o.batches), static_cast<long long>(o.batch_size),
                  static_cast<long long>(T), static_cast<long long>(r.tokens),
                  static_cast<unsigned long long>(o.seed), r.seconds,
                  r.seconds > 0 ? static_cast<double>(r.tokens) / r.seconds : 0.0);
    }
  } catch (const pp3d::Error& e) {
    std::fprintf(stderr, "pp3d-eval: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pp3d-eval: unexpected error: %s\n", e.what());
    return 3;
  }
  return 0;
}
