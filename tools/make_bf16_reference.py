#!/usr/bin/python3
"""PyTorch bf16 mixed-precision reference for pp3d's GPT (--bf16 --compute-dtype param).

usage: /usr/bin/python3 tools/make_bf16_reference.py INPUTS.bin tests/fixtures/gpt_bf16_reference.bin

INPUTS.bin comes from `pp3d-export-reference` (the same inputs as
tools/make_reference.py: config, tokens, pp3d's initial f32 weights). The model
is the GPT of make_reference.py run the way torch.autocast(dtype=bfloat16)
runs it on CUDA, with f32 master weights holding bf16-representable values
(pp3d's bf16 parameters are the rounding of the f32 master):
  - every Linear and the two attention matmuls: bf16 operands, bf16 output
    (autocast's lower-precision list); their backward in bf16 too;
  - LayerNorm, softmax, cross-entropy in f32 (autocast's f32 list); GELU on
    the bf16 Linear output; the residual stream f32 (f32 + bf16 promotes);
  - the LM head: bf16 operands, f32 logits (pp3d keeps logits f32; autocast
    would round them to bf16 before the f32 cross-entropy).
Debian's torch 1.13 CPU autocast lacks the f32 LayerNorm policy (a bf16 input
with f32 weights fails), so the casts are written out explicitly: they are
exactly the CUDA autocast policy for these ops.

A second run, `pp3d/`, is the same model with pp3d's own rounding points
written in torch: what `--bf16 --compute-dtype param` claims to compute, to
summation order (docs/MIXED_PRECISION.md, "16-bit compute"). Activations flow
in bf16 between ops, each op computing in f32 and rounding its output once
(Round below: forward and backward, since the gradient of a bf16 tensor is
bf16): LayerNorm outputs; Linear outputs x W^T + b (bf16 operands, f32
products and bias, one rounding; Linear16); attention (Attention16: q, k, v,
O bf16, S and the softmax statistics f32, P rounded before P V, dS before dQ
and dK, the flash-attention / cuDNN SDPA rounding points); c_fc and GELU as one
fused op (Gelu16: cuBLASLt's GELU_AUX_BIAS / DGELU epilogues, Transformer
Engine / llm.c: GELU of the unrounded f32 c_fc sum, the bf16 pre-activation
saved, and in backward mlp.c_proj's unrounded f32 input gradient times GELU'
of that saved value, rounded once). The residual stream and its gradient are
f32; the LM head writes f32 logits and the cross-entropy is f32; its input
gradient d(ln_f) is bf16.

Writes, for each of `autocast/` and `pp3d/`: the loss and every parameter
gradient (f32, unrounded: the straight-through master) at the initial weights,
then 20 AdamW steps (weight decay on 2-D tensors, clip_grad_norm_, constant lr;
the settings of make_reference.py) with each step's loss and pre-clip gradient
norm, and the final loss.
"""
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_reference import read_records, write_records  # noqa: E402

BF = torch.bfloat16
STEPS = 20


def bf16_values(p):
    """p's bf16 rounding as an f32 tensor whose gradient flows to p unchanged (the master)."""
    return p + (p.to(BF).float() - p).detach()


class Linear16(torch.autograd.Function):
    """pp3d's Backend::gemm16 Linear (no bias): x and dy rounded to bf16 at the GEMM, f32 products."""

    @staticmethod
    def forward(ctx, x, w):
        xr, wr = x.to(BF).float(), w.to(BF).float()
        ctx.save_for_backward(xr, wr)
        return xr @ wr.t()

    @staticmethod
    def backward(ctx, g):
        xr, wr = ctx.saved_tensors
        gr = g.to(BF).float()
        return gr @ wr, gr.reshape(-1, gr.shape[-1]).t() @ xr.reshape(-1, xr.shape[-1])


def R(t):
    """t rounded to bf16, kept as an f32 tensor."""
    return t.to(BF).float()


