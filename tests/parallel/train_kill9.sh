#!/usr/bin/env bash
# kill -9 of one rank of a running pp3d-train job (issue 9, failure handling):
# mpirun -n 4, tp 2 x pp 2, PP3D_COMM_TIMEOUT=10, --enable-recovery so that
# mpirun does NOT kill the survivors itself (as run_dead_peer.sh): what ends the
# job is the trainer's own deadline on its next collective / p2p. Expects the
# job to exit non-zero within 10 + 20 s, an error naming the operation and the
# rank(s) that did not arrive, and no process of the job left behind. Then the
# default mpirun (no recovery) must end the job naming the dead rank too.
# usage: train_kill9.sh MPIEXEC PP3D_TRAIN WORKDIR
set -u
mpiexec=$1 train=$2 work=$3
rm -rf "$work" && mkdir -p "$work"
tiny=(--num-layers 2 --hidden-size 32 --num-heads 4 --seq-len 16 --batch-size 2 --warmup-steps 0 --eval-batches 2
      --eval-interval 0 --no-progress --tp 2 --pp 2 --max-steps 100000)
fail() { echo "FAIL: $*"; for f in "$work"/*.out; do echo "---- $f"; tail -15 "$f"; done; exit 1; }
source "$(dirname "$0")/job_util.sh"

# Each rank runs under a small bash wrapper that writes the trainer's pid and,
# at the end, its exit status (with --enable-recovery mpirun itself exits 0
# whatever the ranks return, so the statuses are collected here).
wrap='r=$OMPI_COMM_WORLD_RANK; "$@" & c=$!; echo $c > "$W/pid.$r"; wait $c; rc=$?; echo $rc > "$W/rc.$r"; exit $rc'

run_case() {  # NAME DEADLINE_S WRAPPED(0|1) EXTRA_MPIRUN_FLAGS...
  local name=$1 deadline=$2 wrapped=$3; shift 3
  local dir="$work/$name"
  mkdir -p "$dir"
  local cmd=("$train")
  [ "$wrapped" = 1 ] && cmd=(bash -c "$wrap" wrap "$train")
  W="$dir" PP3D_COMM_TIMEOUT=10 "$mpiexec" -n 4 --allow-run-as-root --oversubscribe "$@" -x PP3D_COMM_TIMEOUT -x W \
    "${cmd[@]}" "${tiny[@]}" --output-dir "$dir" > "$work/$name.out" 2>&1 &
  local job=$!
  wait_steps "$dir" 2 40 || { kill -KILL $job $(pgrep -P $job) 2>/dev/null; fail "$name: no 2 steps within 40 s"; }
  if [ "$wrapped" = 1 ]; then
    victim_rank=2
    victim=$(cat "$dir/pid.2")
  else
    victim=$(pgrep -P $job | sort -n | sed -n 3p)
    victim_rank=$(tr '\0' '\n' < /proc/$victim/environ | sed -n 's/^OMPI_COMM_WORLD_RANK=//p')
  fi
  [ -n "$victim" ] && [ -n "$victim_rank" ] || fail "$name: cannot find the victim's pid / rank"
  local t0; t0=$(now)
  kill -KILL "$victim"
  wait_exit $job "$deadline"; rc=$?
  local secs; secs=$(elapsed "$t0")
  echo "$name: kill -9 of rank $victim_rank (pid $victim); mpirun exited $rc after $secs s"
  [ $rc = 124 ] && fail "$name: the job did not end within $deadline s"
  sleep 0.5
  local left; left=$(pgrep -f -- "--output-dir $dir" | tr '\n' ' ')
  [ -z "$left" ] || { kill -KILL $left 2>/dev/null; fail "$name: processes left behind: $left"; }
}

# ---- 1. survivors end the job through the trainer's communication deadline
victim_named=0
run_case recovery 30 1 --enable-recovery
out="$work/recovery.out"
for r in 0 1 2 3; do
  st=$(cat "$work/recovery/rc.$r" 2>/dev/null)
  if [ $r = "$victim_rank" ]; then
    [ "$st" = 137 ] || fail "recovery: the victim's status is '$st', expected 137"
    continue
  fi
  [ -n "$st" ] && [ "$st" != 0 ] || fail "recovery: rank $r exit status '$st', expected non-zero"
  line=$(grep "^pp3d-train: error on rank $r:" "$out" | head -1)
  [ -n "$line" ] || fail "recovery: rank $r printed no 'pp3d-train: error on rank $r' line"
  echo "$line" | grep -q "did not complete within 10 s" || fail "recovery: rank $r: no deadline in '$line'"
  # Each survivor names the peers it waited for; a survivor waiting on another
  # survivor (itself stuck on the victim) names that one, so at least one must name the victim.
  named=$(echo "$line" | grep -oE "global ranks?( ?\(s\))? \[[0-9, ]*\]")
  [ -n "$named" ] || fail "recovery: rank $r names no peer: '$line'"
  echo "$named" | grep -qE "[[ ]$victim_rank[],]" && victim_named=1
  echo "rank $r (exit $st): ${line:0:260}"
done
[ $victim_named = 1 ] || fail "recovery: no survivor named the killed rank $victim_rank"

# ---- 2. plain mpirun ends the job at once, naming the dead rank
run_case default 30 0
[ $rc != 0 ] || fail "default: exit status 0 after a rank was killed"
grep -qE "rank $victim_rank with PID [0-9]+ .*(signal 9|Killed)" "$work/default.out" ||
  fail "default: mpirun did not name rank $victim_rank"
grep -E "rank [0-9]+ with PID" "$work/default.out" | head -1
echo "PASS"
