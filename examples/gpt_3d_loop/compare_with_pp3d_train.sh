#!/usr/bin/env bash
# The example loop (pp3d-gpt-3d-loop) must reproduce pp3d-train's per-step
# losses for the same flags: tp 2 x pp 2 x dp 2, ZeRO-1, 1F1B, 8 steps.
# Usage: compare_with_pp3d_train.sh <pp3d-gpt-3d-loop> <pp3d-train> <mpirun>
set -euo pipefail
loop="$1"; train="$2"; mpirun="$3"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
flags=(--tp 2 --pp 2 --zero-stage 1 --max-steps 8 --warmup-steps 2 --num-layers 4 --hidden-size 64
       --num-heads 4 --seq-len 32 --batch-size 4 --micro-batches 2 --lr 3e-3 --seed 7)
"$mpirun" -n 8 --allow-run-as-root --oversubscribe "$train" "${flags[@]}" --output-dir "$tmp/train" \
  --eval-interval 0 --eval-batches 1 > "$tmp/train.out" 2>&1 || { cat "$tmp/train.out"; exit 1; }
"$mpirun" -n 8 --allow-run-as-root --oversubscribe "$loop" "${flags[@]}" > "$tmp/loop.out" 2>&1 \
  || { cat "$tmp/loop.out"; exit 1; }
python3 - "$tmp/train/metrics.jsonl" "$tmp/loop.out" <<'PY'
import json, sys
train = [json.loads(l)["loss"] for l in open(sys.argv[1]) if l.strip()]
loop = [float(l.split()[3]) for l in open(sys.argv[2]) if l.startswith("step ")]
assert len(train) == len(loop) == 8, (len(train), len(loop))
worst = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(train, loop))
print("pp3d-train :", " ".join(f"{x:.6f}" for x in train))
print("example    :", " ".join(f"{x:.6f}" for x in loop))
print(f"worst relative difference {worst:.3g} (bound 1e-6)")
sys.exit(0 if worst <= 1e-6 else 1)
PY
