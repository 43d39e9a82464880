#!/usr/bin/python3
"""Builds a plain PyTorch Llama and writes the reference fixture for pp3d's Llama.

usage: /usr/bin/python3 tools/make_llama_fixture.py tests/fixtures/llama_reference.bin

Nothing is downloaded and nothing comes from pp3d: the weights are a pure
function of (parameter name, element index) that the C++ test recomputes
(`fixture_value` below; tests/unit/llama_reference_test.cpp has the same
formula), so the fixture holds no weights. Everything runs in float64 on the
CPU (the reference; pp3d computes in float32):
  - forward + backward of the mean cross-entropy (logits, loss, every gradient),
  - 5 AdamW steps (torch.optim.AdamW, weight decay on 2-D tensors only,
    clip_grad_norm_ before each step) on the same batch: each step's loss and
    pre-clip gradient norm, the loss after them, updated tensors of layer 1,
    the final norm and both ends,
  - how far torch's own float32 run of the model is from this float64 one
    (loss, logits, worst gradient): the precision floor of any f32 code,
  - the logits and loss of three deliberately broken models (interleaved
    RoPE, kv heads mapped h % Hkv instead of h // (Hq/Hkv), RMSNorm eps x10):
    the C++ test checks they are far from the reference, i.e. that the
    fixture would catch each of these mistakes.
The model is Hugging Face's LlamaForCausalLM written out (rotate_half RoPE,
repeat_kv, RMSNorm in HF's order, SiLU-gated MLP, no biases, untied head).
Record format: tools/README.md (the same as make_reference.py's).
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_reference import write_records  # noqa: E402

# Config: odd sizes (issue 16): 3 layers, hidden 96, 6 heads, 2 kv heads, ffn 160, vocab 97.
L, C, H, HKV, FF, V, B, T = 3, 96, 6, 2, 160, 97, 2, 13
THETA, EPS = 10000.0, 1e-5
LR, BETA1, BETA2, ADAM_EPS, WD, MAX_NORM, STEPS = 1e-3, 0.9, 0.95, 1e-8, 0.1, 1.0, 5
WEIGHT_SCALE, NORM_SCALE = 0.17, 0.1  # uniform half-widths: matrices U(-0.17, 0.17), norms 1 + U(-0.1, 0.1)

M64 = (1 << 64) - 1


def fnv1a64(s):
    h = 0xCBF29CE484222325
    for b in s.encode():
        h = ((h ^ b) * 0x100000001B3) & M64
    return h


def fixture_value(name, shape):
    """u = splitmix64(fnv1a64(name) + e) / 2^64 per element e; matrices scale*(2u-1), norms 1 + scale*(2u-1)."""
    n = int(np.prod(shape))
    with np.errstate(over="ignore"):
        z = np.arange(n, dtype=np.uint64) + np.uint64(fnv1a64(name))
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(11)).astype(np.float64) * (2.0 ** -53)
    if len(shape) == 1:
        vals = 1.0 + NORM_SCALE * (2.0 * u - 1.0)
    else:
        vals = WEIGHT_SCALE * (2.0 * u - 1.0)
    return vals.astype(np.float32).astype(np.float64).reshape(shape)  # the f32 values pp3d holds


def param_shapes():
    D = C // H
    shapes = [("model.embed_tokens.weight", (V, C))]
    for l in range(L):
        p = "model.layers.%d." % l
        shapes += [(p + "input_layernorm.weight", (C,)), (p + "self_attn.q_proj.weight", (H * D, C)),
                   (p + "self_attn.k_proj.weight", (HKV * D, C)), (p + "self_attn.v_proj.weight", (HKV * D, C)),
                   (p + "self_attn.o_proj.weight", (C, H * D)), (p + "post_attention_layernorm.weight", (C,)),
                   (p + "mlp.gate_proj.weight", (FF, C)), (p + "mlp.up_proj.weight", (FF, C)),
                   (p + "mlp.down_proj.weight", (C, FF))]
    shapes += [("model.norm.weight", (C,)), ("lm_head.weight", (V, C))]
    return shapes


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def rope(x, interleaved):
    """x [B, heads, T, D]; HF rotate_half, or (broken) GPT-J's interleaved pairs."""
    D = x.shape[-1]
    inv_freq = 1.0 / (THETA ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
    freqs = torch.outer(torch.arange(x.shape[2], dtype=torch.float64), inv_freq)  # [T, D/2]
    if not interleaved:
        emb = torch.cat((freqs, freqs), dim=-1)
        return x * emb.cos().to(x.dtype) + rotate_half(x) * emb.sin().to(x.dtype)
    xe, xo = x[..., 0::2], x[..., 1::2]
    c, s = freqs.cos().to(x.dtype), freqs.sin().to(x.dtype)
    return torch.stack((xe * c - xo * s, xo * c + xe * s), dim=-1).flatten(-2)


def llama_loss(p, ids, targets, interleaved=False, kv_modulo=False, eps=EPS):
    D = C // H
    rep = H // HKV
    x = p["model.embed_tokens.weight"][ids]
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    for l in range(L):
        w = lambda n: p["model.layers.%d.%s" % (l, n)]  # noqa: E731
        h = rms_norm(x, w("input_layernorm.weight"), eps)
        q = F.linear(h, w("self_attn.q_proj.weight")).view(B, T, H, D).transpose(1, 2)
        k = F.linear(h, w("self_attn.k_proj.weight")).view(B, T, HKV, D).transpose(1, 2)
        v = F.linear(h, w("self_attn.v_proj.weight")).view(B, T, HKV, D).transpose(1, 2)
        q, k = rope(q, interleaved), rope(k, interleaved)
        if kv_modulo:  # broken: query head h uses kv head h % Hkv
            k, v = k.repeat(1, rep, 1, 1), v.repeat(1, rep, 1, 1)
        else:  # HF repeat_kv: kv head j serves query heads [j*rep, (j+1)*rep)
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        att = (q @ k.transpose(-2, -1)) / D ** 0.5
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, H * D)
        x = x + F.linear(y, w("self_attn.o_proj.weight"))
        h = rms_norm(x, w("post_attention_layernorm.weight"), eps)
        x = x + F.linear(F.silu(F.linear(h, w("mlp.gate_proj.weight"))) * F.linear(h, w("mlp.up_proj.weight")),
                         w("mlp.down_proj.weight"))
    x = rms_norm(x, p["model.norm.weight"], eps)
    logits = F.linear(x, p["lm_head.weight"])
    return F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1)), logits


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    g = np.random.default_rng(16)
    tokens = g.integers(0, V, size=(B, T + 1)).astype(np.int32)
    tok = torch.from_numpy(tokens.astype(np.int64))
    ids, targets = tok[:, :T], tok[:, 1:]
    shapes = param_shapes()
    names = [n for n, _ in shapes]
    p = {n: torch.tensor(fixture_value(n, s), dtype=torch.float64, requires_grad=True) for n, s in shapes}

    loss, logits = llama_loss(p, ids, targets)
    loss.backward()
    loss0 = loss.item()
    config = np.array([L, C, H, HKV, FF, V, B, T], dtype=np.int32)
    floats = np.array([THETA, EPS, WEIGHT_SCALE, NORM_SCALE], dtype=np.float64)
    recs = [("config", config), ("config_f", floats),
            ("adamw", np.array([LR, BETA1, BETA2, ADAM_EPS, WD, MAX_NORM, STEPS])), ("tokens", tokens),
            ("logits", logits.detach().numpy()), ("loss", np.array([loss0]))]
    recs += [("grad/" + n, p[n].grad.numpy().copy()) for n in names]
    # The float32 floor: the same model in torch float32 vs this float64 run.
    p32 = {n: p[n].detach().float().requires_grad_(True) for n in names}
    loss32, logits32 = llama_loss(p32, ids, targets)
    loss32.backward()
    rel = lambda a, b: ((a.double() - b).norm() / b.norm()).item()  # noqa: E731
    f32_grad = max(rel(p32[n].grad, p[n].grad) for n in names)
    recs.append(("torch_f32_error", np.array([abs(loss32.item() - loss0) / loss0, rel(logits32.detach(), logits.detach()),
                                              f32_grad])))
    with torch.no_grad():
        for tag, kw in [("rope_interleaved", {"interleaved": True}), ("kv_modulo", {"kv_modulo": True}),
                        ("eps_x10", {"eps": EPS * 10})]:
            bl, blog = llama_loss(p, ids, targets, **kw)
            recs += [("broken/%s/loss" % tag, np.array([bl.item()])), ("broken/%s/logits" % tag, blog.numpy())]

    decay = [p[n] for n in names if p[n].dim() >= 2]
    no_decay = [p[n] for n in names if p[n].dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=LR, betas=(BETA1, BETA2), eps=ADAM_EPS)
    losses, norms = [], []
    for _ in range(STEPS):
        opt.zero_grad(set_to_none=False)
        loss, _ = llama_loss(p, ids, targets)
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_([p[n] for n in names], MAX_NORM)))
        losses.append(loss.item())
        opt.step()
    with torch.no_grad():
        final_loss, _ = llama_loss(p, ids, targets)
    recs += [("losses", np.array(losses)), ("grad_norms", np.array(norms)),
             ("final_loss", np.array([final_loss.item()]))]
    for n in names:
        if n.startswith("model.layers.1.") or not n.startswith("model.layers."):
            recs.append(("final/" + n, p[n].detach().numpy()))
    write_records(sys.argv[1], recs)
    print("torch %s (float64): loss %.8f, losses %s, grad norms %s, final %.8f -> %s" %
          (torch.__version__, loss0, ["%.6f" % v for v in losses], ["%.5f" % v for v in norms],
           final_loss.item(), sys.argv[1]))


if __name__ == "__main__":
    main()
