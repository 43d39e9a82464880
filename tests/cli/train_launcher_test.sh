#!/usr/bin/env bash
# ctest driver for ./train and pp3d-train's handling of user input (issues 18, 23):
#   - a misspelt flag or an impossible layout through ./train, scripts/run_megatron.sh
#     or mpirun: exit 2 in under 3 s, one message per job, "did you mean" for the flag;
#   - a user error is one sentence (its source location only at PP3D_LOG_LEVEL=debug);
#   - relative --data / --output-dir resolve against the caller's directory, with and
#     without the build step;
#   - the auto-layout decision is in train.log; --quiet writes no train.log and no info log;
#   - the default --warmup-steps 40 is lowered for a 2-step run instead of rejecting it;
#   - --config: `data` as a YAML list becomes the blend "W1 PATH1 W2 PATH2".
# Usage: train_launcher_test.sh REPO BUILD_DIR WORKDIR
set -euo pipefail
repo="$(cd "$1" && pwd)" build="$(cd "$2" && pwd)" work="$3"
exe="$build/examples/train_gpt/pp3d-train"
rm -rf "$work"
mkdir -p "$work"
cd "$work"
export PP3D_BUILD_DIR="$build" OMP_NUM_THREADS=1
tiny=(--num-layers 2 --hidden-size 16 --num-heads 2 --seq-len 8 --batch-size 2 --eval-batches 1)
fail() { echo "FAIL: $*"; exit 1; }

# run_timed NAME MAX_SECONDS EXPECTED_RC|nonzero CMD...: runs CMD, output in NAME.out.
run_timed() {
  local name="$1" max="$2" want="$3" rc=0
  shift 3
  local t0=$EPOCHREALTIME
  "$@" >"$name.out" 2>&1 </dev/null || rc=$?
  local secs
  secs=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
  echo "$name: exit $rc in $secs s: $(grep -m1 'error' "$name.out" || true)"
  [ "$rc" = "$want" ] || { [ "$want" = nonzero ] && [ "$rc" != 0 ]; } || { cat "$name.out"; fail "$name exited $rc, expected $want"; }
  awk -v s="$secs" -v m="$max" 'BEGIN { exit !(s < m) }' || fail "$name took $secs s (limit $max s)"
}
count() { grep -c -- "$1" "$2" || true; }

# 1. Bad flags and layouts are reported before any rank starts: fast, once, with a suggestion.
PP3D_NO_BUILD=1 run_timed misspelt 3 2 "$repo/train" --mode simple --gpus 2 --max-step 4
grep -q "unknown flag '--max-step' (did you mean --max-steps?)" misspelt.out || fail "no suggestion"
[ "$(count 'unknown flag' misspelt.out)" = 1 ] || fail "the message is not printed exactly once"
PP3D_NO_BUILD=1 run_timed launcher_flag 3 2 "$repo/train" --gpu 2
grep -q "did you mean --gpus?" launcher_flag.out || fail "no suggestion for ./train's own flag"
PP3D_NO_BUILD=1 run_timed bad_layout 3 2 "$repo/train" --gpus 3 --tp 3 --max-steps 4 --warmup-steps 0
grep -q "pp3d-train: error: --num-heads 4 is not divisible by --tp 3" bad_layout.out || fail "layout message"
PP3D_NO_BUILD=1 run_timed script_flag 3 2 "$repo/scripts/run_megatron.sh" --max-step 4
grep -q "did you mean --max-steps?" script_flag.out || fail "scripts/run_megatron.sh: no suggestion"
# Direct mpirun: every rank parses the same command line, one of them reports.
run_timed mpirun_flag 10 nonzero mpirun -n 2 --allow-run-as-root --oversubscribe "$exe" --max-step 4
[ "$(count 'unknown flag' mpirun_flag.out)" = 1 ] || fail "mpirun: message not printed exactly once"

