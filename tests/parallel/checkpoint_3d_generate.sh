#!/usr/bin/env bash
# A checkpoint saved by a tp=2 x pp=2 run loads into ONE process (tp=1, pp=1) for
# evaluation and generation: pp3d-eval's val_loss on the checkpoint must equal the
# val_loss the 4-rank trainer logged at that step (same validation batches).
# usage: checkpoint_3d_generate.sh <mpiexec> <pp3d-train> <pp3d-eval> <pp3d-generate> <workdir>
set -euo pipefail
mpiexec="$1"; train="$2"; eval="$3"; gen="$4"; work="$5"
rm -rf "$work" && mkdir -p "$work"
common=(--num-layers 2 --hidden-size 32 --num-heads 2 --seq-len 16)
"$mpiexec" -n 4 --allow-run-as-root --oversubscribe "$train" --tp 2 --pp 2 "${common[@]}" --batch-size 2 \
  --global-batch-size 4 --max-steps 6 --warmup-steps 2 --eval-interval 6 --eval-batches 2 --save-interval 6 --output-dir "$work" \
  > "$work/train.out" 2>&1 || { cat "$work/train.out"; exit 1; }
want=$(grep '"val_loss"' "$work/metrics.jsonl" | tail -1 | sed -n 's/.*"val_loss": *\([^,}]*\).*/\1/p')
got=$("$eval" --checkpoint "$work" --batches 2 --batch-size 2 --seq-len 16 --json 2>/dev/null |
      sed -n 's/.*"val_loss": *\([^,}]*\).*/\1/p')
echo "trainer (tp2 pp2) val_loss $want, pp3d-eval (one process) $got"
awk -v a="$want" -v b="$got" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a > 0 && d <= 1e-5 * a) }' ||
  { echo "FAIL: val_loss differs"; exit 1; }
text=$("$gen" --checkpoint "$work" --prompt "the " --temperature 0 --max-new-tokens 8 2>/dev/null)
[ -n "$text" ] || { echo "FAIL: no generated text"; exit 1; }
echo "generated: $text"
