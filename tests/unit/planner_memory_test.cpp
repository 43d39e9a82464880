// Planner memory model: ZeRO accounting (ZeRO paper, Fig. 1), activation
// memory (Korthikanti et al. 2022), parameter counts, in-flight micro-batches,
// monotonicity.
#include <catch2/catch.hpp>

#include "pp3d/core/error.h"
#include "pp3d/plan/planner.h"

using namespace pp3d;

namespace {
GptConfig gpt2_124m() {
  GptConfig c;  // defaults are GPT-2 small
  c.vocab_size = 50257;
  c.max_seq_len = 1024;
  c.num_layers = 12;
  c.num_heads = 12;
  c.hidden_size = 768;
  return c;
}
GptConfig gpt3_1p3b() {
  GptConfig c;
  c.num_layers = 24;
  c.hidden_size = 2048;
  c.num_heads = 16;
  c.max_seq_len = 2048;
  return c;
}
}  // namespace

TEST_CASE("ZeRO model-state accounting matches the ZeRO paper's 7.5B example", "[planner]") {
  // Rajbhandari et al. 2020, Figure 1: Psi = 7.5B, N_d = 64, K = 12.
  const double psi = 7.5e9;
  const Precision mp = Precision::bf16();
  CHECK(model_state_bytes(psi, 64, 0, mp).total() / 1e9 == Approx(120.0).margin(0.05));
  CHECK(model_state_bytes(psi, 64, 1, mp).total() / 1e9 == Approx(31.4).margin(0.05));
  CHECK(model_state_bytes(psi, 64, 2, mp).total() / 1e9 == Approx(16.6).margin(0.05));
  CHECK(model_state_bytes(psi, 64, 3, mp).total() / 1e9 == Approx(1.9).margin(0.05));
  // The per-category split of stage 2: 2 psi params, (2 + 12) psi / N_d sharded.
  const auto s2 = model_state_bytes(psi, 64, 2, mp);
  CHECK(s2.params == Approx(2 * psi));
  CHECK(s2.grads == Approx(2 * psi / 64));
  CHECK(s2.optimizer == Approx(12 * psi / 64));
  // fp32: 4 psi params + 4 psi grads + 8 psi Adam.
  const Precision f32 = Precision::fp32();
  CHECK(model_state_bytes(psi, 8, 0, f32).total() == Approx(16 * psi));
  CHECK(model_state_bytes(psi, 8, 1, f32).total() == Approx(8 * psi + 8 * psi / 8));
  CHECK(model_state_bytes(psi, 8, 2, f32).total() == Approx(4 * psi + 12 * psi / 8));
  CHECK(model_state_bytes(psi, 8, 3, f32).total() == Approx(16 * psi / 8));
  CHECK_THROWS_AS(model_state_bytes(psi, 0, 1, mp), Error);
  CHECK_THROWS_AS(model_state_bytes(psi, 4, 4, mp), Error);
}

TEST_CASE("GPT-2 124M parameter count", "[planner]") {
  // The published 124,439,808 counts the unpadded vocabulary 50257 with tied
  // embeddings; pp3d pads to 50304 by default (+47 rows of 768).
  GptConfig c = gpt2_124m();
  c.padded_vocab_size = 50257;
  CHECK(c.num_parameters() == 124439808);
  GptConfig padded = gpt2_124m();
  CHECK(padded.num_parameters() == 124439808 + 47 * 768);
  // The planner's per-stage count sums to the model: pp = 1, tp = 1.
  Layout l;
  CHECK(stage_parameters(c, l, 0) == Approx(124439808.0));
  // pp = 4 with tied embeddings: the last stage holds a second wte.
  l.pp = 4;
  double sum = 0;
  for (int s = 0; s < 4; ++s) sum += stage_parameters(c, l, s);
  CHECK(sum == Approx(124439808.0 + 50257.0 * 768));
  // tp = 2: matrices split, LayerNorms / row-parallel biases / wpe replicated.
  Layout t2;
  t2.tp = 2;
  const double C = 768, L = 12;
  const double replicated = L * (2 * C + C + 2 * C + C) + 1024 * C + 2 * C;
  CHECK(2 * stage_parameters(c, t2, 0) - replicated == Approx(124439808.0));
}

