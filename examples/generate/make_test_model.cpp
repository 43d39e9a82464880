// Test helper (not installed): trains a tiny byte-level GPT on the embedded
// corpus with the serial Trainer and writes it as an llm.c checkpoint, so the
// pp3d-generate / pp3d-eval / tools/test_model CLI tests have a model to load.
// Prints the trainer's validation loss ("val_loss <value>") for the same
// settings pp3d-eval is then run with (--batches 2 --batch-size 4 --seq-len 32).
// Also writes the same weights as a pp3d checkpoint <OUT.bin>.ckpt/checkpoint-<steps>/
// (model weights only, with a `latest` pointer).
// Usage: pp3d_make_test_model OUT.bin [steps]
#include <cstdio>
#include <string>

#include "pp3d/comm/local_communicator.h"
#include "pp3d/core/error.h"
#include "pp3d/train/checkpoint.h"
#include "pp3d/train/interop.h"
#include "pp3d/train/trainer.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s OUT.bin [steps]\n", argv[0]);
    return 2;
  }
  try {
    pp3d::TrainConfig c;
    c.num_layers = 1;
    c.hidden_size = 32;
    c.num_heads = 2;
    c.seq_len = 32;
    c.micro_batch_size = 4;
    c.max_steps = argc > 2 ? std::stoll(argv[2]) : 20;
    c.warmup_steps = 0;
    c.eval_batches = 2;
    c.quiet = true;
    pp3d::Trainer t(c);
    for (int64_t s = 0; s < c.max_steps; ++s) (void)t.train_step();
    const double val = t.evaluate();
    std::vector<pp3d::Parameter> full = t.gather_full_parameters();
    std::vector<pp3d::Parameter*> ptrs;
    for (auto& p : full) ptrs.push_back(&p);
    pp3d::save_llmc_checkpoint(argv[1], t.model_config(), ptrs);
    pp3d::CheckpointInfo info;
    info.step = c.max_steps;
    info.seed = c.seed;
    info.model = t.model_config();
    pp3d::LocalCommunicator local;
    pp3d::save_checkpoint(std::string(argv[1]) + ".ckpt", info,
                          pp3d::parameter_checkpoint_tensors(t.model().parameters()), local);
    std::printf("val_loss %.9g\n", val);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pp3d_make_test_model: error: %s\n", e.what());
    return 2;
  }
  return 0;
}
