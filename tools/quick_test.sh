#!/usr/bin/env bash
# One-minute smoke test of the trainer: builds pp3d-train (through ./train), then
# trains a tiny GPT for a few steps in three layouts — data parallel (2 ranks),
# 3D tp 2 x pp 2 with sequence parallelism and ZeRO-1 (4 ranks), ZeRO-3 (2 ranks) —
# and checks that each finishes with a finite loss. Usage: tools/quick_test.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
./train --build-only >/dev/null
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
tiny=(--num-layers 2 --hidden-size 64 --num-heads 4 --seq-len 32 --batch-size 2 --max-steps 5 --warmup-steps 1
      --eval-batches 2 --log-interval 5 --device cpu)
run() {
  local name="$1"; shift
  local start=$SECONDS
  if PP3D_NO_BUILD=1 OMP_NUM_THREADS=1 ./train "$@" "${tiny[@]}" --output-dir "$out/$name" >"$out/$name.log" 2>&1 &&
     grep -q "done: final train loss [0-9]" "$out/$name.log"; then
    echo "quick_test: $name ok ($(( SECONDS - start )) s): $(grep -o 'final train loss [0-9.]*, val loss [0-9.]*' "$out/$name.log")"
  else
    echo "quick_test: $name FAILED; log:" >&2
    cat "$out/$name.log" >&2
    exit 1
  fi
}
run simple_dp2 --mode simple --gpus 2
run 3d_tp2_pp2_sp_zero1 --mode megatron --gpus 4
run zero3_dp2 --mode deepspeed --gpus 2 --zero-stage 3
echo "quick_test: all layouts passed"
