#!/usr/bin/env bash
# Threads-per-rank default (issue 18): `mpirun -n 4 pp3d-train --tp 2 --pp 2` with
# OMP_NUM_THREADS unset must run within 1.5x of the same launch pinned to
# OMP_NUM_THREADS=1 (before pp3d chose a default, every rank started one OpenMP
# thread per core and the unpinned launch was 73x slower on 2 cores). Runs both
# in this invocation (pinned, unpinned, twice, interleaved), prints a table of
# median step times (steps 3.. of each run) and the ratio; exits 1 above 1.5x
# or when rank 0 did not log its choice.
# Usage: benchmarks/e2e/omp_default_check.sh PP3D_TRAIN [WORKDIR] [STEPS]
set -euo pipefail
exe="${1:?usage: omp_default_check.sh PP3D_TRAIN [WORKDIR] [STEPS]}"
work="${2:-$(mktemp -d)}"
steps="${3:-12}"
mpirun="${MPIEXEC:-mpirun}"
rm -rf "$work"; mkdir -p "$work"
run() {  # run NAME pinned|unpinned
  local envs=(env -u OMP_NUM_THREADS)
  [ "$2" = pinned ] && envs=(env OMP_NUM_THREADS=1)
  "${envs[@]}" "$mpirun" -n 4 --allow-run-as-root --oversubscribe "$exe" --tp 2 --pp 2 --max-steps "$steps" \
    --warmup-steps 0 --output-dir "$work/$1" >"$work/$1.log" 2>&1 ||
    { cat "$work/$1.log"; echo "FAIL: the $2 run ($1) exited non-zero"; exit 1; }
}
for i in 1 2; do run "pinned$i" pinned; run "unpinned$i" unpinned; done
grep -h "OpenMP threads per rank" "$work"/unpinned1.log || { echo "FAIL: rank 0 did not log its thread choice"; exit 1; }
python3 - "$work" <<'PY'
import json, statistics, sys
work = sys.argv[1]
def median_ms(kind):
    ms = []
    for i in (1, 2):
        rows = [json.loads(l) for l in open(f"{work}/{kind}{i}/metrics.jsonl") if l.strip()]
        ms += [r["step_ms"] for r in rows[2:]]
    return statistics.median(ms)
pinned, unpinned = median_ms("pinned"), median_ms("unpinned")
print(f"{'launch (mpirun -n 4, tp 2 x pp 2)':36} {'median step ms':>15} {'vs pinned':>10}")
print(f"{'OMP_NUM_THREADS=1':36} {pinned:15.1f} {1.0:9.2f}x")
print(f"{'OMP_NUM_THREADS unset (pp3d default)':36} {unpinned:15.1f} {unpinned / pinned:9.2f}x")
if unpinned > 1.5 * pinned:
    print(f"FAIL: unpinned is {unpinned / pinned:.2f}x the pinned step time (limit 1.5x)")
    sys.exit(1)
print("omp_default_check: OK")
PY
