#!/usr/bin/python3
"""PyTorch 16-bit mixed-precision reference for pp3d's Llama (--bf16/--fp16 --compute-dtype param).

usage: /usr/bin/python3 tools/make_llama_bf16_reference.py tests/fixtures/llama_bf16_reference.bin

The model, weights and batch are those of tools/make_llama_fixture.py (odd
sizes: 3 layers, hidden 96, 6 heads, 2 kv heads, ffn 160, vocab 97; weights a
pure function of (name, element index), nothing from pp3d), with the f32
master weights set to their 16-bit rounding, so pp3d's 16-bit parameters and
the optimizer's f32 master copy start from exactly these values. Three runs:

  - `bf16/pp3d/`, `f16/pp3d/`: pp3d's rounding points written in torch, the
    16-bit activation flow between ops (docs/MIXED_PRECISION.md "Llama"):
    Linear16 (16-bit GEMM operands -- activations, activation gradients and
    the 16-bit weights -- with f32 products) and every op output rounded once
    (Round: the value forward, its gradient backward): RMSNorm (f32
    statistics), each of q/k/v/o/gate/up/down, RoPE on the 16-bit q and k,
    grouped-query attention (Attention16Gqa: P rounded before P.V, dS before
    dQ and dK, dK/dV summed over each kv head's query group before one
    rounding), SiLU(gate) * up; the gradients of q/k/v (of gate/up) add in
    f32 before the one rounding of d(RMSNorm output), as a fused Linear's.
    The residual stream, the logits and cross-entropy f32; RMSNorm weights
    and the embedding read as the f32 value of their 16-bit storage. What
    pp3d's Llama with param_dtype = compute_dtype = bf16/f16 and f32
    activations claims to compute. Computed in float64 between the rounding points (each rounding
    goes through f32, as pp3d's f32 values do): torch's own float32 run of
    this graph is 2.4e-3 (relative, logits) away from its float64 run, while
    pp3d's is 8e-5 -- rounding flips amplify float32 noise, and torch's
    float32 CPU kernels are noisier here -- so float64 is the sharper reference.
  - `bf16/autocast/`: torch.autocast(bfloat16)'s CUDA policy on Hugging
    Face's LlamaForCausalLM, written out (Debian's torch 1.13 CPU autocast
    lacks parts of it): q/k/v/o, gate/up/down bf16 in and out; RoPE in bf16
    (HF casts cos/sin to q's dtype); attention scores and P.V bf16 matmuls
    with the softmax in f32 (HF's softmax(dtype=float32)) rounded to bf16;
    SiLU(gate) * up in bf16; RMSNorm f32 (HF casts to f32; the residual stream
    is f32, f32 + bf16 promotes); LM head bf16 operands with f32 logits (pp3d
    keeps logits f32), cross-entropy f32. Computed in float32 (torch's bf16
    kernels, as autocast would run them).

For each: the loss, the logits and every parameter gradient (f32, through the
straight-through 16-bit rounding onto the master) at the initial weights, then
STEPS AdamW steps (torch.optim.AdamW on the f32 masters, weight decay on 2-D
tensors, clip_grad_norm_ before each step; make_llama_fixture.py's settings)
with each step's loss and pre-clip gradient norm, and the final loss.
Record format: tools/README.md.
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_reference import write_records  # noqa: E402
from make_llama_fixture import (ADAM_EPS, B, BETA1, BETA2, C, EPS, FF, H, HKV, LR, L, MAX_NORM, NORM_SCALE,  # noqa: E402
                                T, THETA, V, WD, WEIGHT_SCALE, fixture_value, param_shapes, rms_norm, rotate_half)

STEPS = 20
BF, HF16 = torch.bfloat16, torch.float16


def r16(x, dt):
    """x rounded to the 16-bit dt (through f32, as pp3d rounds f32 values), in x's dtype."""
    return x.float().to(dt).to(x.dtype)


def rounded(p, dt):
    """p's rounding to dt, in p's dtype, whose gradient flows to p unchanged (the master)."""
    return p + (r16(p, dt) - p).detach()


class Linear16(torch.autograd.Function):
    """pp3d's Backend::gemm16 Linear y = x W^T (no bias): x, W and dy rounded to dt, f32 products and outputs."""

    @staticmethod
    def forward(ctx, x, w, dt):
        xr, wr = r16(x, dt), r16(w, dt)
        ctx.save_for_backward(xr, wr)
        ctx.dt = dt
        return xr @ wr.t()

    @staticmethod
    def backward(ctx, g):
        xr, wr = ctx.saved_tensors
        gr = r16(g, ctx.dt)
        return gr @ wr, gr.reshape(-1, gr.shape[-1]).t() @ xr.reshape(-1, xr.shape[-1]), None


