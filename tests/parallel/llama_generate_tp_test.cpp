// KV-cached decoding of a Llama under tensor parallelism (run under mpirun,
// TP = world size): every rank's forward_decode logits equal the serial
// model's full forward logits at every position, and greedy / sampled
// generation gives the serial model's tokens on every rank (heads split by kv
// head, each rank caching its own kv heads; o/down all-reduced, vocab-parallel
// embedding, logits all-gathered).
#include <cmath>
#include <string>
#include <vector>

#include "parallel/decode_tp_util.h"
#include "parallel/tp_test_util.h"
#include "pp3d/backend/backend.h"
#include "pp3d/comm/bootstrap.h"
#include "pp3d/model/llama_generate.h"

using namespace pp3d;
using namespace pp3d::tptest;

namespace {

void compare(Backend& be, const std::shared_ptr<Communicator>& world, int64_t kv_heads, bool tied) {
  const int tp = world->size();
  LlamaConfig cfg;
  cfg.vocab_size = 97;  // padded to 128: the last rank's block holds padding
  cfg.hidden_size = 32;
  cfg.num_layers = 2;
  cfg.num_heads = 4;
  cfg.num_kv_heads = kv_heads;
  cfg.mlp_hidden_size = 48;
  cfg.max_seq_len = 20;
  cfg.rope_theta = 100.0f;
  cfg.init_std = 0.2f;
  cfg.tied_embeddings = tied;
  const std::string what = fmt::format("tp {} kv heads {} tied {}", tp, kv_heads, tied);
  LlamaOptions opts;
  opts.seed = 21;
  Llama serial(cfg, be, {}, opts);
  LlamaLayout l;
  l.tp_group = world.get();
  l.tp_rank = world->rank();
  l.tp_size = tp;
  Llama model(cfg, be, l, opts);

  const int64_t B = 2, T = 16, Vp = serial.config().padded_vocab_size, V = cfg.vocab_size;
  const std::vector<int32_t> ids = decode_ids(B, T, V);
  const Tensor ids_t = Tensor::from_vector_i32({B, T}, ids);
  ActivationCache full;
  (void)module_forward(serial, ids_t, ids_t, 0.0f, full, ForwardMode::Train);
  const std::vector<float> want = full.logits().to_vector();
  full.clear();

  // Prefill 7 tokens, then one at a time; all positions.
  LlamaKvCache cache(model, B);
  TP_EXPECT(cache.local_kv_heads() == kv_heads / tp, "{}: {} local kv heads cached", what, cache.local_kv_heads());
  expect_logits_match(decode_in_chunks(model, cache, ids, B, T, Vp, {7, 1, 1, 1, 1, 1, 1, 1, 1, 1}), want, Vp, V,
                      what);
  // Generation: the serial model's tokens on every rank.
  expect_same_generation(serial, model, 0.9f, what);
}

}  // namespace

int main() {
  auto world = init_world();
  auto be = make_cpu_backend();
  try {
    compare(*be, world, 2, false);  // one kv head per rank at tp 2
    compare(*be, world, 4, true);
  } catch (const std::exception& e) {
    failures().push_back(std::string("exception: ") + e.what());
  }
  return finish(*world, "llama_generate_tp_test");
}
