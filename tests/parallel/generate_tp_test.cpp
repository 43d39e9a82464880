// KV-cached decoding under tensor parallelism (run under mpirun, TP = world
// size): every rank's forward_decode logits equal the serial model's full
// forward logits at every position, and greedy / sampled generation gives the
// serial model's tokens on every rank (heads split, row-parallel all-reduces,
// vocab-parallel embedding, logits all-gathered).
#include <cmath>
#include <string>
#include <vector>

#include "parallel/decode_tp_util.h"
#include "parallel/tp_test_util.h"
#include "pp3d/backend/backend.h"
#include "pp3d/comm/bootstrap.h"
#include "pp3d/model/generate.h"
#include "pp3d/model/gpt.h"

using namespace pp3d;
using namespace pp3d::tptest;

namespace {

void compare(Backend& be, const std::shared_ptr<Communicator>& world, bool tied, bool sp) {
  const int tp = world->size();
  GptConfig cfg;
  cfg.vocab_size = 251;  // padded to 256: the last rank's block holds padding
  cfg.max_seq_len = 20;
  cfg.num_layers = 2;
  cfg.num_heads = 4;
  cfg.hidden_size = 32;
  cfg.init_std = 0.2f;
  cfg.wpe_init_std = 0.2f;
  cfg.tied_embeddings = tied;
  const std::string what = fmt::format("tp {} tied {} sp {}", tp, tied, sp);
  Gpt serial(cfg, be, {}, {.seed = 21});
  GptLayout l;
  l.tp_rank = world->rank();
  l.tp_size = tp;
  l.tp_group = world;
  l.sequence_parallel = sp;
  Gpt model(cfg, be, l, {.seed = 21});

  const int64_t B = 2, T = 16, Vp = cfg.padded_vocab(), V = cfg.vocab_size;
  const std::vector<int32_t> ids = decode_ids(B, T, V);
  const Tensor ids_t = Tensor::from_vector_i32({B, T}, ids);
  ActivationCache full;
  serial.forward(ids_t, ids_t, 1.0f, full, ForwardMode::Train);
  const std::vector<float> want = full.logits().to_vector();

  // Prefill 7 tokens, then one at a time; all positions.
  KvCache cache(model, B);
  expect_logits_match(decode_in_chunks(model, cache, ids, B, T, Vp, {7, 1, 1, 1, 1, 1, 1, 1, 1, 1}), want, Vp, V,
                      what);
  // Generation: the serial model's tokens on every rank.
  expect_same_generation(serial, model, 1.0f, what);
}

}  // namespace

int main() {
  auto world = init_world();
  auto be = make_cpu_backend();
  try {
    for (bool tied : {true, false}) compare(*be, world, tied, false);
    compare(*be, world, true, true);  // sequence parallelism does not change decoding
  } catch (const std::exception& e) {
    failures().push_back(std::string("exception: ") + e.what());
  }
  return finish(*world, "generate_tp_test");
}