class Round(torch.autograd.Function):
    """A bf16 activation: the value rounded once, and its gradient too (pp3d rounds both)."""

    @staticmethod
    def forward(ctx, x):
        return R(x)

    @staticmethod
    def backward(ctx, g):
        return R(g)


class Gelu16(torch.autograd.Function):
    """GELU fused into c_fc's GEMM epilogue (pp3d's Backend::linear16_gelu_forward /
    linear16_dgelu_backward): pre is the f32 x W^T + b; forward returns round(gelu(pre))
    and saves aux = round(pre); backward gets mlp.c_proj's f32 input gradient g (its GEMM
    result, not rounded) and returns round(g * gelu'(aux))."""

    @staticmethod
    def forward(ctx, pre):
        aux = R(pre)
        ctx.save_for_backward(aux)
        return R(F.gelu(pre, approximate="tanh"))

    @staticmethod
    def backward(ctx, g):
        (aux,) = ctx.saved_tensors
        with torch.enable_grad():
            a = aux.detach().requires_grad_(True)
            (d,) = torch.autograd.grad(F.gelu(a, approximate="tanh"), a, g)
        return R(d)


class Attention16(torch.autograd.Function):
    """pp3d's 16-bit causal attention on bf16 q, k, v [B, H, T, D] (CpuBackend, lib/backend/cpu/cpu_attention.cpp)."""

    @staticmethod
    def forward(ctx, qq, kk, vv, scale):
        T = qq.shape[2]
        mask = torch.ones(T, T, dtype=torch.bool).tril()
        s = (qq @ kk.transpose(-2, -1)) * scale
        s = s.masked_fill(~mask, float("-inf"))
        m = s.amax(dim=-1, keepdim=True)
        e = torch.exp(s - m)
        l = e.sum(dim=-1, keepdim=True)
        out = R((R(e) @ vv) / l)  # P rounded before P V; O rounded once
        lse = m + torch.log(l)
        ctx.save_for_backward(qq, kk, vv, out, lse)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, g):
        qq, kk, vv, out, lse = ctx.saved_tensors
        scale, T = ctx.scale, qq.shape[2]
        mask = torch.ones(T, T, dtype=torch.bool).tril()
        do = R(g)  # the gradient of a bf16 output
        s = (qq @ kk.transpose(-2, -1)) * scale
        p = torch.exp(s - lse).masked_fill(~mask, 0.0)
        dv = R(p).transpose(-2, -1) @ do
        dp = do @ vv.transpose(-2, -1)
        di = (do * out).sum(dim=-1, keepdim=True)
        ds = R(p * (dp - di))
        dq = scale * (ds @ kk)
        dk = scale * (ds.transpose(-2, -1) @ qq)
        return R(dq), R(dk), R(dv), None


def autocast_policy():
    """torch.autocast(bfloat16) on CUDA: Linear / matmul bf16 in and out, LayerNorm / softmax f32."""
    lin = lambda x, w, b: F.linear(x.to(BF), w.to(BF), b.to(BF))
    scores = lambda qq, kk: (qq @ kk.transpose(-2, -1)).float()
    pv = lambda prob, vv: prob.to(BF) @ vv
    return lin, scores, pv


def autocast_attention(qq, kk, vv, scale):
    T = qq.shape[2]
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    lin, scores, pv = autocast_policy()
    prob = (scores(qq, kk) * scale).masked_fill(~mask, float("-inf")).softmax(dim=-1)  # f32
    return pv(prob, vv)


