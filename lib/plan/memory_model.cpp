// Planner memory model: parameters per stage, ZeRO model states, activations
// (Korthikanti et al. 2022) and the per-GPU breakdown.
#include <algorithm>

#include "pp3d/core/error.h"
#include "pp3d/plan/planner.h"
#include "plan/plan_detail.h"

namespace pp3d {

double detail::block_parameters(const GptConfig& cfg, int tp) {
  const double C = double(cfg.hidden_size), F = double(cfg.mlp_hidden()), t = tp;
  if (cfg.is_llama()) {
    const double Ckv = double(cfg.kv_heads() * cfg.head_dim());
    return 2 * C                          // input_layernorm, post_attention_layernorm (replicated)
           + (C * C + 2 * Ckv * C) / t    // q, k, v: column-parallel (k, v by kv head)
           + C * C / t                    // o: row-parallel
           + 3 * C * F / t;               // gate, up (column), down (row); no biases
  }
  return 2 * C                        // ln_1 (replicated)
         + (3 * C * C + 3 * C) / t    // c_attn: column-parallel weight + bias
         + C * C / t + C              // attn.c_proj: row-parallel weight, replicated bias
         + 2 * C                      // ln_2
         + (F * C + F) / t            // c_fc
         + C * F / t + C;             // mlp.c_proj
}

double detail::linear_weights_per_block(const GptConfig& cfg) {
  const double C = double(cfg.hidden_size), F = double(cfg.mlp_hidden());
  if (cfg.is_llama()) return 2 * C * C + 2 * C * double(cfg.kv_heads() * cfg.head_dim()) + 3 * C * F;
  return 4 * C * C + 2 * C * F;
}

std::vector<int64_t> stage_layer_counts(const GptConfig& cfg, const Layout& l) {
  PP3D_CHECK(l.pp >= 1 && l.pp <= cfg.num_layers, "pp={} must be in [1, num_layers={}]", l.pp, cfg.num_layers);
  PP3D_CHECK(l.uneven_pp || cfg.num_layers % l.pp == 0, "pp={} does not divide num_layers={}", l.pp, cfg.num_layers);
  std::vector<int64_t> n(l.pp, cfg.num_layers / l.pp);
  const int64_t rem = cfg.num_layers % l.pp;
  for (int64_t i = 0; i < rem; ++i) ++n[l.pp - 1 - i];  // the last stages hold fewer in-flight micro-batches
  return n;
}

double stage_parameters(const GptConfig& cfg, const Layout& l, int stage) {
  PP3D_CHECK(stage >= 0 && stage < l.pp, "stage {} out of range for pp={}", stage, l.pp);
  const auto layers = stage_layer_counts(cfg, l);
  const double C = double(cfg.hidden_size), V = double(cfg.padded_vocab()), t = l.tp;
  double n = double(layers[stage]) * detail::block_parameters(cfg, l.tp);
  if (stage == 0) n += V * C / t + (cfg.is_llama() ? 0.0 : double(cfg.max_seq_len) * C);  // wte; wpe (not Llama)
  if (stage == l.pp - 1) {
    n += cfg.is_llama() ? C : 2 * C;  // final RMSNorm weight / ln_f weight + bias
    const bool own_head = !cfg.tied_embeddings || l.pp > 1;  // tied + pp>1: a copy of wte
    if (own_head) n += V * C / t;
  }
  return n;
}

ModelStateBytes model_state_bytes(double psi, int nd, int zero_stage, const Precision& prec) {
  PP3D_CHECK(nd >= 1, "data-parallel size must be >= 1, got {}", nd);
  PP3D_CHECK(zero_stage >= 0 && zero_stage <= 3, "zero stage must be 0..3, got {}", zero_stage);
  ModelStateBytes s;
  s.params = psi * prec.param_bytes() / (zero_stage >= 3 ? nd : 1);
  s.grads = psi * prec.grad_bytes() / (zero_stage >= 2 ? nd : 1);
  s.optimizer = psi * prec.optimizer_bytes() / (zero_stage >= 1 ? nd : 1);
  return s;
}

namespace {

// Llama block (Korthikanti-style accounting, no dropout: Llama has none).
// Replicated (split by tp only with SP): the two RMSNorm inputs x, x2 and
// outputs h1 (input of q/k/v), h2 (input of gate/up): 4 sbh. Split by heads
// / MLP columns: RoPE'd q (sbh) and k, v (sbh * Hkv/Hq each), the attention
// output (input of o, sbh), SwiGLU's gate and up outputs and their product
// silu(gate) * up (input of down): 3 sbF. The RMSNorm statistics (one per
// token) are negligible here, as LayerNorm's are in Korthikanti et al.
double llama_activation_bytes(const GptConfig& cfg, double s, double b, double t, double repl_div,
                              const Precision& prec, const ModelOptions& opt) {
  const double h = double(cfg.hidden_size), a = double(cfg.num_heads), F = double(cfg.mlp_hidden());
  const double kv = double(cfg.kv_heads()) / a, ab = prec.activation_bytes(), sbh = s * b * h;
  double replicated = 4 * ab * sbh;
  double sharded = (2 + 2 * kv) * ab * sbh + 3 * ab * s * b * F;  // q, att (sbh each), k, v; gate, up, product
  if (prec.fp8_gemm) {  // FP8 linear layers keep their inputs as 1-byte casts: h1, h2; att, product
    replicated -= 2 * (ab - 1) * sbh;
    sharded -= (ab - 1) * (sbh + s * b * F);
  }
  const double scores = opt.flash_attention ? 4 * a * s * b : ab * a * s * s * b;
  return replicated / repl_div + (sharded + scores) / t;
}

}  // namespace

double activation_bytes_per_layer(const GptConfig& cfg, int64_t seq_len, int64_t micro_batch, int tp,
                                  bool sequence_parallel, Recompute recompute, const Precision& prec,
                                  const ModelOptions& opt) {
  const double s = double(seq_len), b = double(micro_batch), h = double(cfg.hidden_size);
  const double a = double(cfg.num_heads), F = double(cfg.mlp_hidden()), t = tp, ab = prec.activation_bytes();
  const double sbh = s * b * h;
  const double repl_div = (sequence_parallel && tp > 1) ? t : 1.0;
  if (recompute == Recompute::Full) return ab * sbh / repl_div;  // only the block input is kept
  if (cfg.is_llama()) return llama_activation_bytes(cfg, s, b, t, repl_div, prec, opt);
  // Not split by tensor parallelism: inputs of the two LayerNorms, of QKV and
  // of fc (4 tensors of sbh) and the two dropout masks (1 byte each).
  double replicated = 4 * ab * sbh + (opt.dropout ? 2 * sbh : 0.0);
  // Split by heads / MLP columns: Q, K, V, the attention output (input of
  // c_proj), the GELU input and output.
  double sharded = 4 * ab * sbh + 2 * ab * s * b * F;
  // FP8 linear layers save their inputs as the FP8 casts (1 B): the QKV and
  // fc inputs (replicated), the attention output and the GELU output (sharded).
  if (prec.fp8_gemm) {
    replicated -= 2 * (ab - 1) * sbh;
    sharded -= (ab - 1) * (sbh + s * b * F);
  }
  // Attention scores: softmax output (+ dropout mask and dropout output), or
  // with a flash-style kernel only the fp32 log-sum-exp per query and head.
  const double scores = opt.flash_attention ? 4 * a * s * b
                                            : ab * a * s * s * b + (opt.dropout ? (1 + ab) * a * s * s * b : 0.0);
  return replicated / repl_div + (sharded + scores) / t;
}

double in_flight_micro_batches(const Layout& l, int64_t m, int stage) {
  PP3D_CHECK(stage >= 0 && stage < l.pp && m >= 1, "stage {} (pp={}), micro-batches {}", stage, l.pp, m);
  switch (l.schedule) {
    case Schedule::GPipe: return double(m);
    case Schedule::OneFOneB: return double(std::min<int64_t>(l.pp - stage, m));
    case Schedule::ZeroBubbleH1: return double(std::min<int64_t>(l.pp, m));
    case Schedule::Interleaved: {
      const int64_t p = l.pp, v = l.virtual_stages;
      // m = p: every chunk's forward runs first (detail::all_forwards_first).
      const int64_t chunks = m == p ? m * v : std::min<int64_t>(2 * (p - stage - 1) + (v - 1) * p + 1, m * v);
      return double(chunks) / double(v);
    }
  }
  return double(m);
}

double MemoryBreakdown::get(MemCategory c) const {
  switch (c) {
    case MemCategory::Params: return params;
    case MemCategory::Grads: return grads;
    case MemCategory::Optimizer: return optimizer;
    case MemCategory::Activations: return activations;
    case MemCategory::Comm: return comm;
    case MemCategory::Workspace: return workspace;
    case MemCategory::Other: return 0;
  }
  return 0;
}

MemoryBreakdown predict_stage_memory(const GptConfig& cfg, const Layout& l, const Precision& prec,
                                     const Workload& work, const ModelOptions& opt, int stage) {
  detail::check_model_fit(cfg, l, work);
  PP3D_CHECK(stage >= 0 && stage < l.pp, "stage {} out of range for pp={}", stage, l.pp);
  const int64_t s = detail::plan_seq_len(cfg, work), b = l.micro_batch, m = detail::plan_micro_batches(l, work);
  const double h = double(cfg.hidden_size), V = double(cfg.padded_vocab()), ab = prec.activation_bytes();
  MemoryBreakdown r;
  r.stage = stage;
  r.psi = stage_parameters(cfg, l, stage);
  const ModelStateBytes st = model_state_bytes(r.psi, l.dp, l.zero_stage, prec);
  r.params = st.params;
  r.grads = st.grads;
  r.optimizer = st.optimizer;
  // FP8 (Transformer Engine): every linear weight of the stage keeps an FP8
  // copy and its FP8 transpose between micro-batches, 2 B per parameter. With
  // ZeRO-3 only the gathered layers are cast (covered by the comm buffers).
  if (prec.fp8_gemm && l.zero_stage < 3) {
    r.params += 2.0 * double(stage_layer_counts(cfg, l)[stage]) * detail::linear_weights_per_block(cfg) / l.tp;
  }

  r.layers = stage_layer_counts(cfg, l)[stage];
  r.in_flight = in_flight_micro_batches(l, m, stage);
  r.activation_per_layer =
      activation_bytes_per_layer(cfg, s, b, l.tp, l.sequence_parallel, l.recompute, prec, opt);
  if (l.recompute == Recompute::Full && r.layers > 0)  // backward re-materialises one block at a time
    r.recompute_working =
        activation_bytes_per_layer(cfg, s, b, l.tp, l.sequence_parallel, Recompute::None, prec, opt);
  if (stage == l.pp - 1) {
    // GPipe (and interleaved with m = pp): every micro-batch's logits; zb-h1: the logits gradients of the
    // head's pending weight parts (min(pp, m) - 1) next to the current logits.
    const double live = detail::all_forwards_first(l, m)     ? double(m)
                        : l.schedule == Schedule::ZeroBubbleH1 ? double(std::min<int64_t>(l.pp, m))
                                                               : 1.0;
    r.logits = live * double(s) * double(b) * V / l.tp * prec.logits_bytes;
  }
  r.activations = r.in_flight * double(r.layers) * r.activation_per_layer + r.recompute_working + r.logits;
  if (opt.pp3d_accounting) {
    // pp3d keeps each bucket's full gradient buffer (in the gradient dtype:
    // f32, or 16-bit with --grad-dtype param) from the step's first backward
    // until its reduce-scatter in the last micro-batch (ZeRO-2/3: with one
    // micro-batch the buffers are freed as their asynchronous reduce-scatters
    // complete, so this is then an upper bound), and counts ZeRO-3's gathered
    // layers as params.
    if (l.zero_stage >= 2 && l.dp > 1) r.grads = r.psi * prec.grad_bytes() * (1.0 + 1.0 / l.dp);
    if (l.zero_stage == 3 && l.dp > 1)
      r.params += detail::pp3d_zero3_gathered(cfg, l, stage, opt.prefetch_layers) * prec.param_bytes();
    detail::pp3d_activations(cfg, l, prec, work, opt, stage, r);
  }

  if (l.dp > 1) r.comm += 2 * opt.bucket_bytes;                   // gradient buckets in flight
  if (l.pp > 1) r.comm += 2 * double(s) * double(b) * h * ab;      // p2p send + receive buffers
  if (l.zero_stage == 3 && l.dp > 1 && !opt.pp3d_accounting) {   // gathered params: current + prefetched
    double largest = detail::block_parameters(cfg, l.tp);
    if (stage == 0 || stage == l.pp - 1) largest = std::max(largest, V * h / l.tp);
    r.comm += 2 * largest * prec.param_bytes();
  }
  if (opt.pp3d_accounting) {
    // pp3d: p2p buffers are activations (counted there); ZeRO-1/2 stage the
    // reduce-scatter result and the post-step parameter all-gather through an
    // owned-shard copy (Comm); TP/SP staging buffers are small and not modelled,
    // nor are the CPU communicators' f32 staging copies of 16-bit buffers
    // (--grad-dtype param; NCCL reduces them in 16 bits, docs/PLANNER.md).
    r.comm = l.dp > 1 && (l.zero_stage == 1 || l.zero_stage == 2)
                 ? r.psi * std::max(prec.grad_bytes(), prec.param_bytes()) / l.dp
                 : 0.0;
  }
  r.workspace = opt.workspace_bytes;
  return r;
}

MemoryBreakdown predict_memory(const GptConfig& cfg, const Layout& l, const Precision& prec, const Workload& work,
                               const ModelOptions& opt) {
  MemoryBreakdown best = predict_stage_memory(cfg, l, prec, work, opt, 0);
  for (int st = 1; st < l.pp; ++st) {
    MemoryBreakdown r = predict_stage_memory(cfg, l, prec, work, opt, st);
    if (r.total() > best.total()) best = r;
  }
  return best;
}

}  // namespace pp3d
