#!/usr/bin/env bash
# tools/device_check.sh, dry-run here without a GPU (a --cpu-only bundle from
# this build): GPU time is scarce (15 minutes a draw), so the script must not
# waste it on a broken flag or a wrong order. Checks that
#  1. it ends (no hang) with status 1, every part reported in summary.txt in the
#     planned order: card, GPU tests, loss parity, the GPT-2 e2e table (issue 22's
#     numbers, before calibration so the time budget cannot crowd it out),
#     calibration, total time;
#  2. the CPU half of every loss-parity mode ran its 10 steps (metrics.jsonl), so
#     each mode's pp3d-train flags are valid; the CUDA half fails (no GPU);
#  3. the GPT-2 e2e script ran its table (both models, three implementations).
# usage: device_check_dry_test.sh SOURCE_DIR BUILD WORKDIR
set -u
fail() { echo "FAIL: $*"; exit 1; }
src=$1 build=$2 work=$3
rm -rf "$work" && mkdir -p "$work"
dir="$work/bundle" out="$work/out"
PP3D_JOBS=1 "$src/tools/device_bundle.sh" --cpu-only --from-build "$build" "$dir" > "$work/bundle.log" 2>&1 ||
  fail "device_bundle.sh failed: $(tail -20 "$work/bundle.log")"
# python3 without torch: the PyTorch peers fail fast, the script's own parsing works.
OUT="$out" PP3D_PYTHON=python3 PP3D_CHECK_BUDGET_S=240 OMP_NUM_THREADS=1 timeout 300 "$dir/device_check.sh" \
  > "$work/check.log" 2>&1
rc=$?
[ "$rc" = 1 ] || fail "device_check.sh exited $rc without a GPU (expected 1; 124 = timed out): $(tail -20 "$work/check.log")"
s="$out/summary.txt"
[ -f "$s" ] || fail "no summary.txt"
prev=0
for part in "^card: " "^cuda tests: " "^loss parity: " "^e2e gpt2: " "^gemm calibration: " "^total time: "; do
  line=$(grep -n -m1 -E "$part" "$s" | cut -d: -f1)
  [ -n "$line" ] || fail "summary.txt has no '$part' line: $(cat "$s")"
  [ "$line" -gt "$prev" ] || fail "'$part' is reported before an earlier part (line $line <= $prev)"
  prev=$line
done
for mode in fp32 bf16 bf16c16 bf16c16g16 llama llama_bf16c16; do
  m="$out/parity_${mode}_cpu/metrics.jsonl"
  [ -f "$m" ] && [ "$(wc -l < "$m")" = 10 ] || fail "parity mode $mode: the CPU run did not log 10 steps ($(tail -3 "$out/parity_${mode}_cpu.log" 2>/dev/null))"
  grep -q "pp3d-train --device cuda $mode failed" "$out/loss_parity.txt" || fail "parity mode $mode: the CUDA run did not fail without a GPU"
done
for name in 124M 350M; do
  for impl in pp3d eager compile; do
    grep -q "^| $name | $impl |" "$out/e2e_gpt2.txt" || fail "e2e table has no $name $impl row"
  done
done
echo "device check dry run: PASS"
