#!/usr/bin/env bash
# Peak RSS per rank and time to first step vs dataset size (memory-mapped shards),
# next to the embedded 2 MB corpus as the peer, in one invocation:
#   benchmarks/data/run_data_rss.sh [BUILD_DIR] [WORK_DIR] [SIZES_MB...]
# defaults: build, /tmp/pp3d_data_rss, 200 2000 (0.2 GB and 2 GB of train shards).
# 2 ranks (mpirun, dp 2), 3 steps of a small GPT; see data_rss_bench.cpp.
set -euo pipefail
build="${1:-build}" work="${2:-/tmp/pp3d_data_rss}"
shift $(( $# > 2 ? 2 : $# )) || true
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(200 2000)
bench="$build/benchmarks/data_rss_bench"
[ -x "$bench" ] || bench="$(find "$build" -name data_rss_bench -type f -perm -u+x | head -1)"
[ -x "$bench" ] || { echo "run_data_rss: build data_rss_bench first (cmake --build $build --target data_rss_bench)"; exit 2; }
root=(); [ "$(id -u)" = 0 ] && root=(--allow-run-as-root)
measure() {  # label spec
  mpirun -n 2 "${root[@]+"${root[@]}"}" --oversubscribe -x OMP_NUM_THREADS=1 "$bench" run "$2" \
    | grep '^RESULT' | sort | sed "s|^|$1 |"
}
results=$(measure synthetic synthetic)
for mb in "${sizes[@]}"; do
  "$bench" generate "$work/d$mb" "$mb" >&2
  results+=$'\n'$(measure "${mb}MB" "$work/d$mb")
done
python3 - "$results" <<'PY'
import re, sys
rows = {}
for line in sys.argv[1].strip().splitlines():
    label, rest = line.split(" ", 1)
    kv = dict(re.findall(r"(\w+)=([\d.]+)", rest))
    rows.setdefault(label, []).append({k: float(v) for k, v in kv.items()})
base = max(r["peak_rss_mb"] for r in rows["synthetic"])
print(f"{'dataset':>10} {'train GB':>9} {'peak RSS/rank MB':>18} {'vs synthetic':>13} {'file RSS MB':>12} {'first step s':>13}")
for label, rs in rows.items():
    gb = 0.002 if label == "synthetic" else float(label[:-2]) / 1000
    peak = " / ".join(f"{r['peak_rss_mb']:.0f}" for r in rs)
    ratio = max(r["peak_rss_mb"] for r in rs) / base
    files = " / ".join(f"{r['rss_file_mb']:.0f}" for r in rs)
    first = max(r["first_step_s"] for r in rs)
    print(f"{label:>10} {gb:>9.3f} {peak:>18} {ratio:>12.2f}x {files:>12} {first:>13.2f}")
PY
