#!/usr/bin/env python3
"""PyTorch (CPU) reference timings for the ops of cpu_ops_bench, same shapes.

Run with Debian's torch: /usr/bin/python3 benchmarks/kernels/cpu_ops_torch.py
[--threads 2] [--iters 10] [--cpu-time]. Prints a markdown table like
cpu_ops_bench (median of N runs after 2 warm-ups).
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--iters", type=int, default=10)
ap.add_argument("--cpu-time", action="store_true", help="process CPU time / threads instead of wall time")
args = ap.parse_args()
torch.set_num_threads(args.threads)
clock = (lambda: time.process_time() / args.threads) if args.cpu_time else time.perf_counter
rows = []


def bench(op, shape, flops, nbytes, fn):
    for _ in range(2):
        fn()
    ts = []
    for _ in range(args.iters):
        t0 = clock()
        fn()
        ts.append(clock() - t0)
    s = statistics.median(ts)
    rows.append((op, shape, s * 1e3, flops / s * 1e-9 if flops else 0, nbytes / s * 1e-9 if nbytes else 0))


N, C, V = 256, 768, 50304
with torch.no_grad():
    for i, o in [(C, 3 * C), (C, C), (C, 4 * C), (4 * C, C), (C, V)]:
        x, w, dy = torch.randn(N, i), torch.randn(o, i) * 0.02, torch.randn(N, o)
        dw = torch.zeros(o, i)
        fl = 2.0 * N * i * o
        shp = f"[{N}x{i}]x[{i}x{o}]"
        bench("gemm fwd NT y=xW^T", shp, fl, 0, lambda: torch.mm(x, w.t()))
        bench("gemm bwd NN dx=dyW", shp, fl, 0, lambda: torch.mm(dy, w))
        bench("gemm bwd TN dW+=dy^Tx", shp, fl, 0, lambda: dw.addmm_(dy.t(), x))
    x = torch.randn(N, C, requires_grad=True)
    ln = torch.nn.LayerNorm(C)
    y = ln(x)
    g = torch.randn(N, C)
    bench("layernorm fwd", "[256x768]", 0, 8.0 * N * C, lambda: F.layer_norm(x.detach(), (C,), ln.weight, ln.bias))
with torch.enable_grad():
    bench("layernorm bwd", "[256x768]", 0, 12.0 * N * C,
          lambda: torch.autograd.grad(ln(x), [x, ln.weight, ln.bias], g))
    xg = torch.randn(N, 4 * C, requires_grad=True)
    gg = torch.randn(N, 4 * C)
    bench("gelu fwd", "[256x3072]", 0, 32.0 * N * C, lambda: F.gelu(xg.detach(), approximate="tanh"))
    bench("gelu fwd+bwd", "[256x3072]", 0, 0,
          lambda: torch.autograd.grad(F.gelu(xg, approximate="tanh"), [xg], gg))
    B, T, H, D = 4, 64, 12, 64
    q, k, v = (torch.randn(B, H, T, D, requires_grad=True) for _ in range(3))
    mask = torch.ones(T, T, dtype=torch.bool).tril()

    def attn():
        s = (q @ k.transpose(-1, -2)) * D ** -0.5
        return torch.softmax(s.masked_fill(~mask, float("-inf")), -1) @ v

    fl = 2.0 * B * H * T * T * D
    bench("attention fwd", "B4 H12 T64 D64", 2 * fl, 16.0 * B * T * H * D, lambda: attn())
    do = torch.randn(B, H, T, D)
    bench("attention fwd+bwd", "B4 H12 T64 D64", 7 * fl, 0, lambda: torch.autograd.grad(attn(), [q, k, v], do))
    logits = torch.randn(N, V, requires_grad=True)
    tgt = torch.randint(0, 50257, (N,))
    bench("xent fwd", "[256x50304]", 0, 4.0 * N * V, lambda: F.cross_entropy(logits.detach(), tgt))
    bench("xent fwd+bwd", "[256x50304]", 0, 0, lambda: torch.autograd.grad(F.cross_entropy(logits, tgt), [logits]))
n = 124_000_000 // 10
p = torch.nn.Parameter(torch.randn(n) * 0.02)
p.grad = torch.randn(n)
opt = torch.optim.AdamW([p], lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1, foreach=False)
bench("adamw f32", "12.4M", 0, 28.0 * n, lambda: opt.step())

print(f"PyTorch {torch.__version__} CPU, {torch.get_num_threads()} thread(s), median of {args.iters} runs "
      f"({'CPU time / threads' if args.cpu_time else 'wall time'})\n")
print("| op | shape | ms | GFLOP/s | GB/s |\n|---|---|---:|---:|---:|")
for op, shp, ms, gf, gb in rows:
    print(f"| {op} | {shp} | {ms:.3f} | {gf:.1f} | {gb:.1f} |".replace("| 0.0 |", "| - |"))
