#!/usr/bin/env bash
# ctest driver for pp3d-train --arch llama through pp3d::Trainer (issue 16):
#   - checkpoints (--save-interval), evaluation (--eval-interval: val_loss in metrics.jsonl),
#     train.log; then --resume-from latest continues at the saved step and its steps equal
#     the uninterrupted run's bitwise (constant LR: the schedule does not depend on --max-steps);
#   - resuming that Llama checkpoint with --arch gpt2 is a clear error naming both;
#   - a vocabulary above 65,535 from a uint32 token shard (version 2, ids up to 70,000)
#     trains, checkpoints and resumes.
# Usage: llama_train_test.sh PP3D_TRAIN WORKDIR
set -euo pipefail
exe="$1" work="$2"
rm -rf "$work"
mkdir -p "$work"
fail() { echo "FAIL: $*"; exit 1; }
export OMP_NUM_THREADS=1
common=(--arch llama --num-layers 2 --hidden-size 32 --num-heads 4 --num-kv-heads 2 --seq-len 16 --batch-size 2
        --lr 3e-3 --lr-schedule constant --warmup-steps 0 --eval-batches 2 --log-interval 1)

# 1. uninterrupted 8 steps; 2. 6 steps saving every 3 with eval every 3, then resume to 8.
"$exe" "${common[@]}" --max-steps 8 --eval-interval 0 --output-dir "$work/full" >"$work/full.out" 2>&1 \
  || { cat "$work/full.out"; fail "uninterrupted run failed"; }
"$exe" "${common[@]}" --max-steps 6 --save-interval 3 --eval-interval 3 --output-dir "$work/run" >"$work/run1.out" 2>&1 \
  || { cat "$work/run1.out"; fail "first run failed"; }
grep -q "llama: 2 layers, hidden 32, 4 heads / 2 kv heads" "$work/run/train.log" || fail "no llama line in train.log"
[[ -f "$work/run/checkpoint-3/manifest.json" && -f "$work/run/checkpoint-6/manifest.json" ]] || fail "checkpoints missing"
grep -q '"arch": "llama"' "$work/run/checkpoint-6/manifest.json" || fail "manifest does not say arch llama"
cp "$work/run/metrics.jsonl" "$work/run1.jsonl"
"$exe" "${common[@]}" --max-steps 8 --eval-interval 0 --resume-from latest --output-dir "$work/run" >"$work/run2.out" 2>&1 \
  || { cat "$work/run2.out"; fail "resumed run failed"; }
grep -q "resumed from '.*checkpoint-6' at step 6" "$work/run2.out" || { cat "$work/run2.out"; fail "not resumed at step 6"; }
python3 - "$work" <<'PY'
import json, sys
w = sys.argv[1]
rows = lambda p: [json.loads(l) for l in open(p)]
first, resumed, full = rows(f"{w}/run1.jsonl"), rows(f"{w}/run/metrics.jsonl"), rows(f"{w}/full/metrics.jsonl")
assert [r["step"] for r in first] == [1, 2, 3, 4, 5, 6], [r["step"] for r in first]
assert "val_loss" in first[2] and "val_loss" in first[5] and "val_loss" not in first[0], first
assert all(r["model_flops"] > 0 for r in first), first[0]
assert [r["step"] for r in resumed] == [7, 8], [r["step"] for r in resumed]
for r in first + resumed:  # the interrupted + resumed run is the uninterrupted one, bitwise
    ref = full[r["step"] - 1]
    assert r["loss"] == ref["loss"] and r["grad_norm"] == ref["grad_norm"], (r["step"], r["loss"], ref["loss"])
print("llama: steps 1-6 + resumed 7-8 == uninterrupted 8 steps (bitwise); val_loss at steps 3 and 6")
PY

# 3. a Llama checkpoint into --arch gpt2: one clear sentence naming both.
if "$exe" --num-layers 2 --hidden-size 32 --num-heads 4 --seq-len 16 --max-steps 8 --resume-from latest \
     --output-dir "$work/run" >"$work/wrong.out" 2>&1; then fail "--arch gpt2 resumed a llama checkpoint"; fi
grep -q "holds a llama model .* this run builds --arch gpt2 .*resume with --arch llama" "$work/wrong.out" \
  || { cat "$work/wrong.out"; fail "no arch mismatch error"; }

# 4. 32-bit token ids: vocabulary 70,001 (above uint16), ids up to 70,000.
mkdir -p "$work/big"
python3 - "$work/big" <<'PY'
import json, random, struct, sys
d = sys.argv[1]
random.seed(0)
for split, n in (("train", 4000), ("val", 1000)):
    ids = [70000 if i % 7 == 0 else random.randrange(65530, 65600) for i in range(n)]
    header = [20240520, 2, n, 4] + [0] * 252  # version 2: uint32 ids
    with open(f"{d}/big_{split}_000000.bin", "wb") as f:
        f.write(struct.pack("<256i", *header) + struct.pack(f"<{n}I", *ids))
json.dump({"vocab_size": 70001}, open(f"{d}/meta.json", "w"))
PY
big=(--arch llama --num-layers 1 --hidden-size 32 --num-heads 2 --seq-len 16 --batch-size 2 --lr 3e-2 --lr-schedule constant
     --warmup-steps 0 --eval-batches 1 --data "$work/big/big_train_000000.bin")
"$exe" "${big[@]}" --max-steps 4 --save-interval 2 --output-dir "$work/bigrun" >"$work/big1.out" 2>&1 \
  || { cat "$work/big1.out"; fail "vocab 70001 run failed"; }
grep -q "vocab 70001 (padded 70016)" "$work/big1.out" || { cat "$work/big1.out"; fail "vocabulary not 70001"; }
"$exe" "${big[@]}" --max-steps 6 --resume-from "$work/bigrun/checkpoint-4" --output-dir "$work/bigrun" \
  >"$work/big2.out" 2>&1 || { cat "$work/big2.out"; fail "vocab 70001 resume failed"; }
python3 - "$work/bigrun" <<'PY'
import json, math, sys
w = sys.argv[1]
m = json.load(open(f"{w}/checkpoint-4/manifest.json"))
assert m["model"]["vocab_size"] == 70001, m["model"]
rows = [json.loads(l) for l in open(f"{w}/metrics.jsonl")]
assert [r["step"] for r in rows] == [5, 6] and all(math.isfinite(r["loss"]) for r in rows), rows
# Below ln(70016) = 11.16 (a uniform model): it learned the ~70 ids in use.
assert rows[-1]["loss"] < 10.0, rows[-1]["loss"]
print(f"vocab 70001 (uint32 ids): resumed steps 5-6, loss {rows[-1]['loss']:.3f}")
PY
echo "llama_train_test: PASSED"
