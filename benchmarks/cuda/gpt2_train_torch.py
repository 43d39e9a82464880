#!/usr/bin/env python3
"""PyTorch GPU peer of `pp3d-train --device cuda --bf16` (run_gpt2_gpu.sh runs
both in one invocation): the same GPT (pre-LN, tanh GELU, learned positions,
tied embeddings, vocab 50304), same batch and sequence length, bf16 autocast
over f32 master weights, fused AdamW (betas 0.9/0.95, wd 0.1), grad clip 1.0.
Attention is F.scaled_dot_product_attention (flash on H100/H200).

Usage: gpt2_train_torch.py --layers L --width C --heads H [--batch B] [--seq T]
                           [--steps N] [--warmup N] [--mode eager|compile]
Prints one line "torch-<mode> tokens_per_s=<median> step_ms=<median>
peak_mem_gib=<max_memory_allocated> loss=<last> params=<N> ...".
"""
import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, C, H):
        super().__init__()
        self.H = H
        self.ln_1, self.ln_2 = nn.LayerNorm(C), nn.LayerNorm(C)
        self.c_attn, self.c_proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        self.c_fc, self.mlp_proj = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.H, C // self.H).transpose(1, 2) for t in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(a.transpose(1, 2).contiguous().view(B, T, C))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, V, T, L, H, C):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(V, C), nn.Embedding(T, C)
        self.h = nn.ModuleList(Block(C, H) for _ in range(L))
        self.ln_f = nn.LayerNorm(C)
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, idx, targets):
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for b in self.h:
            x = b(x)
        logits = self.ln_f(x) @ self.wte.weight.t()  # tied LM head
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, required=True)
    ap.add_argument("--width", type=int, required=True)
    ap.add_argument("--heads", type=int, required=True)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--mode", choices=["eager", "compile"], default="eager")
    a = ap.parse_args()
    assert torch.cuda.is_available(), "no CUDA device visible to PyTorch"
    dev = torch.device("cuda")
    torch.manual_seed(0)
    V = 50304  # GPT-2's 50257 padded to a multiple of 64, as pp3d does
    model = GPT(V, a.seq, a.layers, a.heads, a.width).to(dev)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                            lr=6e-4, betas=(0.9, 0.95), eps=1e-8, fused=True)
    step_model = torch.compile(model) if a.mode == "compile" else model
    data = torch.randint(0, 50257, (a.batch, a.seq + 1), device=dev)
    x, y = data[:, :-1].contiguous(), data[:, 1:].contiguous()
    times = []
    for s in range(a.warmup + a.steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = step_model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        torch.cuda.synchronize()
        if s >= a.warmup:
            times.append(time.perf_counter() - t0)
    n = sum(p.numel() for p in model.parameters())
    t = statistics.median(times)
    print(f"torch-{a.mode} tokens_per_s={a.batch * a.seq / t:.0f} step_ms={t * 1e3:.1f} "
          f"peak_mem_gib={torch.cuda.max_memory_allocated() / 2**30:.2f} loss={loss.item():.4f} params={n} "
          f"B={a.batch} T={a.seq} L={a.layers} C={a.width} torch={torch.__version__}")


if __name__ == "__main__":
    main()
