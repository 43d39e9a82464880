// Planner step-time model: GEMMs against peak x efficiency(shape), memory-bound
// ops against HBM bandwidth, alpha-beta collectives, pipeline bubble, ZeRO.
#include <algorithm>
#include <cmath>

#include "pp3d/core/error.h"
#include "pp3d/plan/planner.h"
#include "plan/plan_detail.h"

namespace pp3d {
namespace {

// GEMMs of one kind (precision): time = max(compute at peak x eff(shape),
// operand traffic / HBM). add() returns the time of the added GEMMs.
struct Gemm {
  double time = 0, flops = 0;
  double peak = 0;
  const GemmEfficiency* eff = nullptr;
  double add(const Cluster& c, double count, double m, double n, double k, double elem_bytes) {
    const double f = 2 * m * n * k;
    const double compute = f / (peak * (*eff)(m, n, k));
    const double memory = (m * k + k * n + m * n) * elem_bytes / c.gpu.hbm_stream_bw();
    const double dt = count * std::max(compute, memory);
    time += dt;
    flops += count * f;
    return dt;
  }
};

// A communication group of n ranks spread over `nodes` nodes (equal share per
// node). Collectives are rings: the latency term counts one step per rank pair
// (hierarchically: inter-node steps pay the inter alpha, the rest the intra
// alpha); the bandwidth term is limited by the slowest link in the ring. A
// group with r = n / nodes ranks on each node crosses the network through r
// NICs at once (NCCL runs one ring channel per GPU/NIC pair), so its
// inter-node bandwidth is r x the per-GPU IB bandwidth, capped by NVLink.
struct Group {
  int n = 1;
  int nodes = 1;
  const Cluster* c = nullptr;
  double latency(double steps_per_rank) const {
    if (n <= 1) return 0;
    if (nodes <= 1) return steps_per_rank * (n - 1) * c->intra.alpha;
    return steps_per_rank * ((nodes - 1) * c->inter.alpha + (n / nodes - 1) * c->intra.alpha);
  }
  double beta() const {
    return nodes <= 1 ? c->intra.beta : std::min(c->intra.beta, double(n / nodes) * c->inter.beta);
  }
  // `bytes` is the full (unsharded) buffer; `messages` separate collectives (buckets).
  double all_reduce(double bytes, double messages = 1) const {
    return n <= 1 ? 0 : messages * latency(2) + 2.0 * (n - 1) / n * bytes / beta();
  }
  double half_ring(double bytes, double messages = 1) const {  // reduce-scatter or all-gather
    return n <= 1 ? 0 : messages * latency(1) + double(n - 1) / n * bytes / beta();
  }
};

// Group of n ranks that are `stride` global ranks apart (Megatron order: tp
// fastest, then dp, then pp).
Group make_group(const Cluster& c, int n, int64_t stride) {
  const int64_t span = int64_t(n) * stride;
  const int nodes = span <= c.gpus_per_node ? 1 : int(std::min<int64_t>(n, (span + c.gpus_per_node - 1) / c.gpus_per_node));
  return {n, nodes, &c};
}

struct StageCost {
  double gemm = 0, elementwise = 0, tp = 0, p2p = 0, flops = 0, backward = 0;
  double total() const { return gemm + elementwise + tp + p2p; }
};

// One micro-batch through stage `st`: forward, backward, recompute.
StageCost stage_cost(const GptConfig& cfg, const Layout& l, const Precision& prec, int64_t seq, const Cluster& c,
                     const ModelOptions& opt, int st, int64_t layers, int gpus) {
  const double s = double(seq), b = double(l.micro_batch), h = double(cfg.hidden_size);
  const double a = double(cfg.num_heads), F = double(cfg.mlp_hidden()), V = double(cfg.padded_vocab());
  const double t = l.tp, d = h / a, ab = prec.activation_bytes(), bs = b * s;
  const bool rc = l.recompute == Recompute::Full;
  const double passes = 3 + (rc ? 1 : 0);  // forward, backward (2x), recomputed forward
  StageCost r;

  // One block's forward GEMMs on one TP rank. Linear layers run in FP8 with
  // Precision::fp8_gemm (1-byte operands, the FP8 peak and efficiency curve);
  // attention and the LM head stay in bf16.
  // The rate of each kind: the 16-bit peak, or fp32 (TF32 peak, or true fp32 on
  // CUDA cores for pp3d's own f32 math: Precision::cuda_core_fp32).
  const double fp32_rate = prec.cuda_core_fp32 ? c.gpu.cuda_core_fp32() : c.gpu.peak(false);
  const auto rate = [&](bool sixteen) { return prec.mixed && sixteen ? c.gpu.peak(true) : fp32_rate; };
  Gemm attention;  // Q K^T and P V
  attention.peak = rate(prec.attention16);
  attention.eff = &c.gpu.gemm;
  Gemm linear = attention;
  linear.peak = rate(prec.linear16);
  const double head_peak = linear.peak;  // the LM head is a Linear (not FP8)
  double lin_bytes = ab;
  if (prec.fp8_gemm) {
    PP3D_CHECK(c.gpu.fp8_peak_flops > 0, "precision fp8: GPU '{}' has no FP8 tensor cores (fp8 peak 0)", c.gpu.name);
    linear.peak = c.gpu.fp8_peak_flops;
    linear.eff = &c.gpu.fp8_gemm;
    lin_bytes = 1;
  }
  // Llama: q, k, v (h + 2 h_kv outputs; h_kv = kv_heads * d) and gate, up (2F)
  // are column-parallel GEMMs of the same input, o and down row-parallel.
  const bool llama = cfg.is_llama();
  const double qkv_out = llama ? h + 2 * double(cfg.kv_heads()) * d : 3 * h, fc_out = llama ? 2 * F : F;
  const double g_qkv = linear.add(c, 1, bs, qkv_out / t, h, lin_bytes);  // c_attn / q, k, v
  attention.add(c, b * a / t, s, s, d, ab);                             // Q K^T
  attention.add(c, b * a / t, s, d, s, ab);                             // P V
  const double g_proj = linear.add(c, 1, bs, h, h / t, lin_bytes);     // attn.c_proj
  const double g_fc = linear.add(c, 1, bs, fc_out / t, h, lin_bytes);  // c_fc / gate, up
  const double g_fc2 = linear.add(c, 1, bs, h, F / t, lin_bytes);      // mlp.c_proj
  // A fused flash-attention kernel runs at its own measured rate
  // (GpuSpec::flash_attention_eff of peak, 0: as two GEMMs) and its backward
  // recomputes the scores: 2.5x the forward FLOPs instead of 2x.
  double att_fwd = attention.time, att_bwd = 2 * attention.time;
  if (opt.flash_attention && c.gpu.flash_attention_eff > 0) {
    att_fwd = attention.flops / (attention.peak * c.gpu.flash_attention_eff);
    att_bwd = 2.5 * att_fwd;
  }
  const double L = double(layers), fwd_passes = 1 + (rc ? 1 : 0);
  r.gemm = L * (passes * linear.time + fwd_passes * att_fwd + att_bwd);
  r.flops = L * passes * (attention.flops + linear.flops);
  r.backward = L * (2 * linear.time + att_bwd);

  // Memory-bound bytes of one block's forward: 2 LayerNorms (read + write),
  // 2 residual adds (2 reads + 1 write), bias+GELU, softmax when not fused.
  const double repl = (l.sequence_parallel && l.tp > 1) ? t : 1.0;
  // Llama: RMSNorms and residuals alike; RoPE on q and k (read + write);
  // SwiGLU reads gate and up and writes their product (3 bsF).
  double ew = (2 * 2 + 2 * 3) * bs * h * ab / repl + (llama ? 3 : 2) * bs * F / t * ab;
  if (llama) ew += 2 * bs * (h + double(cfg.kv_heads()) * d) / t * ab;
  if (!opt.flash_attention) ew += 2 * b * (a / t) * s * s * ab;
  // Dropout (ModelOptions::dropout): read + write + a 1-byte mask, on the
  // attention probabilities (unless a flash kernel fuses it) and after both
  // residual branches.
  if (opt.dropout && !llama) ew += (2 * ab + 1) * ((opt.flash_attention ? 0.0 : b * (a / t) * s * s) + 2 * bs * h / repl);
  // ~14 kernels per block forward (6 GEMMs or attention calls, 2 LayerNorms,
  // 2 residual adds, bias+GELU, softmax/reshape work), each with a fixed cost.
  r.elementwise = L * passes * (ew / c.gpu.hbm_stream_bw() + 14 * c.gpu.launch_overhead);
  // FP8 casts: each forward pass quantises the four linear inputs, the
  // backward pass the four output gradients. Hopper's FP8 tensor cores take
  // only the TN layout, so each cast also writes the transpose the wgrad GEMM
  // needs (Transformer Engine's cast-transpose): read 2 B, write 1 B + 1 B.
  if (prec.fp8_gemm) {
    const double cast_in = 2 * bs * h / repl + bs * h / t + bs * F / t;      // LN1, attn out, LN2, GELU out
    const double cast_grad = 3 * bs * h / t + 2 * bs * h / repl + bs * F / t;  // d(qkv), d(proj), d(fc), d(fc2)
    r.elementwise += L * (fwd_passes * cast_in + cast_grad) * 4 / c.gpu.hbm_stream_bw();
  }

  // Tensor parallelism: per block and pass (forward, backward, recompute) two
  // all-reduces of bsh elements, or with sequence parallelism the same bytes
  // as two all-gathers + two reduce-scatters. With tp_overlap (which needs
  // SP) each of those four is chunked and hidden behind its adjacent linear
  // GEMM except for max(one chunk, comm - GEMM).
  const Group tpg = make_group(c, l.tp, 1);
  const double tp_passes = 2 + (rc ? 1 : 0);
  if (opt.tp_overlap && l.sequence_parallel && l.tp > 1) {
    const double half = tpg.half_ring(bs * h * ab);
    double exposed = 0;
    for (const double g : {g_qkv, g_proj, g_fc, g_fc2}) exposed += std::max(half / t, half - g);
    r.tp = L * tp_passes * exposed;
  } else {
    r.tp = L * tp_passes * 2 * tpg.all_reduce(bs * h * ab);
  }

  if (st == 0) {  // embedding: gather + add, vocab-parallel all-reduce in forward
    r.elementwise += 3 * 2 * bs * h * ab / c.gpu.hbm_stream_bw();
    r.tp += tpg.all_reduce(bs * h * ab);
  }
  if (st == l.pp - 1) {  // ln_f, LM head, cross-entropy
    Gemm head;
    head.peak = head_peak;
    head.eff = &c.gpu.gemm;
    head.add(c, 1, bs, V / t, h, ab);
    r.gemm += 3 * head.time;
    r.flops += 3 * head.flops;
    r.backward += 2 * head.time;
    // Cross-entropy over the logits (lb = prec.logits_bytes, fp32): forward
    // upcast (read ab, write lb), max and sum-exp passes (2 reads), the
    // normalised output (write); backward the dense gradient (write), the
    // softmax backward (2 reads, 1 write) and the downcast (read lb, write ab).
    const double lb = prec.logits_bytes, loss_bytes_per_logit = 2 * ab + 9 * lb;
    r.elementwise += (bs * V / t * loss_bytes_per_logit + 3 * 2 * bs * h * ab) / c.gpu.hbm_stream_bw() +
                     8 * c.gpu.launch_overhead;
    r.tp += 3 * tpg.all_reduce(bs * 4);  // max, target logit, sum-exp
  }
  if (l.pp > 1) {  // receive/send activations forward, gradients backward; one pair per chunk
    const LinkSpec& pp_link = gpus <= c.gpus_per_node ? c.intra : c.inter;
    const double transfer = pp_link.time(bs * h * ab / t), v = l.virtual_stages;
    r.p2p = 2.0 * v * transfer;
    if (opt.pp_overlap && l.schedule == Schedule::Interleaved) {
      // Overlapped with the next chunk's forward (one pass) or backward (two).
      const double chunk_pass = (r.gemm + r.elementwise + r.tp) / (passes * v);
      r.p2p = v * (std::max(0.0, transfer - chunk_pass) + std::max(0.0, transfer - 2 * chunk_pass));
    }
  }
  return r;
}

}  // namespace

double model_flops_per_token(const GptConfig& cfg, int64_t seq) {
  const double L = double(cfg.num_layers), C = double(cfg.hidden_size), s = double(seq);
  const double attention = 12.0 * L * s * C;  // Q K^T and P V over the full s x s, forward + backward
  if (cfg.is_llama()) {
    // Matmul weights only: the blocks' q, k, v, o, gate, up, down and the LM
    // head (the embedding lookup, the norms and RoPE are not matmuls).
    const double matmul = L * detail::linear_weights_per_block(cfg) + double(cfg.padded_vocab()) * C;
    return 6 * matmul + attention;
  }
  return 6 * double(cfg.num_parameters()) + attention;
}

TimeBreakdown predict_time(const GptConfig& cfg, const Layout& l, const Precision& prec, const Workload& work,
                           const Cluster& c, const ModelOptions& opt) {
  detail::check_model_fit(cfg, l, work);
  c.validate();
  const int64_t seq = detail::plan_seq_len(cfg, work), m = detail::plan_micro_batches(l, work);
  const auto layers = stage_layer_counts(cfg, l);
  const int gpus = l.gpus();
  TimeBreakdown r;
  r.num_micro_batches = m;

  StageCost worst;
  double hw_flops_per_replica = 0, psi_max = 0;
  for (int st = 0; st < l.pp; ++st) {
    const StageCost sc = stage_cost(cfg, l, prec, seq, c, opt, st, layers[st], gpus);
    hw_flops_per_replica += sc.flops * double(m) * l.tp;
    psi_max = std::max(psi_max, stage_parameters(cfg, l, st));
    if (st == 0 || sc.total() > worst.total()) {
      worst = sc;
      r.slowest_stage = st;
    }
  }
  r.gemm = worst.gemm;
  r.elementwise = worst.elementwise;
  r.tp_comm = worst.tp;
  r.pp_p2p = worst.p2p;
  r.per_micro_batch = worst.total();
  const double v = l.virtual_stages, p = l.pp;
  // Idle time over ideal compute: (p - 1) / (v m); zb-h1 fills 2/3 of it with
  // deferred weight-gradient parts: (p - 1) / (3m) under T_F = T_B = T_W
  // (m >= p; with fewer micro-batches (2p - m - 1) / (3m), see
  // pp3d::theoretical_bubble).
  r.bubble_fraction = (p - 1) / (v * double(m));
  if (l.schedule == Schedule::ZeroBubbleH1)
    r.bubble_fraction = (double(m) >= p ? p - 1 : 2 * p - double(m) - 1) / (3 * double(m));
  r.bubble = r.bubble_fraction * double(m) * r.per_micro_batch;
  r.pipeline = double(m) * r.per_micro_batch + r.bubble;

  // Data parallelism / ZeRO on the stage with the most parameters.
  const Group dpg = make_group(c, l.dp, l.tp);
  const double gbytes = psi_max * prec.grad_bytes(), pbytes = psi_max * prec.param_bytes();
  const double bucket = std::max(opt.bucket_bytes, 1.0);
  const double gmsg = std::ceil(gbytes / bucket), pmsg = std::ceil(pbytes / bucket);
  const int n = l.dp;
  const double md = double(m);
  double overlappable = worst.backward;  // buckets overlap the last micro-batch's backward
  switch (l.zero_stage) {
    case 0: r.dp_comm = dpg.all_reduce(gbytes, gmsg); break;
    case 1: r.dp_comm = dpg.half_ring(gbytes, gmsg) + dpg.half_ring(pbytes, pmsg); break;
    case 2:  // gradients are reduce-scattered into the shard after every micro-batch
      r.dp_comm = md * dpg.half_ring(gbytes, gmsg) + dpg.half_ring(pbytes, pmsg);
      overlappable = md * worst.backward;
      break;
    default:  // 3: params gathered for forward and for backward of every micro-batch
      r.dp_comm = md * (dpg.half_ring(gbytes, gmsg) + 2 * dpg.half_ring(pbytes, pmsg));
      overlappable = md * (worst.gemm + worst.elementwise);
      break;
  }
  const double hidden = std::min((1 - opt.dp_exposed_fraction) * r.dp_comm, overlappable);
  r.dp_exposed = r.dp_comm - hidden;

  if (l.pp > 1 && cfg.tied_embeddings) {
    const Group emb = make_group(c, 2, int64_t(l.tp) * l.dp * (l.pp - 1));
    r.embedding_sync = emb.all_reduce(double(cfg.padded_vocab()) * cfg.hidden_size / l.tp * prec.grad_bytes());
  }
  const double psi_opt = l.zero_stage >= 1 ? psi_max / n : psi_max;
  r.optimizer = 28.0 * psi_opt / c.gpu.hbm_stream_bw();  // Adam: master, m, v read+write, grad read, param write

  r.step = r.pipeline + r.dp_exposed + r.embedding_sync + r.optimizer;
  r.tokens_per_step = double(work.global_batch) * double(seq);
  r.tokens_per_s = r.tokens_per_step / r.step;
  r.model_flops = r.tokens_per_step * model_flops_per_token(cfg, seq);
  r.hardware_flops = hw_flops_per_replica * l.dp;
  r.tflops_per_gpu = r.hardware_flops / (r.step * gpus) / 1e12;
  r.mfu = r.model_flops / (r.step * gpus * c.gpu.peak(prec.mixed));
  return r;
}

}  // namespace pp3d
