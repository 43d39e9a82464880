#!/usr/bin/env bash
# tools/benchmark.sh — times pp3d-train in a few parallel layouts on this node
# with the same model and global batch, and prints one table row per layout:
# median step time (first 2 steps skipped as warm-up), tokens/s, speed-up over
# the serial run of the same invocation, and rank 0's peak memory.
# Needs a built pp3d-train (PP3D_BUILD_DIR, default build/), bash and python3
# (standard library only); mpirun for multi-rank layouts when available, else
# scripts/run_multinode.sh (torchrun-style TCP rendezvous on one node).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
  cat <<'EOF'
Usage: tools/benchmark.sh [--config FILE.yaml] [--steps N] [--ranks N] [--layouts a,b,...]
                          [--batch-size N] [--global-batch-size N] [--keep DIR] [-- pp3d-train flags ...]

Runs pp3d-train for each layout with the same model and global batch, then prints
  layout | ranks | tp | pp | dp | median step ms | tokens/s | vs serial | peak MiB (rank 0)

Layouts (ranks): serial (1), dp2 (2, plain all-reduce), tp2 (2), pp2 (2, 1f1b),
tp2_pp2_dp2 (8, ZeRO-1). Default: serial,dp2,tp2,pp2, plus tp2_pp2_dp2 when
--ranks >= 8.

  --config FILE     model/flag YAML for pp3d-train (default configs/models/tiny.yaml:
                    2 layers, width 64, 4 heads, T 64)
  --steps N         optimizer steps per layout (default 12); the first 2 are warm-up and not
                    timed (with N <= 2 every step is timed)
  --ranks N         ranks available on this node (default: the number of cores); layouts
                    needing more are left out
  --layouts LIST    comma-separated subset of the layouts above, in the order given
  --batch-size N    micro-batch rows (default 2)
  --global-batch-size N   rows per optimizer step, the same for every layout (default 8)
  --keep DIR        keep every run's output (DIR/<layout>/metrics.jsonl, DIR/<layout>.log);
                    default: a temporary directory, removed at the end
  -- ...            further flags for every pp3d-train run (e.g. -- --device cuda)
  -h, --help        this text

Threads: every rank runs with OMP_NUM_THREADS=1 (one core per rank, as one GPU per
rank) unless OMP_NUM_THREADS is set. "vs serial" is the serial median step time / the
layout's (> 1: faster; N ranks use N cores). Peak memory: the largest per-step sum over the
allocator categories of rank 0's peak bytes (metrics.jsonl mem_peak_bytes).
Exit status: 0 when every layout ran, 1 when one failed (its log is named), 2 for bad
arguments or a missing pp3d-train.
EOF
}

die() { echo "benchmark: error: $*" >&2; exit 2; }

config="$root/configs/models/tiny.yaml" steps=12 ranks="$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)" layouts="" keep="" mb=2 gb=8
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --config) [ $# -ge 2 ] || die "--config needs a value"; config="$2"; shift 2 ;;
    --steps) [ $# -ge 2 ] || die "--steps needs a value"; steps="$2"; shift 2 ;;
    --ranks) [ $# -ge 2 ] || die "--ranks needs a value"; ranks="$2"; shift 2 ;;
    --layouts) [ $# -ge 2 ] || die "--layouts needs a value"; layouts="$2"; shift 2 ;;
    --batch-size) [ $# -ge 2 ] || die "--batch-size needs a value"; mb="$2"; shift 2 ;;
    --global-batch-size) [ $# -ge 2 ] || die "--global-batch-size needs a value"; gb="$2"; shift 2 ;;
    --keep) [ $# -ge 2 ] || die "--keep needs a value"; keep="$2"; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
for v in steps:steps ranks:ranks mb:batch-size gb:global-batch-size; do
  val="${v%%:*}"
  [[ "${!val}" =~ ^[1-9][0-9]*$ ]] || die "--${v#*:} must be a positive integer, got '${!val}'"
done
[ -f "$config" ] || die "--config '$config' does not exist"
command -v python3 >/dev/null || die "python3 is needed to read metrics.jsonl"
exe="${PP3D_BUILD_DIR:-$root/build}/examples/train_gpt/pp3d-train"
[ -x "$exe" ] || die "pp3d-train not found at '$exe': build it first (./train --build-only, or ninja -C build pp3d-train) or set PP3D_BUILD_DIR"

# name -> "ranks|pp3d-train layout flags"
declare -A spec=([serial]="1|" [dp2]="2|" [tp2]="2|--tp 2" [pp2]="2|--pp 2" [tp2_pp2_dp2]="8|--tp 2 --pp 2 --zero-stage 1")
if [ -z "$layouts" ]; then
  layouts="serial,dp2,tp2,pp2"
  [ "$ranks" -lt 8 ] || layouts+=",tp2_pp2_dp2"
fi
IFS=, read -r -a names <<<"$layouts"
for n in "${names[@]}"; do
  [ -n "${spec[$n]+x}" ] || die "--layouts: unknown layout '$n' (one of serial, dp2, tp2, pp2, tp2_pp2_dp2)"
done

if [ -n "$keep" ]; then
  work="$keep"
  mkdir -p "$work"
else
  work="$(mktemp -d "${TMPDIR:-/tmp}/pp3d_benchmark.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
fi
cores="$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)"  # nproc alone honours OMP_NUM_THREADS
common=(--config "$config" --batch-size "$mb" --global-batch-size "$gb" --max-steps "$steps" --warmup-steps 0
        --eval-interval 0 --eval-batches 1 --log-interval 1000000)
model="$("$exe" "${common[@]}" "${extra[@]+"${extra[@]}"}" --print-config | python3 -c '
import json, sys
c = json.load(sys.stdin)
print("model L{num_layers} C{hidden_size} H{num_heads} T{seq_len}, global batch {global_batch_size} rows of {seq_len} tokens".format(**c))')" \
  || die "pp3d-train rejected the flags (run it with --print-config to see why)"
load="$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo 0)"
if [ "${OMP_NUM_THREADS:-1}" != 1 ] &&
   python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) > int(sys.argv[2]) else 1)" "$load" "$cores"; then
  echo "benchmark: note: load average $load > $cores cores: with OMP_NUM_THREADS=$OMP_NUM_THREADS, OpenMP threads" \
       "waiting for a busy CPU slow the ranks far more than single-threaded ones; compare with OMP_NUM_THREADS=1" >&2