class Round(torch.autograd.Function):
    """A 16-bit activation between ops: the value rounded once, and its gradient too (pp3d rounds both)."""

    @staticmethod
    def forward(ctx, x, dt):
        ctx.dt = dt
        return r16(x, dt)

    @staticmethod
    def backward(ctx, g):
        return r16(g, ctx.dt), None


class Attention16Gqa(torch.autograd.Function):
    """pp3d's 16-bit causal grouped-query attention (CpuBackend::gqa_attention_*): 16-bit q [B, H, T, D],
    k, v [B, HKV, T, D]; S, the softmax statistics and the accumulations in the compute dtype, P rounded
    before P V, O rounded once; backward: dV += round(P)^T dO, dS = P (dP - rowsum(dO O)) rounded,
    dQ = scale dS K, dK += scale dS^T Q, dK and dV summed over the query group, each rounded once."""

    @staticmethod
    def forward(ctx, qq, kk, vv, scale, dt):
        rep, T = qq.shape[1] // kk.shape[1], qq.shape[2]
        kr, vr = kk.repeat_interleave(rep, dim=1), vv.repeat_interleave(rep, dim=1)
        mask = torch.ones(T, T, dtype=torch.bool).tril()
        s = ((qq @ kr.transpose(-2, -1)) * scale).masked_fill(~mask, float("-inf"))
        m = s.amax(dim=-1, keepdim=True)
        e = torch.exp(s - m)
        l = e.sum(dim=-1, keepdim=True)
        out = r16((r16(e, dt) @ vr) / l, dt)
        ctx.save_for_backward(qq, kk, vv, out, m + torch.log(l))
        ctx.scale, ctx.dt = scale, dt
        return out

    @staticmethod
    def backward(ctx, g):
        qq, kk, vv, out, lse = ctx.saved_tensors
        scale, dt = ctx.scale, ctx.dt
        Bq, Hq, T, D = qq.shape
        hkv = kk.shape[1]
        rep = Hq // hkv
        kr, vr = kk.repeat_interleave(rep, dim=1), vv.repeat_interleave(rep, dim=1)
        mask = torch.ones(T, T, dtype=torch.bool).tril()
        do = r16(g, dt)
        p = torch.exp((qq @ kr.transpose(-2, -1)) * scale - lse).masked_fill(~mask, 0.0)
        dv = r16(p, dt).transpose(-2, -1) @ do
        di = (do * out).sum(dim=-1, keepdim=True)
        ds = r16(p * (do @ vr.transpose(-2, -1) - di), dt)
        dq = scale * (ds @ kr)
        dk = scale * (ds.transpose(-2, -1) @ qq)
        group = lambda t: t.view(Bq, hkv, rep, T, D).sum(dim=2)  # noqa: E731
        return r16(dq, dt), r16(group(dk), dt), r16(group(dv), dt), None, None