def gpt_loss_bf16(p, ids, targets, L, H, V, policy, eps=1e-5):
    """policy "autocast" or "pp3d" (see the top of this file)."""
    q = {n: bf16_values(t) for n, t in p.items()}
    B, T = ids.shape
    wte = q["wte"]
    C = wte.shape[1]
    D = C // H
    scale = 1.0 / math.sqrt(D)
    if policy == "autocast":
        lin = autocast_policy()[0]
        ln = lambda x, w, b: F.layer_norm(x.float(), (C,), w, b, eps)  # f32
        fc_gelu = lambda x, w, b: F.gelu(lin(x, w, b), approximate="tanh")  # GELU on the bf16 Linear output
        attn = autocast_attention
    else:
        lin = lambda x, w, b: Round.apply(Linear16.apply(x, w) + b)
        ln = lambda x, w, b: Round.apply(F.layer_norm(x, (C,), w, b, eps))
        fc_gelu = lambda x, w, b: Gelu16.apply(Linear16.apply(x, w) + b)
        attn = Attention16.apply
    x = wte[ids] + q["wpe"][:T]  # embedding in the weights' dtype: f32 residual stream
    for l in range(L):
        h = lambda n: q["h.%d.%s" % (l, n)]
        a = ln(x, h("ln_1.weight"), h("ln_1.bias"))
        qkv = lin(a, h("attn.c_attn.weight"), h("attn.c_attn.bias"))
        qq, kk, vv = qkv.split(C, dim=2)
        qq, kk, vv = [t.reshape(B, T, H, D).transpose(1, 2) for t in (qq, kk, vv)]
        y = attn(qq, kk, vv, scale).transpose(1, 2).reshape(B, T, C)
        x = x + lin(y, h("attn.c_proj.weight"), h("attn.c_proj.bias"))
        a = ln(x, h("ln_2.weight"), h("ln_2.bias"))
        m = fc_gelu(a, h("mlp.c_fc.weight"), h("mlp.c_fc.bias"))
        x = x + lin(m, h("mlp.c_proj.weight"), h("mlp.c_proj.bias"))
    x = ln(x, q["ln_f.weight"], q["ln_f.bias"])
    logits = Linear16.apply(x, wte)[..., :V]  # bf16 operands, f32 logits (both policies)
    return F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1))


def run(inp, policy, prefix):
    """Loss and gradients at the initial weights, then STEPS AdamW steps: records named prefix + ..."""
    L, C, H, V, Vp, T, B, max_seq, seed = [int(v) for v in inp["config"]]
    lr, beta1, beta2, eps, wd, max_norm, _ = [float(v) for v in inp["adamw"]]
    tokens = torch.from_numpy(inp["tokens"].astype(np.int64))
    ids, targets = tokens[:, :T], tokens[:, 1:]
    names = [k[5:] for k in inp if k.startswith("init/")]
    p = {n: torch.tensor(inp["init/" + n], dtype=torch.float32, requires_grad=True) for n in names}
    loss = gpt_loss_bf16(p, ids, targets, L, H, V, policy)
    loss.backward()
    recs = [(prefix + "loss", np.array([loss.item()]))]
    recs += [(prefix + "grad/" + n, p[n].grad.numpy().copy()) for n in names]
    decay = [p[n] for n in names if p[n].dim() >= 2]
    no_decay = [p[n] for n in names if p[n].dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(beta1, beta2), eps=eps)
    losses, norms = [], []
    for _ in range(STEPS):
        opt.zero_grad(set_to_none=False)
        loss = gpt_loss_bf16(p, ids, targets, L, H, V, policy)
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_([p[n] for n in names], max_norm)))
        losses.append(loss.item())
        opt.step()
    with torch.no_grad():
        final_loss = gpt_loss_bf16(p, ids, targets, L, H, V, policy).item()
    recs += [(prefix + "losses", np.array(losses)), (prefix + "grad_norms", np.array(norms)),
             (prefix + "final_loss", np.array([final_loss]))]
    print("torch %s %s: losses %s, final %.6f" % (torch.__version__, prefix, ["%.4f" % v for v in losses],
                                                  final_loss))
    return recs


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    torch.manual_seed(0)
    inp = read_records(sys.argv[1])
    adamw = np.array(list(inp["adamw"][:6]) + [STEPS], dtype=np.float32)
    recs = [("config", inp["config"]), ("adamw", adamw), ("init_std", inp["init_std"]), ("tokens", inp["tokens"])]
    recs += run(inp, "autocast", "autocast/")
    recs += run(inp, "pp3d", "pp3d/")
    write_records(sys.argv[2], recs)
    print("->", sys.argv[2])


if __name__ == "__main__":
    main()
