#!/usr/bin/env bash
# GPT-2 124M and 350M training steps on one GPU, T = 1024, bf16, same batch:
# pp3d (pp3d-train --device cuda --bf16 --compute-dtype param, the default of --bf16) vs PyTorch eager and torch.compile
# (gpt2_train_torch.py), run back to back in this invocation. Prints a table
# with tokens/s, MFU, peak memory and the ratio pp3d / torch.compile.
#   MFU = tokens/s * (6 N + 12 L C T) / peak, N = all parameters (tied wte
#   counted once, vocab padded to 50304), peak = 989 TFLOP/s (H100/H200 dense
#   bf16; PP3D_PEAK_TFLOPS overrides). The same formula for all three rows.
#   peak memory: the most nvidia-smi reported in use during the run (same
#   measure for all; includes the CUDA context).
# usage: run_gpt2_gpu.sh BUNDLE OUT   (run by BUNDLE/device_check.sh, env.sh sourced)
set -uo pipefail
bundle=$1 out=$2
py="${PP3D_PYTHON:-python3}"
peak="${PP3D_PEAK_TFLOPS:-989}"
T=1024
failed=0
printf '| model | impl | batch | tokens/s | MFU | peak mem (GiB, nvidia-smi) | ratio vs torch.compile |\n|---|---|---|---|---|---|---|\n'
# max memory.used (MiB) while "$@" runs; the command's stdout goes to $log
run_sampled() {
  local log=$1; shift
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$log.mem" 2>/dev/null &
  local smi=$!
  "$@" > "$log" 2>&1
  local rc=$?
  kill "$smi" 2>/dev/null; wait "$smi" 2>/dev/null
  mem=$(sort -n "$log.mem" | tail -1)
  return $rc
}
for spec in "124M 12 768 12 16" "350M 24 1024 16 8"; do
  read -r name L C H B <<<"$spec"
  N=$((50304 * C + T * C + L * (12 * C * C + 13 * C) + 2 * C))
  flops_per_token=$((6 * N + 12 * L * C * T))
  declare -A tps=() memgib=()
  run_sampled "$out/e2e_${name}_pp3d.log" timeout 90 "$bundle/bin/pp3d-train" --device cuda --bf16 --compute-dtype param \
    --num-layers "$L" --hidden-size "$C" --num-heads "$H" --seq-len $T --vocab-size 50257 --batch-size "$B" \
    --global-batch-size "$B" --max-steps 10 --warmup-steps 2 --lr 6e-4 --eval-interval 0 --eval-batches 1 --no-progress \
    --output-dir "$out/e2e_${name}_pp3d"
  # median tokens/s over steps 4..10 (the first steps allocate and pick GEMM algorithms)
  tps[pp3d]=$("$py" -c 'import json,statistics,sys
r=[json.loads(l)["tokens_per_s"] for l in open(sys.argv[1])][3:]
print(f"{statistics.median(r):.0f}" if r else "")' "$out/e2e_${name}_pp3d/metrics.jsonl" 2>/dev/null)
  memgib[pp3d]=$mem
  for mode in eager compile; do
    run_sampled "$out/e2e_${name}_torch_$mode.log" timeout 150 "$py" "$bundle/bench/gpt2_train_torch.py" \
      --layers "$L" --width "$C" --heads "$H" --batch "$B" --seq $T --mode $mode
    tps[$mode]=$(sed -n 's/.*tokens_per_s=\([0-9]*\).*/\1/p' "$out/e2e_${name}_torch_$mode.log")
    memgib[$mode]=$mem
  done
  for impl in pp3d eager compile; do
    t=${tps[$impl]:-}
    if [ -z "$t" ]; then printf '| %s | %s | %s | failed (see e2e_%s_*.log) | | | |\n' "$name" "$impl" "$B" "$name"; failed=1; continue; fi
    awk -v n="$name" -v i="$impl" -v b="$B" -v t="$t" -v f="$flops_per_token" -v p="$peak" -v m="${memgib[$impl]:-0}" \
        -v c="${tps[compile]:-0}" 'BEGIN { printf "| %s | %s | %d | %.0f | %.1f%% | %.1f | %s |\n", n, i, b, t,
        100 * t * f / (p * 1e12), m / 1024, c > 0 ? sprintf("%.2f", t / c) : "n/a" }'
  done
  unset tps memgib
done
echo "targets (issue 19): pp3d >= 1.2x torch.compile tokens/s, MFU >= 50% at 350M"
exit $failed
