#!/usr/bin/python3
"""Builds pp3d's GPT in PyTorch and writes the reference fixture.

usage: /usr/bin/python3 tools/make_reference.py INPUTS.bin tests/fixtures/gpt_reference.bin

INPUTS.bin comes from `pp3d-export-reference` (examples/export_reference): the
config, AdamW settings, tokens and pp3d's initial weights. This script runs,
in float32 on the CPU:
  - forward + backward of the mean cross-entropy at the initial weights
    (logits over the real vocabulary, loss, every parameter gradient),
  - `steps` AdamW steps (torch.optim.AdamW, weight decay on 2-D tensors only,
    constant lr, clip_grad_norm_ before each step) on the same batch,
    recording each step's loss and pre-clip gradient norm, the loss after the
    last step and a few parameters after the last step,
and writes them with the config and tokens (not the weights: the C++ test
re-creates those from the seed) to the output. Record format: tools/README.md.
"""
import math
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

DTYPES = {0: np.float32, 1: np.int32}


def read_records(path):
    out = {}
    with open(path, "rb") as f:
        assert f.read(8) == b"PP3DREF1", "bad magic"
        (n,) = struct.unpack("<I", f.read(4))
        for _ in range(n):
            (nl,) = struct.unpack("<I", f.read(4))
            name = f.read(nl).decode()
            dtype, nd = struct.unpack("<II", f.read(8))
            dims = struct.unpack("<%dq" % nd, f.read(8 * nd))
            count = int(np.prod(dims)) if nd else 1
            arr = np.frombuffer(f.read(4 * count), dtype=DTYPES[dtype]).reshape(dims)
            out[name] = arr
    return out


def write_records(path, recs):
    with open(path, "wb") as f:
        f.write(b"PP3DREF1")
        f.write(struct.pack("<I", len(recs)))
        for name, arr in recs:
            arr = np.ascontiguousarray(arr)
            code = 1 if arr.dtype == np.int32 else 0
            arr = arr.astype(np.int32 if code else np.float32)
            nb = name.encode()
            f.write(struct.pack("<I", len(nb)) + nb + struct.pack("<II", code, arr.ndim))
            f.write(struct.pack("<%dq" % arr.ndim, *arr.shape))
            f.write(arr.tobytes())


def gpt_loss(p, ids, targets, L, H, V, eps=1e-5):
    """pp3d's model: pre-LN GPT-2, fused q|k|v, GELU(tanh), tied head, padded vocab."""
    B, T = ids.shape
    wte = p["wte"]
    C = wte.shape[1]
    D = C // H
    x = wte[ids] + p["wpe"][:T]
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    for l in range(L):
        h = lambda n: p["h.%d.%s" % (l, n)]
        a = F.layer_norm(x, (C,), h("ln_1.weight"), h("ln_1.bias"), eps)
        qkv = F.linear(a, h("attn.c_attn.weight"), h("attn.c_attn.bias"))
        q, k, v = qkv.split(C, dim=2)
        q, k, v = [t.view(B, T, H, D).transpose(1, 2) for t in (q, k, v)]
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(D))
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + F.linear(y, h("attn.c_proj.weight"), h("attn.c_proj.bias"))
        a = F.layer_norm(x, (C,), h("ln_2.weight"), h("ln_2.bias"), eps)
        m = F.gelu(F.linear(a, h("mlp.c_fc.weight"), h("mlp.c_fc.bias")), approximate="tanh")
        x = x + F.linear(m, h("mlp.c_proj.weight"), h("mlp.c_proj.bias"))
    x = F.layer_norm(x, (C,), p["ln_f.weight"], p["ln_f.bias"], eps)
    logits = (x @ wte.t())[..., :V]  # padded columns never reach the loss
    loss = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1))
    return loss, logits


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    torch.manual_seed(0)
    inp = read_records(sys.argv[1])
    L, C, H, V, Vp, T, B, max_seq, seed = [int(v) for v in inp["config"]]
    lr, beta1, beta2, eps, wd, max_norm, steps = [float(v) for v in inp["adamw"]]
    tokens = torch.from_numpy(inp["tokens"].astype(np.int64))
    ids, targets = tokens[:, :T], tokens[:, 1:]
    names = [k[5:] for k in inp if k.startswith("init/")]  # pp3d's parameter order
    p = {n: torch.tensor(inp["init/" + n], dtype=torch.float32, requires_grad=True) for n in names}

    loss, logits = gpt_loss(p, ids, targets, L, H, V)
    loss.backward()
    loss0 = loss.item()
    recs = [("config", inp["config"]), ("adamw", inp["adamw"]), ("init_std", inp["init_std"]),
            ("tokens", inp["tokens"]),
            ("logits", logits.detach().numpy()), ("loss", np.array([loss0]))]
    recs += [("grad/" + n, p[n].grad.numpy().copy()) for n in names]

    decay = [p[n] for n in names if p[n].dim() >= 2]
    no_decay = [p[n] for n in names if p[n].dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(beta1, beta2), eps=eps)
    losses, norms = [], []
    for _ in range(int(steps)):
        opt.zero_grad(set_to_none=False)
        loss, _ = gpt_loss(p, ids, targets, L, H, V)
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_([p[n] for n in names], max_norm)))
        losses.append(loss.item())
        opt.step()
    with torch.no_grad():
        final_loss, _ = gpt_loss(p, ids, targets, L, H, V)
    recs += [("losses", np.array(losses)), ("grad_norms", np.array(norms)),
             ("final_loss", np.array([final_loss.item()]))]
    for n in ["h.0.attn.c_attn.weight", "h.1.mlp.c_fc.bias", "ln_f.weight", "wpe"]:
        recs.append(("final/" + n, p[n].detach().numpy()))
    write_records(sys.argv[2], recs)
    print("torch %s: loss %.6f, losses %s, grad norms %s, final %.6f -> %s" %
          (torch.__version__, loss0, ["%.5f" % v for v in losses], ["%.4f" % v for v in norms],
           final_loss.item(), sys.argv[2]))


if __name__ == "__main__":
    main()
