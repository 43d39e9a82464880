#!/usr/bin/env bash
# SIGTERM during pp3d-train under mpirun -n 2 (issue 9, failure handling):
#  1. SIGTERM to ONE rank of a pp 2 job only (as a scheduler or `kill` of a
#     rank would): both ranks agree to stop after the same step, save a
#     checkpoint (--save-interval is 0) and exit 0, so mpirun exits 0 within the
#     deadline. Its metrics.jsonl time split is checked on the way: compute +
#     bubble + grad_sync + optimizer <= step_ms, compute and bubble > 0.
#  2. --resume-from latest continues from that checkpoint: its first metrics
#     line is the saved step + 1, and it finishes.
#  3. SIGTERM to mpirun itself (Ctrl-C / kill of the launcher): OpenMPI 4.1
#     sends the ranks SIGTERM odls_base_sigkill_timeout (T, default 1) seconds
#     later and SIGKILL another T seconds after that; with T = 3 the checkpoint
#     is written in time (mpirun's own exit status is then 1 by OpenMPI's
#     choice, so only the checkpoint and the deadline are checked).
# usage: train_sigterm.sh MPIEXEC PP3D_TRAIN WORKDIR
set -u
mpiexec=$1 train=$2 work=$3
rm -rf "$work" && mkdir -p "$work"
tiny=(--num-layers 2 --hidden-size 32 --num-heads 4 --seq-len 16 --batch-size 2 --warmup-steps 0 --eval-batches 2
      --eval-interval 0 --no-progress)
fail() { echo "FAIL: $*"; for f in "$work"/*.out; do echo "---- $f"; tail -20 "$f"; done; exit 1; }
source "$(dirname "$0")/job_util.sh"
saved_step() { sed -n 's/.*received SIGTERM: checkpoint of step \([0-9]*\) saved to.*/\1/p' "$1" | head -1; }

# ---- 1. SIGTERM to one rank
"$mpiexec" -n 2 --allow-run-as-root --oversubscribe "$train" "${tiny[@]}" --pp 2 --max-steps 100000 \
  --output-dir "$work/run" > "$work/run.out" 2>&1 &
job=$!
wait_steps "$work/run" 2 40 || { kill -KILL $job $(pgrep -P $job) 2>/dev/null; fail "no 2 steps within 40 s"; }
victim=$(pgrep -P $job | tail -1)
[ -n "$victim" ] || fail "no rank process under mpirun $job"
t0=$(now)
kill -TERM "$victim"
wait_exit $job 30; rc=$?
secs=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }')
echo "SIGTERM to rank pid $victim: mpirun exited $rc after $secs s"
[ $rc = 0 ] || fail "mpirun exit status $rc, expected 0"
step=$(saved_step "$work/run.out")
[ -n "$step" ] || fail "no 'received SIGTERM: checkpoint of step N saved' line"
grep -q "continue with --resume-from latest" "$work/run.out" || fail "no resume hint"
[ -f "$work/run/checkpoint-$step/manifest.json" ] || fail "checkpoint-$step/manifest.json missing"
lines=$(wc -l < "$work/run/metrics.jsonl")
[ "$lines" = "$step" ] || fail "metrics.jsonl has $lines steps, the checkpoint is of step $step"
echo "checkpoint of step $step saved"
awk 'function f(k,  m) { return match($0, "\"" k "\":[-0-9.e+]+") ? substr($0, RSTART + length(k) + 3, RLENGTH - length(k) - 3) + 0 : -1 }
     { s = f("step_ms"); c = f("compute_ms"); b = f("bubble_ms"); g = f("grad_sync_ms"); o = f("optimizer_ms")
       if (c <= 0 || b <= 0 || g < 0 || o < 0 || c + b + g + o > s + 0.01) { print "bad time split: " $0; bad = 1 } }
     END { exit bad }' "$work/run/metrics.jsonl" || fail "metrics.jsonl time split"

# ---- 2. resume from it
"$mpiexec" -n 2 --allow-run-as-root --oversubscribe "$train" "${tiny[@]}" --pp 2 --max-steps $((step + 2)) \
  --output-dir "$work/run" --resume-from latest > "$work/resume.out" 2>&1 || fail "resumed run failed"
first=$(head -1 "$work/run/metrics.jsonl" | sed -n 's/^{"step":\([0-9]*\),.*/\1/p')
[ "$first" = $((step + 1)) ] || fail "resumed run's first step is '$first', expected $((step + 1))"
grep -q "done: final train loss" "$work/resume.out" || fail "resumed run did not finish"
echo "resumed at step $first and finished at $((step + 2))"

# ---- 3. SIGTERM to mpirun (forwarded to every rank)
OMPI_MCA_odls_base_sigkill_timeout=3 "$mpiexec" -n 2 --allow-run-as-root --oversubscribe "$train" "${tiny[@]}" \
  --max-steps 100000 --output-dir "$work/run2" > "$work/run2.out" 2>&1 &
job=$!
wait_steps "$work/run2" 2 40 || { kill -KILL $job $(pgrep -P $job) 2>/dev/null; fail "no 2 steps within 40 s"; }
t0=$(now)
kill -TERM $job
wait_exit $job 30; rc=$?
secs=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }')
echo "SIGTERM to mpirun: exited $rc after $secs s"
[ $rc != 124 ] || fail "the job did not end within 30 s"
step=$(saved_step "$work/run2.out")
[ -n "$step" ] && [ -f "$work/run2/checkpoint-$step/manifest.json" ] || fail "no checkpoint after SIGTERM to mpirun"
echo "checkpoint of step $step saved; PASS"