# 2. One sentence; the location only in the debug log.
run_timed sentence 10 2 "$exe" --hidden-size 130
grep -qx "pp3d-train: error: --hidden-size 130 is not divisible by --num-heads 4" sentence.out || fail "not a sentence"
grep -q "check failed\|\.cpp:" sentence.out && fail "source location printed at the default log level"
PP3D_LOG_LEVEL=debug run_timed sentence_debug 10 2 "$exe" --hidden-size 130
grep -q "trainer_config.cpp:[0-9]* in validate()" sentence_debug.out || fail "no location at debug level"
run_timed print_config 10 2 "$exe" --hidden-size 130 --print-config

# 3. Relative paths mean the caller's directory (with the build step, then without).
mkdir -p caller && printf 'the cat sat on the mat. the dog sat on the log.\n%.0s' {1..40} >caller/mydata.txt
(cd caller && run_timed relpath 120 0 "$repo/train" --mode simple --gpus 1 "${tiny[@]}" --max-steps 2 \
  --data mydata.txt --output-dir relout --no-progress)
[ -f caller/relout/metrics.jsonl ] || fail "--output-dir relout did not land in the caller's directory"
(cd caller && PP3D_NO_BUILD=1 run_timed relpath_nobuild 60 0 "$repo/train" --mode simple --gpus 1 "${tiny[@]}" \
  --max-steps 2 --data mydata.txt --output-dir relout2 --no-progress)
[ -f caller/relout2/metrics.jsonl ] || fail "PP3D_NO_BUILD=1: --output-dir relout2 not in the caller's directory"

# 4. The auto-layout decision goes to train.log; --quiet writes no train.log.
PP3D_NO_BUILD=1 run_timed auto 60 0 "$repo/train" --mode auto --gpus 2 "${tiny[@]}" --max-steps 2 \
  --output-dir auto_out --no-progress
grep -q "auto layout: " auto_out/train.log || fail "auto layout decision missing from train.log"
run_timed quiet 60 0 "$exe" "${tiny[@]}" --max-steps 2 --quiet --output-dir quiet_out
[ ! -e quiet_out/train.log ] && [ -s quiet_out/metrics.jsonl ] || fail "--quiet: train.log written or no metrics"
grep -q "\[info\]" quiet.out && fail "--quiet printed info lines"

# 5. The default warm-up (40) is lowered for a 2-step run, and the log says so.
run_timed clamp 60 0 "$exe" "${tiny[@]}" --max-steps 2 --output-dir clamp_out
grep -q "the default 40 is more than --max-steps 2; using 2" clamp_out/train.log || fail "no clamp note"
run_timed warmup_given 10 2 "$exe" "${tiny[@]}" --max-steps 2 --warmup-steps 40

# 6. --config: data as a YAML list is the Megatron blend string (each path is checked).
mkdir -p web code a b
printf 'data:\n  - {weight: 0.7, path: web}\n  - {weight: 0.3, path: code}\n' >blend_cfg.yaml
run_timed blend_config 10 0 "$exe" --config blend_cfg.yaml --print-config
grep -q '"data": "0.7 web 0.3 code"' blend_config.out || fail "--config data list not turned into a blend"
printf 'data: [0.5, a, 0.5, b]\n' >flat_cfg.yaml
run_timed flat_config 10 0 "$exe" --config flat_cfg.yaml --print-config
grep -q '"data": "0.5 a 0.5 b"' flat_config.out || fail "--config flat data list"
printf 'data:\n  - {weight: 1, file: a}\n' >bad_cfg.yaml
run_timed bad_blend_config 10 nonzero "$exe" --config bad_cfg.yaml --print-config
grep -q "weight: W, path: P" bad_blend_config.out || fail "--config bad data list: no explanation"
run_timed missing_source 10 2 "$exe" --data "0.5 web 0.5 nothere" --print-config
grep -q "blend source 'nothere' does not exist" missing_source.out || fail "missing blend source not named"
echo "PASS"
