#!/usr/bin/env bash
# ctest driver for tools/monitor: trains a tiny model with pp3d-train (1 rank, 4
# steps, validation at steps 2 and 4) into WORKDIR/run, then checks
#   - `tools/monitor --once --png` prints the last metrics.jsonl line's step, loss
#     (to the printed 6 decimals) and val loss, the progress "4 / 4" (max steps read
#     from train.log) and the state "finished";
#   - loss.png and throughput.png exist and start with the PNG signature;
#   - following mode (no --once) on the finished run exits 0 by itself.
# Exit 77 (ctest SKIP_RETURN_CODE) when matplotlib is not installed.
# Usage: monitor_test.sh PP3D_TRAIN MONITOR WORKDIR
set -euo pipefail
exe="$1" monitor="$2" work="$3"
rm -rf "$work"
mkdir -p "$work"
OMP_NUM_THREADS=1 "$exe" --num-layers 1 --hidden-size 16 --num-heads 2 --seq-len 8 --batch-size 2 --max-steps 4 \
  --warmup-steps 0 --eval-interval 2 --eval-batches 1 --output-dir "$work/run" >"$work/train.out" 2>&1 \
  || { cat "$work/train.out"; echo "FAIL: pp3d-train failed"; exit 1; }
rc=0
"$monitor" --once --png "$work/png" "$work/run" >"$work/monitor.out" 2>&1 || rc=$?
cat "$work/monitor.out"
if [ "$rc" = 3 ] && grep -q "install python3-matplotlib" "$work/monitor.out"; then
  echo "SKIP: matplotlib is not installed"
  exit 77
fi
[ "$rc" = 0 ] || { echo "FAIL: tools/monitor --once --png exited $rc"; exit 1; }
python3 - "$work" <<'PY'
import json, os, re, sys
work = sys.argv[1]
rows = [json.loads(l) for l in open(os.path.join(work, "run", "metrics.jsonl")) if l.strip()]
last = rows[-1]
out = open(os.path.join(work, "monitor.out")).read()
fails = []
def field(name):
    m = re.search(rf"^{name} +(\S+)", out, re.M)
    return m.group(1) if m else None
if len(rows) != 4 or last["step"] != 4:
    fails.append(f"metrics.jsonl: {len(rows)} rows, last step {last.get('step')}")
loss = field("loss")
if loss is None or abs(float(loss) - last["loss"]) > 5e-7:
    fails.append(f"printed loss {loss} != last metrics loss {last['loss']!r}")
if any(abs(float(loss or 'nan') - r["loss"]) <= 5e-7 for r in rows[:-1]):
    fails.append("the printed loss also matches an earlier step: the check cannot tell them apart")
val = field("val loss")
if val is None or abs(float(val) - last["val_loss"]) > 5e-7:
    fails.append(f"printed val loss {val} != last metrics val_loss {last.get('val_loss')!r}")
if not re.search(r"^step +4 / 4 ", out, re.M):
    fails.append("no 'step 4 / 4' progress line (max steps from train.log)")
if "[finished]" not in out:
    fails.append("state is not [finished]")
for name in ("loss.png", "throughput.png"):
    p = os.path.join(work, "png", name)
    if not os.path.isfile(p):
        fails.append(f"{p} missing")
    elif open(p, "rb").read(8) != b"\x89PNG\r\n\x1a\n":
        fails.append(f"{p} does not start with the PNG signature")
    elif os.path.getsize(p) < 1000:
        fails.append(f"{p} is only {os.path.getsize(p)} bytes")
for f in fails:
    print("FAIL:", f)
sys.exit(1 if fails else 0)
PY
# Following mode ends by itself on a finished run (train.log's "done:" line).
timeout 30 "$monitor" --interval 0.2 "$work/run" >"$work/follow.out" 2>&1 \
  || { cat "$work/follow.out"; echo "FAIL: tools/monitor (follow) did not exit 0 on a finished run"; exit 1; }
grep -q "\[finished\]" "$work/follow.out" || { cat "$work/follow.out"; echo "FAIL: follow output"; exit 1; }
echo "monitor_test: PASSED"