fi
echo "pp3d benchmark: $model, $steps steps per layout ($(( steps > 2 ? steps - 2 : steps )) timed), $cores cores; $exe"

results="$work/results.tsv"
: >"$results"
failed=0
port=$(( 29700 + RANDOM % 200 ))
for n in "${names[@]}"; do
  np="${spec[$n]%%|*}" flags="${spec[$n]#*|}"
  if [ "$np" -gt "$ranks" ]; then
    echo "benchmark: skipping $n: needs $np ranks, --ranks is $ranks"
    continue
  fi
  threads="${OMP_NUM_THREADS:-1}"
  out="$work/$n" log="$work/$n.log"
  rm -rf "$out"
  # shellcheck disable=SC2206
  args=("${common[@]}" $flags --output-dir "$out" "${extra[@]+"${extra[@]}"}")
  rc=0
  if [ "$np" = 1 ]; then
    OMP_NUM_THREADS="$threads" "$exe" "${args[@]}" >"$log" 2>&1 || rc=$?
  elif command -v mpirun >/dev/null; then
    root_flag=(); [ "$(id -u)" != 0 ] || root_flag=(--allow-run-as-root)
    mpirun -n "$np" "${root_flag[@]+"${root_flag[@]}"}" --oversubscribe -x OMP_NUM_THREADS="$threads" \
      "$exe" "${args[@]}" >"$log" 2>&1 || rc=$?
  else
    port=$(( port + 1 ))
    NUM_NODES=1 NODE_RANK=0 GPUS_PER_NODE="$np" MASTER_ADDR=127.0.0.1 MASTER_PORT="$port" \
      OMP_NUM_THREADS="$threads" PP3D_BUILD_DIR="$(dirname "$(dirname "$(dirname "$exe")")")" \
      "$root/scripts/run_multinode.sh" "${args[@]}" >"$log" 2>&1 || rc=$?
  fi
  if [ "$rc" != 0 ] || [ ! -s "$out/metrics.jsonl" ]; then
    echo "benchmark: $n failed (exit $rc); last lines of $log:" >&2
    tail -5 "$log" >&2 || true
    printf '%s\t%s\tFAILED\n' "$n" "$np" >>"$results"
    failed=1
    continue
  fi
  printf '%s\t%s\t%s\n' "$n" "$np" "$out/metrics.jsonl" >>"$results"
done

python3 - "$results" <<'EOF'
import json, statistics, sys

rows = []
for line in open(sys.argv[1]):
    name, np_, path = line.rstrip("\n").split("\t")
    if path == "FAILED":
        rows.append((name, np_, None))
        continue
    steps = [json.loads(l) for l in open(path) if l.strip()]
    timed = steps[2:] if len(steps) > 2 else steps  # the first 2 steps are warm-up
    ms = statistics.median(s["step_ms"] for s in timed)
    first = steps[0]
    tokens_per_step = first["tokens_per_s"] * first["step_ms"] / 1e3  # global batch x seq len
    peak = max(sum(s.get("mem_peak_bytes", {}).values()) for s in timed)
    rows.append((name, np_, dict(tp=first["tp"], pp=first["pp"], dp=first["dp"], ms=ms,
                                 tps=round(tokens_per_step) / (ms / 1e3), peak=peak / 2**20)))
serial = next((r[2]["ms"] for r in rows if r[0] == "serial" and r[2]), None)
print(f"{'layout':<12} {'ranks':>5} {'tp':>3} {'pp':>3} {'dp':>3} {'median ms':>9} {'tokens/s':>10} "
      f"{'vs serial':>9} {'peak MiB':>9}")
for name, np_, r in rows:
    if r is None:
        print(f"{name:<12} {np_:>5}  FAILED")
        continue
    ratio = f"{serial / r['ms']:.2f}x" if serial else "-"
    print(f"{name:<12} {np_:>5} {r['tp']:>3} {r['pp']:>3} {r['dp']:>3} {r['ms']:>9.2f} {r['tps']:>10.0f} "
          f"{ratio:>9} {r['peak']:>9.2f}")
EOF
if [ "$failed" = 1 ]; then
  [ -n "$keep" ] || echo "benchmark: rerun with --keep DIR to keep the logs" >&2
  exit 1
fi