TEST_CASE("activation memory per layer follows Korthikanti et al. 2022", "[planner]") {
  // GPT-3 175B (their Table 3 model): a = 96, h = 12288, s = 2048, b = 1, t = 8.
  GptConfig c;
  c.num_layers = 96, c.hidden_size = 12288, c.num_heads = 96, c.max_seq_len = 2048;
  const double s = 2048, b = 1, h = 12288, a = 96, t = 8, sbh = s * b * h;
  ModelOptions paper;
  paper.flash_attention = false;
  paper.dropout = true;
  auto act = [&](int tp, bool sp, Recompute rc, const ModelOptions& o, const Precision& p = Precision::bf16()) {
    return activation_bytes_per_layer(c, 2048, 1, tp, sp, rc, p, o);
  };
  // Table 2 rows.
  CHECK(act(1, false, Recompute::None, paper) == Approx(sbh * (34 + 5 * a * s / h)));
  CHECK(act(8, false, Recompute::None, paper) == Approx(sbh * (10 + 24 / t + 5 * a * s / (h * t))));
  CHECK(act(8, true, Recompute::None, paper) == Approx(sbh * (34 / t + 5 * a * s / (h * t))));
  CHECK(act(1, false, Recompute::Full, paper) == Approx(2 * sbh));
  // With sequence parallelism the stored block input is sequence-sharded.
  CHECK(act(8, true, Recompute::Full, paper) == Approx(2 * sbh / t));
  // 175B, t = 8, sp: 14.25 sbh per layer = 358.6 MB.
  CHECK(act(8, true, Recompute::None, paper) / 1e6 == Approx(358.6).margin(0.1));

  // Flash attention keeps only the fp32 log-sum-exp (4 bytes per query per head).
  ModelOptions flash = paper;
  flash.flash_attention = true;
  CHECK(act(8, false, Recompute::None, flash) == Approx(sbh * (10 + 24 / t) + 4 * a * s * b / t));
  // No dropout: the two sbh masks and the as^2b mask + dropout output go.
  ModelOptions pp3d_default;  // flash on, dropout off
  CHECK(act(1, false, Recompute::None, pp3d_default) == Approx(sbh * 32 + 4 * a * s * b));
  ModelOptions nodrop = paper;
  nodrop.dropout = false;
  CHECK(act(1, false, Recompute::None, nodrop) == Approx(sbh * (32 + 2 * a * s / h)));
  // fp32 activations: every 16-bit element doubles, the 1-byte masks stay.
  CHECK(act(1, false, Recompute::None, paper, Precision::fp32()) ==
        Approx(sbh * (2 * 32 + 2) + a * s * s * b * (4 + 1 + 4)));
}

TEST_CASE("micro-batches in flight per schedule", "[planner]") {
  Layout l;
  l.pp = 4;
  l.schedule = Schedule::GPipe;
  CHECK(in_flight_micro_batches(l, 16, 0) == 16);
  l.schedule = Schedule::OneFOneB;
  CHECK(in_flight_micro_batches(l, 16, 0) == 4);
  CHECK(in_flight_micro_batches(l, 16, 3) == 1);
  CHECK(in_flight_micro_batches(l, 2, 0) == 2);  // fewer micro-batches than stages
  // Interleaved, first stage: Korthikanti et al. sec. 4.2.3 give p(1 + (p-1)/(p v)).
  l.schedule = Schedule::Interleaved;
  l.virtual_stages = 2;
  CHECK(in_flight_micro_batches(l, 16, 0) == Approx(4 * (1 + 3.0 / (4 * 2))));
  l.pp = 8, l.virtual_stages = 3;
  CHECK(in_flight_micro_batches(l, 64, 0) == Approx(8 * (1 + 7.0 / (8 * 3))));
}

TEST_CASE("predict_memory breakdown is consistent", "[planner]") {
  const GptConfig c = gpt3_1p3b();
  Layout l;
  l.tp = 2, l.pp = 4, l.dp = 8, l.zero_stage = 1, l.micro_batch = 2, l.sequence_parallel = true;
  Workload w;
  w.global_batch = 512;
  const Precision p = Precision::bf16();
  const MemoryBreakdown m = predict_memory(c, l, p, w);
  double sum = 0;
  for (MemCategory cat : {MemCategory::Params, MemCategory::Grads, MemCategory::Optimizer, MemCategory::Activations,
                          MemCategory::Comm, MemCategory::Workspace})
    sum += m.get(cat);
  CHECK(sum == Approx(m.total()));
  // Model states follow the ZeRO formula with the psi of the reported stage.
  const ModelStateBytes st = model_state_bytes(stage_parameters(c, l, m.stage), 8, 1, p);
  CHECK(m.params + m.grads + m.optimizer == Approx(st.total()));
  CHECK(m.psi == Approx(stage_parameters(c, l, m.stage)));
  // The reported stage is the maximum over stages.
  for (int s = 0; s < 4; ++s) CHECK(predict_stage_memory(c, l, p, w, {}, s).total() <= m.total());
  // 1F1B, m = 32: stage 0 holds 4 micro-batches of 6 layers.
  const MemoryBreakdown s0 = predict_stage_memory(c, l, p, w, {}, 0);
  CHECK(s0.in_flight == 4);
  CHECK(s0.layers == 6);
  // Last stage: the logits buffer s*b*V/t*4.
  const MemoryBreakdown s3 = predict_stage_memory(c, l, p, w, {}, 3);
  CHECK(s3.logits == Approx(2048.0 * 2 * 50304 / 2 * 4));
  CHECK(s0.logits == 0);
}

TEST_CASE("memory monotonicity: ZeRO-3 over more GPUs, recompute", "[planner]") {
  const GptConfig c = gpt3_1p3b();
  const Precision p = Precision::bf16();
  Workload w;
  w.global_batch = 256;
  for (int tp : {1, 2})
    for (int pp : {1, 4}) {
      double prev = 1e30;
      for (int dp = 1; dp <= 64; dp *= 2) {
        Layout l;
        l.tp = tp, l.pp = pp, l.dp = dp, l.zero_stage = 3, l.micro_batch = 2, l.sequence_parallel = tp > 1;
        const double mem = predict_memory(c, l, p, w).total();
        CHECK(mem <= prev);
        prev = mem;
      }
    }
  for (Schedule sched : {Schedule::GPipe, Schedule::OneFOneB})
    for (int tp : {1, 4})
      for (int64_t mb : {1, 4}) {
        Layout l;
        l.tp = tp, l.pp = 2, l.dp = 2, l.micro_batch = mb, l.schedule = sched, l.sequence_parallel = tp > 1;
        const double none = predict_memory(c, l, p, w).activations;
        l.recompute = Recompute::Full;
        const double full = predict_memory(c, l, p, w).activations;
        CHECK(full < none);
      }
}
