// The planner's "pp3d accounting": memory exactly as pp3d's own trainer
// allocates it (what Allocator::stats reports per category), derived from the
// tensors lib/model and lib/parallel keep. Cross-checked against the allocator
// by tests/parallel/planner_alloc_test.cpp on every CPU-tested layout.
#include <algorithm>
#include <vector>

#include "plan/plan_detail.h"
#include "pp3d/plan/planner.h"

namespace pp3d::detail {

// Elements per tensor (N = b*s tokens, Nl = N/t in the sequence-parallel
// regions, t = tp) and their sizes in bytes: rb the stored residual stream
// (x, x2, the hidden state between layers: 4, 2 with --activation-dtype
// param), ob the per-op activations as stored (2 with 16-bit compute or
// storage), gb the per-op gradients and the GEMM operands as the ops read
// them (2 with 16-bit compute), 4 the norm statistics, the log-sum-exp, the
// residual gradients and every f32 GEMM result before it is rounded.
//  block (Gpt::Block::forward keeps): x, x2 (Nl*C, rb), ln1, ln2 (Nl*C, ob),
//    4 LayerNorm statistics (Nl each), qkv 3NC/t, att NC/t, fc and gelu
//    N*F/t (ob), lse N*a/t; with recompute only x.
//  head (Gpt::head_forward keeps): x_final (Nl*C, rb), ln_f out (Nl*C, ob),
//    2 statistics, logits N*V/t (f32), max and sum-exp (N each).
//  Backward temporaries at the peak: on the head stage the logits gradient
//    (N*V/t, f32) while everything of the micro-batch is still alive, or
//    (logits freed) its 16-bit copy and the head GEMM's f32 input gradient
//    (N*C, + its 16-bit rounding; SP: the re-gathered ln_f output N*C and the
//    reduce-scattered result Nl*C); in a block's backward the incoming
//    gradient (Nl*C, f32) while the block is still whole (with recompute: the
//    re-materialised block on top of the kept inputs) and the last Linear's
//    backward: the 16-bit rounding of that gradient (Nl*C), its sequence
//    all-gather (N*C, SP), the f32 input gradient N*F/t and its 16-bit
//    rounding (GPT with 16-bit compute: only the rounding, the fused
//    dgrad + GELU backward keeps the f32 result in Workspace). With 16-bit storage and f32 compute a block's forward ends with
//    every per-op tensor and x2, out in f32 next to the first rounded copy.
//  zb-h1 (split backward): stage r holds 1F1B's min(pp - r, m) full sets and
//    the pending weight parts of min(pp, m) minus that many micro-batches:
//    per block the four Linear GEMMs' inputs (ln1, ln2: N*C, their SP
//    all-gathers (gb); att N*C/t, gelu N*F/t: as stored when the GEMM reads
//    them as they are (f32, or 16-bit compute), else their f32 copies are
//    Workspace) and output gradients (gb: d(out), d(x2) N*C; d(qkv) 3NC/t,
//    d(fc) N*F/t); on the head stage the logits gradient N*V/t and ln_f's
//    output N*C. GPT with 16-bit compute: gpt16_input_part below.
//  Llama (lib/model/llama_layers.cpp BlockLayer keeps): x, x2 (rb), h1, h2
//    (Nl*C each, ob), rstd1, rstd2 (Nl each), RoPE'd q NC/t, k and v N*Ckv/t
//    each (Ckv = kv_heads * head_dim), att NC/t, lse N*a/t, gate, up and the
//    SwiGLU product N*F/t each (ob); the head keeps x (rb), h (ob), rstd
//    (Nl), logits and the two cross-entropy statistics. Block backward peak:
//    the incoming gradient (Nl*C) and max(down's backward as GPT's last
//    Linear, down's input gradient + gate/up gradients 3N*F/t with the
//    product freed).
namespace {

// zb-h1 input part of GPT with 16-bit compute (fused c_fc + GELU; traced with
// the allocator): the peak of the current block's input part, then the stage
// around it. The block's moments, from block_full (re-materialised with
// recompute) and without the incoming gradient: (a) mlp_proj's fused
// dgrad + DGELU: d(out) rounded (N*C 16-bit; SP: also the local Nl*C before
// the gather) and d(fc) N*F/t (its f32 GEMM result is Workspace); (b) c_fc's
// input gradient, fc freed: + ln2 re-gathered (SP, N*C), the f32 dx N*C and
// its rounding (SP: the reduce-scattered Nl*C f32 instead); then x2, ln2's
// statistics (and SP's local ln2) freed, the f32 d(x2) Nl*C and its rounding
// N*C (gathered with SP) live to the end; (c) attn_proj's input gradient:
// f32 N*C/t and its rounding d(att) (SP: + the local rounded d(x2));
// (d) attention's backward: d(att) next to d(qkv) 3N*C/t; (e) c_attn's input
// gradient, qkv and lse freed: + ln1 re-gathered (SP), the f32 dx N*C and its
// rounding (SP: the reduce-scattered Nl*C f32). The upper blocks hold their
// weight parts and the lower ones are kept, so the peak is in the top block
// (the others kept) or in the bottom one (the others pending, and on a stage
// that receives its gradient, the received one is still alive next to the
// block's own incoming gradient); on the head stage the micro-batch's own
// head weight part is pending too.
double gpt16_input_part(const GptConfig& cfg, const Layout& l, double N, double Nl, double rb, double block_full,
                        double block_kept, double block_weight, double head_weight, double full_sets,
                        double weight_sets, double L, bool last) {
  const double t = l.tp, C = double(cfg.hidden_size), F = double(cfg.mlp_hidden()), a = double(cfg.num_heads);
  const bool sp = l.sequence_parallel && l.tp > 1;
  const double g = 2.0;  // 16-bit per-op activations and gradients
  const double dy = N * C * g, dfc = N * F / t * g, ln_gathered = sp ? N * C * g : 0.0;
  const double dx_gemm = N * C * 4 + (sp ? Nl * C * 4 : N * C * g);  // a column-parallel input gradient
  const double mlp = block_full + dy + dfc + (sp ? Nl * C * g : 0.0);
  const double fc_in = block_full - N * F / t * g + dy + dfc + ln_gathered + dx_gemm;
  const double after_ln2 = block_full - N * F / t * g - Nl * C * rb - 2 * Nl * 4 - (sp ? Nl * C * g : 0.0) + dy + dfc +
                           ln_gathered + Nl * C * 4 + N * C * g;
  const double proj_in = after_ln2 + (sp ? Nl * C * g : 0.0) + N * C / t * (4 + g);
  const double attention = after_ln2 + N * C / t * g + 3 * N * C / t * g;
  // qkv freed and d(qkv) (same size) kept; lse freed.
  const double qkv_in = after_ln2 - N * a / t * 4 + ln_gathered + dx_gemm;
  const double current = std::max({mlp, fc_in, proj_in, attention, qkv_in});
  const double incoming = Nl * C * 4;
  const double top = (L - 1) * block_kept;
  const double bottom = (L - 1) * block_weight + (L > 1 && !last ? incoming : 0.0);
  return (full_sets - 1) * L * block_kept + weight_sets * L * block_weight + std::max(top, bottom) + current +
         incoming + (last ? (weight_sets + 1) * head_weight : 0.0);
}

}  // namespace

void pp3d_activations(const GptConfig& cfg, const Layout& l, const Precision& prec, const Workload& work,
                      const ModelOptions&, int stage, MemoryBreakdown& r) {
  const double s = double(plan_seq_len(cfg, work)), b = double(l.micro_batch), t = l.tp;
  const double C = double(cfg.hidden_size), F = double(cfg.mlp_hidden()), a = double(cfg.num_heads);
  const double Vl = double(cfg.padded_vocab()) / t, lb = prec.logits_bytes;
  const bool c16 = prec.compute16;
  const double rb = prec.activation_bytes(), ob = c16 || rb < 4 ? 2.0 : 4.0, gb = c16 ? 2.0 : 4.0;
  // The GEMM inputs a deferred weight part holds as Activations: the stored
  // tensor when the GEMM reads it as it is, none when it reads an f32 copy.
  const double xb = c16 ? 2.0 : ob == 4 ? 4.0 : 0.0;
  const bool sp = l.sequence_parallel && l.tp > 1, last = stage == l.pp - 1;
  const double N = b * s, Nl = sp ? N / t : N;
  const bool llama = cfg.is_llama();
  const double Ckv = double(cfg.kv_heads() * cfg.head_dim());
  // Per block: the residual x, x2; the per-op tensors (norm outputs in the
  // Nl regions, the tensor-parallel ones /t); the f32 statistics.
  const double op_elems = 2 * Nl * C + N * (llama ? 2 * C + 2 * Ckv + 3 * F : 4 * C + 2 * F) / t;
  const double stat_elems = (llama ? 2 : 4) * Nl + N * a / t;
  const double block_full = 2 * Nl * C * rb + op_elems * ob + stat_elems * 4;
  const bool rc = l.recompute == Recompute::Full;
  const double block_kept = rc ? Nl * C * rb : block_full;
  const double L = double(r.layers);
  const double head_stats = llama ? Nl : 2 * Nl;  // RMSNorm rstd / LayerNorm mean and rstd
  const double head = last ? Nl * C * (rb + ob) + (head_stats + 2 * N) * 4 + N * Vl * lb : 0.0;
  const double k = r.in_flight;  // micro-batch equivalents (interleaved: chunks / v)
  const double rc_extra = rc && L > 0 ? block_full - Nl * C * rb : 0.0;
  // The last Linear's backward (mlp_proj / down): d(out) rounded to 16 bits
  // and all-gathered (SP), its f32 input gradient and that rounded. GPT with
  // 16-bit compute fuses that GEMM with GELU's backward (linear16_dgelu_backward):
  // the f32 GEMM result is a Workspace tensor, only the 16-bit d(fc) is an Activation.
  const double dgrad_bytes = !c16 ? 4.0 : llama ? 6.0 : 2.0;
  const double last_linear = (c16 ? 2 * Nl * C : 0.0) + (sp ? N * C * gb : 0.0) + N * F / t * dgrad_bytes;
  // Llama: down's input gradient next to the gate and up gradients, the product freed.
  const double mlp_grads = llama ? std::max(last_linear, N * F / t * (3 * gb - ob)) : last_linear;
  // 16-bit storage with f32 compute: the forward's f32 tensors before rounding.
  const double fwd_round = c16 || ob == 4 ? 0.0 : op_elems * (4 - ob) + Nl * C * ((4 - rb) + 4 + ob);
  const double transient = std::max(Nl * C * 4 + mlp_grads, fwd_round);
  // 1F1B / interleaved on a stage that receives activations: the next
  // micro-batch's input is received before this backward runs (zb-h1: still
  // counted for f32 and Llama, untraced there).
  const int64_t m = plan_micro_batches(l, work);
  const bool forwards_first = all_forwards_first(l, m);  // GPipe; interleaved with m = pp
  const bool zb = l.schedule == Schedule::ZeroBubbleH1;
  // GPT with 16-bit compute under zb-h1 (allocator trace, pp2 and tp2 SP pp2):
  // the next micro-batch's input arrives after the input part, not before it.
  const bool zb_gpt16 = zb && c16 && !llama;
  const double pending = stage > 0 && !forwards_first && m > 1 && !zb_gpt16 ? Nl * C * rb : 0.0;
  // Blocks of every in-flight micro-batch (chunk); a head's tensors live from
  // its forward to its backward, which follow each other on the last stage
  // except when all m forwards run first (GPipe, interleaved with m = pp).
  const double full_sets = zb ? double(std::min<int64_t>(l.pp - stage, m)) : k, weight_sets = k - full_sets;
  // Per block: output gradients of q/k/v (c_attn), o, gate/up (c_fc), down;
  // the inputs h1 (ln1), h2 (ln2) (all-gathered with SP), att, product (gelu).
  const double col_out = llama ? C + 2 * Ckv + 2 * F : 3 * C + F;
  const double d_outs = (2 * N * C + N * col_out / t) * gb;
  const double block_weight = d_outs + 2 * N * C * (sp ? gb : xb) + N * (C + F) / t * xb;
  const double head_weight = N * Vl * gb + N * C * (sp ? gb : xb);
  const double blocks = full_sets * L * block_kept + weight_sets * L * block_weight;
  const double other_heads = !last ? 0.0
                             : forwards_first ? (k - 1) * head
                                                             : weight_sets * head_weight;
  double in_block = L > 0 ? blocks + other_heads + rc_extra + transient : 0.0;
  if (zb && L > 0) {
    // (f32 and Llama; GPT with 16-bit compute: gpt16_input_part.)
    // The input part of a micro-batch's backward: its upper blocks already
    // hold weight-part tensors; the current block, next to its incoming
    // gradient, is counted whole (re-materialised with recompute) next to
    // all its output gradients (what f32 measures), or in the last Linear's
    // backward, or at its end (16-bit compute: the block's tensors freed by
    // then are larger than what is still allocated): x, the first norm's
    // statistics, its own weight-part tensors, the f32 residual gradients
    // d(x2), d(h1) or d(ln1) and d(x) (+ d(h1)'s rounding) and, in Llama, the
    // locals da and datt that live to the end of BlockLayer::backward_parts.
    const double locals =
        Nl * C * (llama ? 12 : 8) + (c16 ? 2 * Nl * C : 0.0) + (llama ? N * (F + C) / t * gb : 0.0);
    const double block_end = Nl * C * rb + (llama ? 1 : 2) * Nl * 4 + block_weight + locals;
    const double in_input_part = (full_sets - 1) * L * block_kept + weight_sets * L * block_weight +
                                 (L - 1) * std::max(block_kept, block_weight) +
                                 std::max({block_full + d_outs, block_full + mlp_grads, block_end}) + Nl * C * 4 +
                                 other_heads;
    in_block = std::max(in_block, zb_gpt16 ? gpt16_input_part(cfg, l, N, Nl, rb, block_full, block_kept, block_weight,
                                                               head_weight, full_sets, weight_sets, L, last)
                                           : in_input_part);
  }
  // Head backward: the logits gradient next to the logits; then (logits
  // freed) its 16-bit copy and the head GEMM's f32 input gradient N*C (+ its
  // rounding), with SP the re-gathered ln_f output (N*C) and the
  // reduce-scattered result (Nl*C) instead of the rounding.
  const double head_dx = (sp ? N * C * gb + (N + Nl) * C * 4 : N * C * (c16 ? 6 : 4)) + N * Vl * (c16 ? 2 : 0);
  const double head_grad = std::max(N * Vl * 4, N * Vl * (4 - lb) + head_dx);
  const double in_head = last ? blocks + other_heads + head + head_grad : 0.0;
  r.activation_per_layer = block_kept;
  r.recompute_working = rc_extra;
  r.logits = last ? N * Vl * lb : 0.0;
  r.activations = std::max(in_block, in_head) + pending;
}

namespace {

// Parameter elements of each ZeRO-3 bucket (one per layer) of `stage` in
// forward order: embedding (stage 0), blocks, head (last stage: ln_f, plus
// the head's own wte copy unless the whole model is tied). `head_uses_emb`:
// a whole tied model's head also uses the embedding bucket.
std::vector<double> layer_buckets(const GptConfig& cfg, const Layout& l, int stage, bool& head_uses_emb, double& emb) {
  const double C = double(cfg.hidden_size), Vt = double(cfg.padded_vocab()) / l.tp;
  emb = Vt * C + (cfg.is_llama() ? 0.0 : double(cfg.max_seq_len) * C);  // wte (+ wpe)
  std::vector<double> order;
  if (stage == 0) order.push_back(emb);
  const int64_t layers = stage_layer_counts(cfg, l)[stage];
  for (int64_t i = 0; i < layers; ++i) order.push_back(block_parameters(cfg, l.tp));
  head_uses_emb = false;
  if (stage == l.pp - 1) {
    const bool own_head = !cfg.tied_embeddings || l.pp > 1;
    head_uses_emb = !own_head;
    order.push_back((cfg.is_llama() ? C : 2 * C) + (own_head ? Vt * C : 0.0));
  }
  return order;
}

double max_window(const std::vector<double>& v, std::size_t w, double extra_at_end) {
  double best = 0;
  for (std::size_t i = 0; i < v.size(); ++i) {
    double sum = 0;
    for (std::size_t j = i; j < std::min(v.size(), i + w); ++j) sum += v[j];
    if (i + w >= v.size()) sum += extra_at_end;  // the window reaches the last element
    best = std::max(best, sum);
  }
  return best;
}

}  // namespace

double pp3d_zero3_gathered(const GptConfig& cfg, const Layout& l, int stage, int prefetch) {
  bool head_uses_emb = false;
  double emb = 0;
  const std::vector<double> order = layer_buckets(cfg, l, stage, head_uses_emb, emb);
  // The head's buckets (with a tied whole model: + the embedding's) next to
  // the prefetched ones: windows of 1 + prefetch consecutive layers.
  return max_window(order, std::size_t(std::max(prefetch, 0)) + 1, head_uses_emb ? emb : 0.0);
}

}  // namespace pp3d::detail
