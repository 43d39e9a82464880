#!/usr/bin/env python3
"""The card's measured copy bandwidth (PyTorch device-to-device copy of 1 GiB,
read + write counted), and each memory-bound row of cuda_ops_bench (GB/s) as
a fraction of it.

Usage: copy_bandwidth_torch.py [CUDA_OPS_BENCH_TXT]
Prints a markdown table, then "copy_bandwidth_gbs=<GB/s>" as the last line.
"""
import re
import sys

import torch

assert torch.cuda.is_available(), "no CUDA device visible to PyTorch"
x = torch.empty(2**28, dtype=torch.float32, device="cuda").fill_(1.0)  # 1 GiB
y = torch.empty_like(x)
for _ in range(3):
    y.copy_(x)
start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
iters = 20
start.record()
for _ in range(iters):
    y.copy_(x)
end.record()
torch.cuda.synchronize()
seconds = start.elapsed_time(end) / 1e3 / iters
copy_gbs = 2 * x.numel() * 4 / seconds / 1e9
print(f"| kernel | GB/s | fraction of copy bandwidth |\n|---|---|---|\n| torch copy 1 GiB | {copy_gbs:.0f} | 1.00 |")
if len(sys.argv) > 1:
    for line in open(sys.argv[1]):
        m = re.match(r"\| ([^|]+) \| ([^|]+) \| ([^|]+) \| [0-9.]+ \| ([0-9.]+) GB/s \|", line)
        if m:
            print(f"| {m.group(1).strip()} {m.group(2).strip()} {m.group(3).strip()} | {float(m.group(4)):.0f} | "
                  f"{float(m.group(4)) / copy_gbs:.2f} |")
print(f"copy_bandwidth_gbs={copy_gbs:.0f}")
