#!/usr/bin/env bash
# ctest driver for tools/benchmark.sh: 3 steps of the serial and the dp2 layout
# (outputs kept in WORKDIR), then checks the table header, that both rows are
# there with the right layout columns, that the serial row's ratio is 1.00x,
# and recomputes the dp2 row's median step time (steps 3..), tokens/s, ratio
# and peak memory independently from the kept metrics.jsonl files.
# Usage: benchmark_test.sh BENCHMARK_SH BUILD_DIR WORKDIR
set -euo pipefail
bench="$1" build="$2" work="$3"
rm -rf "$work"
rc=0
PP3D_BUILD_DIR="$build" OMP_NUM_THREADS=1 "$bench" --steps 3 --layouts serial,dp2 --keep "$work" \
  >"$work.out" 2>&1 || rc=$?
cat "$work.out"
[ "$rc" = 0 ] || { echo "FAIL: tools/benchmark.sh exited $rc"; exit 1; }
python3 - "$work" "$work.out" <<'PY'
import json, re, statistics, sys
work, out = sys.argv[1], open(sys.argv[2]).read()
fails = []
if not re.search(r"^layout +ranks +tp +pp +dp +median ms +tokens/s +vs serial +peak MiB$", out, re.M):
    fails.append("no table header")
rows = {}
for m in re.finditer(r"^(serial|dp2) +(\d+) +(\d+) +(\d+) +(\d+) +([\d.]+) +(\d+) +([\d.]+)x +([\d.]+)$", out, re.M):
    rows[m.group(1)] = m.groups()[1:]
if set(rows) != {"serial", "dp2"}:
    fails.append(f"rows found: {sorted(rows)}")
else:
    if rows["serial"][:4] != ("1", "1", "1", "1") or rows["dp2"][:4] != ("2", "1", "1", "2"):
        fails.append(f"layout columns {rows['serial'][:4]} / {rows['dp2'][:4]}")
    if rows["serial"][6] != "1.00":
        fails.append(f"serial ratio {rows['serial'][6]}")
    def load(name):
        return [json.loads(l) for l in open(f"{work}/{name}/metrics.jsonl") if l.strip()]
    ser, dp = load("serial"), load("dp2")
    if len(ser) != 3 or len(dp) != 3:
        fails.append(f"metrics rows {len(ser)} / {len(dp)}, want 3 (--steps 3)")
    ms_ser = statistics.median(r["step_ms"] for r in ser[2:])
    ms_dp = statistics.median(r["step_ms"] for r in dp[2:])
    tokens = 8 * 64  # default global batch 8 rows x T 64 (configs/models/tiny.yaml)
    peak = max(sum(r["mem_peak_bytes"].values()) for r in dp[2:]) / 2**20
    got = rows["dp2"]
    checks = [("median ms", float(got[4]), ms_dp, 0.006), ("tokens/s", float(got[5]), tokens / (ms_dp / 1e3), 0.6),
              ("vs serial", float(got[6]), ms_ser / ms_dp, 0.006), ("peak MiB", float(got[7]), peak, 0.006)]
    for what, printed, want, tol in checks:
        if abs(printed - round(want, 2)) > tol:
            fails.append(f"dp2 {what}: printed {printed}, recomputed {want:.4f}")
for f in fails:
    print("FAIL:", f)
sys.exit(1 if fails else 0)
PY
echo "benchmark_test: PASSED"
