// The planner's "pp3d accounting": memory exactly as pp3d's own trainer
// allocates it (what Allocator::stats reports per category), derived from the
// tensors lib/model and lib/parallel keep. Cross-checked against the allocator
// by tests/parallel/planner_alloc_test.cpp on every CPU-tested layout.
#include <algorithm>
#include <vector>

#include "plan/plan_detail.h"
#include "pp3d/plan/planner.h"

namespace pp3d::detail {

// Elements, all f32 in pp3d (new_activation): N = b*s tokens, Nl = N/t in the
// sequence-parallel regions, t = tp.
//  block (Gpt::Block::forward keeps): x, ln1, x2, ln2 (Nl*C each), 4 LayerNorm
//    statistics (Nl each), qkv 3NC/t, att NC/t, lse N*a/t, fc and gelu N*F/t;
//    with recompute only x.
//  head (Gpt::head_forward keeps): x_final, ln_f out (Nl*C), 2 statistics,
//    logits N*V/t, max and sum-exp (N each).
//  Backward temporaries at the peak: on the head stage the logits gradient
//    (N*V/t) while everything of the micro-batch is still alive (or, when
//    larger, the head GEMM's input-gradient buffers); in a block's
//    backward the incoming gradient (Nl*C), its sequence all-gather (N*C, SP)
//    and the GELU-output gradient (N*F/t) while the block is still whole (with
//    recompute: the re-materialised block on top of the kept inputs).
//  zb-h1 (split backward): stage r holds 1F1B's min(pp - r, m) full sets and
//    the pending weight parts of min(pp, m) minus that many micro-batches:
//    per block the four Linear GEMMs' inputs (ln1, ln2: N*C; att N*C/t, gelu
//    N*F/t; Activations only when f32, else their f32 copies are Workspace)
//    and output gradients (f32: d(out), d(x2) N*C; d(qkv) 3NC/t, d(fc) N*F/t);
//    on the head stage the logits gradient N*V/t and ln_f's output N*C.
void pp3d_activations(const GptConfig& cfg, const Layout& l, const Precision& prec, const Workload& work,
                      const ModelOptions&, int stage, MemoryBreakdown& r) {
  const double s = double(plan_seq_len(cfg, work)), b = double(l.micro_batch), t = l.tp;
  const double C = double(cfg.hidden_size), F = double(cfg.mlp_hidden()), a = double(cfg.num_heads);
  const double Vl = double(cfg.padded_vocab()) / t, ab = prec.activation_bytes(), lb = prec.logits_bytes;
  const bool sp = l.sequence_parallel && l.tp > 1, last = stage == l.pp - 1;
  const double N = b * s, Nl = sp ? N / t : N;
  const double block_full = 4 * Nl * C + 4 * Nl + N * (4 * C + a + 2 * F) / t;
  const bool rc = l.recompute == Recompute::Full;
  const double block_kept = rc ? Nl * C : block_full;
  const double L = double(r.layers);
  const double head = last ? (2 * Nl * C + 2 * Nl + 2 * N) * ab + N * Vl * lb : 0.0;
  const double k = r.in_flight;  // micro-batch equivalents (interleaved: chunks / v)
  const double rc_extra = rc && L > 0 ? (block_full - Nl * C) * ab : 0.0;
  const double transient = (Nl * C + (sp ? N * C : 0.0) + N * F / t) * ab;
  // 1F1B / interleaved on a stage that receives activations: the next
  // micro-batch's input is received before this backward runs.
  const int64_t m = plan_micro_batches(l, work);
  const double pending = stage > 0 && l.schedule != Schedule::GPipe && m > 1 ? Nl * C * ab : 0.0;
  // Blocks of every in-flight micro-batch (chunk); a head's tensors live from
  // its forward to its backward, which follow each other on the last stage
  // except under GPipe (all m forwards first).
  const bool zb = l.schedule == Schedule::ZeroBubbleH1;
  const double full_sets = zb ? double(std::min<int64_t>(l.pp - stage, m)) : k, weight_sets = k - full_sets;
  const double x_bytes = ab == 4 ? 4.0 : 0.0;  // the GEMM inputs a weight part keeps, when they are Activations
  const double block_weight = (2 * N * C + N * (3 * C + F) / t) * 4 + (2 * N * C + N * (C + F) / t) * x_bytes;
  const double head_weight = N * Vl * 4 + N * C * x_bytes;
  const double blocks = full_sets * L * block_kept * ab + weight_sets * L * block_weight;
  const double other_heads = !last ? 0.0
                             : l.schedule == Schedule::GPipe ? (k - 1) * head
                                                             : weight_sets * head_weight;
  double in_block = L > 0 ? blocks + other_heads + rc_extra + transient : 0.0;
  if (zb && L > 0) {
    // The input part of a micro-batch's backward: its upper blocks already
    // hold weight-part tensors, the current block is whole (re-materialised
    // with recompute) next to its output gradients and d(input).
    const double d_out = (2 * N * C + N * (3 * C + F) / t) * 4 + Nl * C * 4;
    const double in_input_part = (full_sets - 1) * L * block_kept * ab + weight_sets * L * block_weight +
                                 (L - 1) * std::max(block_kept * ab, block_weight) + block_full * ab + d_out +
                                 other_heads;
    in_block = std::max(in_block, in_input_part);
  }
  // Head backward: the logits gradient next to the logits; then (logits
  // freed) the head GEMM's input gradient N*C, with SP also the re-gathered
  // ln_f output (N*C) and the reduce-scattered result (Nl*C).
  const double head_grad = std::max(N * Vl * lb, (N * C * (sp ? 2 : 1) + (sp ? Nl * C : 0.0)) * ab);
  const double in_head = last ? blocks + other_heads + head + head_grad : 0.0;
  r.activation_per_layer = block_kept * ab;
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
  emb = Vt * C + double(cfg.max_seq_len) * C;
  std::vector<double> order;
  if (stage == 0) order.push_back(emb);
  const int64_t layers = stage_layer_counts(cfg, l)[stage];
  for (int64_t i = 0; i < layers; ++i) order.push_back(block_parameters(cfg, l.tp));
  head_uses_emb = false;
  if (stage == l.pp - 1) {
    const bool own_head = !cfg.tied_embeddings || l.pp > 1;
    head_uses_emb = !own_head;
    order.push_back(2 * C + (own_head ? Vt * C : 0.0));
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
