#!/usr/bin/python3
"""PyTorch peer of gpt2_step_bench: one training step (forward, backward, grad
clip, AdamW) of the GPT-2 124M shape on the CPU. Same architecture as pp3d's
Gpt (pre-LN, tanh GELU, learned positions, tied embeddings, fp32).

Usage: /usr/bin/python3 gpt2_step_torch.py [--threads N] [--steps N] [--batch B] [--seq T] [--layers L]
Prints "torch step_s=<median> fwd_bwd_s=<median> opt_s=<median> gemm_gflops=<rate> ..." (seconds;
gemm_gflops: a 256x768 @ 768x3072 fp32 matmul, the MLP shape, best of 20, which shows
whether the BLAS under PyTorch runs a kernel made for this CPU).
"""
import argparse
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, C, H, T):
        super().__init__()
        self.H = H
        self.ln_1 = nn.LayerNorm(C)
        self.c_attn = nn.Linear(C, 3 * C)
        self.c_proj = nn.Linear(C, C)
        self.ln_2 = nn.LayerNorm(C)
        self.c_fc = nn.Linear(C, 4 * C)
        self.mlp_proj = nn.Linear(4 * C, C)
        self.register_buffer("mask", torch.tril(torch.ones(T, T, dtype=torch.bool)))

    def attn(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.H, C // self.H).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(~self.mask[:T, :T], float("-inf")).softmax(dim=-1)
        return self.c_proj((att @ v).transpose(1, 2).contiguous().view(B, T, C))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, V, T, L, H, C):
        super().__init__()
        self.wte = nn.Embedding(V, C)
        self.wpe = nn.Embedding(T, C)
        self.h = nn.ModuleList(Block(C, H, T) for _ in range(L))
        self.ln_f = nn.LayerNorm(C)
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, idx, targets):
        B, T = idx.shape
        x = self.wte(idx) + self.wpe(torch.arange(T))
        for b in self.h:
            x = b(x)
        logits = self.ln_f(x) @ self.wte.weight.t()  # tied LM head
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def gemm_gflops(m=256, k=768, n=3072, reps=20):
    a, b = torch.randn(m, k), torch.randn(k, n)
    best = float("inf")
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * m * k * n / best / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--layers", type=int, default=12)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    V, maxT, H, C = 50257, 1024, 12, 768
    model = GPT(V, maxT, a.layers, H, C)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                            lr=6e-4, betas=(0.9, 0.95), eps=1e-8)
    data = torch.randint(0, V, (a.batch, a.seq + 1))
    x, y = data[:, :-1].contiguous(), data[:, 1:].contiguous()
    fb, op, tot = [], [], []
    for s in range(a.steps + 1):  # step 0 is warm-up
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = model(x, y)
        loss.backward()
        t1 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        t2 = time.perf_counter()
        if s > 0:
            fb.append(t1 - t0)
            op.append(t2 - t1)
            tot.append(t2 - t0)
    n = sum(p.numel() for p in model.parameters())
    print(f"torch step_s={statistics.median(tot):.4f} fwd_bwd_s={statistics.median(fb):.4f} "
          f"opt_s={statistics.median(op):.4f} gemm_gflops={gemm_gflops():.1f} loss={loss.item():.4f} params={n} "
          f"threads={a.threads} "
          f"B={a.batch} T={a.seq} L={a.layers} torch={torch.__version__}")


if __name__ == "__main__":
    main()