def rope_cos_sin(D):
    inv_freq = 1.0 / (THETA ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
    freqs = torch.outer(torch.arange(T, dtype=torch.float64), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def llama_loss(p, ids, targets, dt, autocast):
    """Mean cross-entropy and logits [B, T, V] of the Llama with 16-bit (dt) weights under one policy."""
    q16 = {n: rounded(t, dt) for n, t in p.items()}
    D, rep = C // H, H // HKV
    cos, sin = rope_cos_sin(D)
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    if autocast:
        lin = lambda x, w: F.linear(x.to(dt), w.to(dt))  # noqa: E731  bf16 in and out
        act = dt
    else:
        lin = lambda x, w: Linear16.apply(x, w, dt)  # noqa: E731  16-bit operands, unrounded out
        act = torch.float64
    x = q16["model.embed_tokens.weight"][ids]  # the masters' dtype: an f32 / f64 residual stream
    rnd = (lambda t: t) if autocast else (lambda t: Round.apply(t, dt))  # noqa: E731  pp3d: each op's output
    for l in range(L):
        w = lambda n: q16["model.layers.%d.%s" % (l, n)]  # noqa: E731
        h = rnd(rms_norm(x, w("input_layernorm.weight"), EPS))  # f32 (autocast), 16-bit output (pp3d)
        qq = rnd(lin(h, w("self_attn.q_proj.weight"))).view(B, T, H, D).transpose(1, 2)
        kk = rnd(lin(h, w("self_attn.k_proj.weight"))).view(B, T, HKV, D).transpose(1, 2)
        vv = rnd(lin(h, w("self_attn.v_proj.weight"))).view(B, T, HKV, D).transpose(1, 2)
        c, s = cos.to(act), sin.to(act)
        qq, kk = rnd(qq * c + rotate_half(qq) * s), rnd(kk * c + rotate_half(kk) * s)
        if autocast:
            kk, vv = kk.repeat_interleave(rep, dim=1), vv.repeat_interleave(rep, dim=1)
            att = (qq @ kk.transpose(-2, -1)) * (1.0 / D ** 0.5)
            prob = att.to(x.dtype).masked_fill(~mask, float("-inf")).softmax(dim=-1).to(act)
            y = prob @ vv
        else:
            y = Attention16Gqa.apply(qq, kk, vv, 1.0 / D ** 0.5, dt)
        y = y.transpose(1, 2).reshape(B, T, H * D)
        x = x + rnd(lin(y, w("self_attn.o_proj.weight"))).to(x.dtype)
        h = rnd(rms_norm(x, w("post_attention_layernorm.weight"), EPS))
        a = rnd(F.silu(rnd(lin(h, w("mlp.gate_proj.weight")))) * rnd(lin(h, w("mlp.up_proj.weight"))))
        x = x + rnd(lin(a, w("mlp.down_proj.weight"))).to(x.dtype)
    x = rnd(rms_norm(x, q16["model.norm.weight"], EPS))
    logits = Linear16.apply(x, q16["lm_head.weight"], dt)  # 16-bit operands, f32 logits (both policies)
    return F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1)), logits


def run(ids, targets, dt, autocast, prefix):
    shapes = param_shapes()
    names = [n for n, _ in shapes]
    # Masters (f32 for autocast, f64 for pp3d's rounding points) holding the 16-bit
    # values pp3d's parameters start from.
    mdt = torch.float32 if autocast else torch.float64
    p = {n: r16(torch.tensor(fixture_value(n, s), dtype=torch.float32), dt).to(mdt).requires_grad_(True)
         for n, s in shapes}
    loss, logits = llama_loss(p, ids, targets, dt, autocast)
    loss.backward()
    recs = [(prefix + "loss", np.array([loss.item()])), (prefix + "logits", logits.detach().float().numpy())]
    recs += [(prefix + "grad/" + n, p[n].grad.float().numpy().copy()) for n in names]
    decay = [p[n] for n in names if p[n].dim() >= 2]
    no_decay = [p[n] for n in names if p[n].dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=LR, betas=(BETA1, BETA2), eps=ADAM_EPS)
    losses, norms = [], []
    for _ in range(STEPS):
        opt.zero_grad(set_to_none=False)
        loss, _ = llama_loss(p, ids, targets, dt, autocast)
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_([p[n] for n in names], MAX_NORM)))
        losses.append(loss.item())
        opt.step()
    with torch.no_grad():
        final_loss = llama_loss(p, ids, targets, dt, autocast)[0].item()
    recs += [(prefix + "losses", np.array(losses)), (prefix + "grad_norms", np.array(norms)),
             (prefix + "final_loss", np.array([final_loss]))]
    print("torch %s %s: losses %s, final %.6f" % (torch.__version__, prefix, ["%.4f" % v for v in losses],
                                                  final_loss))
    return recs


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    torch.manual_seed(0)
    g = np.random.default_rng(16)  # make_llama_fixture.py's batch
    tokens = g.integers(0, V, size=(B, T + 1)).astype(np.int32)
    tok = torch.from_numpy(tokens.astype(np.int64))
    ids, targets = tok[:, :T], tok[:, 1:]
    recs = [("config", np.array([L, C, H, HKV, FF, V, B, T], dtype=np.int32)),
            ("config_f", np.array([THETA, EPS, WEIGHT_SCALE, NORM_SCALE], dtype=np.float64)),
            ("adamw", np.array([LR, BETA1, BETA2, ADAM_EPS, WD, MAX_NORM, STEPS])), ("tokens", tokens)]
    recs += run(ids, targets, BF, False, "bf16/pp3d/")
    recs += run(ids, targets, BF, True, "bf16/autocast/")
    recs += run(ids, targets, HF16, False, "f16/pp3d/")
    write_records(sys.argv[1], recs)
    print("->", sys.argv[1])


if __name__ == "__main__":
    main()
