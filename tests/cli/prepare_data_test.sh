#!/usr/bin/env bash
# ctest driver for tools/prepare_data + pp3d-train on the shards it writes:
#   - text + JSONL inputs -> byte-level shards (vocab 257 in meta.json, end-of-text 256
#     between documents), tokens/s printed; bad input gives a clear error;
#   - pp3d-train on the folder: memory-mapped shards, epoch sampler, an epoch-end log
#     line, metrics for every step; dp 2 under mpirun gives the serial losses;
#   - a blend "0.7 A 0.3 B" trains; --tokenizer without `tokenizers` installed fails
#     with an install hint (the tokenizer path itself is exercised when it is installed).
# Usage: prepare_data_test.sh PP3D_TRAIN PREPARE_DATA WORKDIR
set -euo pipefail
exe="$1" prep="$2" work="$3"
rm -rf "$work"
mkdir -p "$work/in"
fail() { echo "FAIL: $*"; exit 1; }
python3 - "$work/in" <<'PY'
import json, os, sys
d = sys.argv[1]
with open(os.path.join(d, "story.txt"), "w") as f:
    for i in range(60):
        f.write(f"the {i % 7} cats sat on the {i % 5} mats and then {i % 3} dogs came by.\n")
with open(os.path.join(d, "docs.jsonl"), "w") as f:
    for i in range(40):
        f.write(json.dumps({"text": f"document {i}: one plus {i} is {i + 1}.", "id": i}) + "\n")
PY
"$prep" "$work/in" -o "$work/shards" --shard-tokens 1500 >"$work/prep.out" 2>&1 || { cat "$work/prep.out"; fail "prepare_data failed"; }
cat "$work/prep.out"
grep -q "tokens/s" "$work/prep.out" || fail "no tokens/s line"
python3 - "$work" <<'PY'
import json, os, struct, sys, glob
w = sys.argv[1]
meta = json.load(open(os.path.join(w, "shards", "meta.json")))
assert meta["vocab_size"] == 257 and meta["eot"] == 256 and meta["dtype"] == "uint16", meta
train = sorted(glob.glob(os.path.join(w, "shards", "data_train_*.bin")))
val = sorted(glob.glob(os.path.join(w, "shards", "data_val_*.bin")))
assert len(train) >= 2 and len(val) == 1, (train, val)
ids = []
for p in train + val:
    b = open(p, "rb").read()
    h = struct.unpack("<256i", b[:1024])
    assert h[0] == 20240520 and h[1] == 1 and h[3] == 2 and len(b) == 1024 + 2 * h[2], (p, h[:4], len(b))
    ids += struct.unpack(f"<{h[2]}H", b[1024:])
assert ids.count(256) == meta["documents"] == 41, (ids.count(256), meta)  # 40 JSONL lines + 1 text file
assert sum(1 for t in ids if t < 256) == meta["train_tokens"] + meta["val_tokens"] - 41
text = bytes(t for t in ids if t < 256).decode()
assert "document 3: one plus 3 is 4." in text and "the 0 cats sat on the 0 mats" in text
print("shards ok:", meta)
PY
rc=0
"$prep" "$work/in/nothing" -o "$work/bad" >"$work/bad.out" 2>&1 || rc=$?
[ "$rc" = 2 ] && grep -q "does not exist" "$work/bad.out" || { cat "$work/bad.out"; fail "missing input: rc $rc"; }
if python3 -c "import tokenizers" 2>/dev/null; then  # BPE trained on the inputs, decoded back
  "$prep" "$work/in" -o "$work/bpe" --train-bpe 300 >"$work/bpe.out" 2>&1 || { cat "$work/bpe.out"; fail "--train-bpe failed"; }
  python3 - "$work/bpe" <<'PY'
import json, os, struct, sys
from tokenizers import Tokenizer
d = sys.argv[1]
meta = json.load(open(os.path.join(d, "meta.json")))
assert meta["vocab_size"] == 300 and meta["tokenizer"] == "tokenizer.json", meta
tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
assert tok.token_to_id("<|endoftext|>") == meta["eot"]
b = open(os.path.join(d, "data_train_000000.bin"), "rb").read()
ids = struct.unpack(f"<{struct.unpack('<256i', b[:1024])[2]}H", b[1024:])
assert max(ids) < 300 and ids.count(meta["eot"]) >= 30
assert "document 3: one plus 3 is 4." in tok.decode(list(ids), skip_special_tokens=False)
print("bpe ok:", meta)
PY
else  # the tokenizer paths need the package: a clear hint
  rc=0
  "$prep" "$work/in" -o "$work/bad" --train-bpe 300 >"$work/bad.out" 2>&1 || rc=$?
  [ "$rc" = 2 ] && grep -q "pip install tokenizers" "$work/bad.out" || { cat "$work/bad.out"; fail "no install hint"; }
fi

model=(--num-layers 1 --hidden-size 16 --num-heads 2 --seq-len 32 --global-batch-size 8 --batch-size 4
       --warmup-steps 0 --lr-schedule constant --eval-batches 1 --no-progress)  # constant: run lengths may differ
# 4366 train tokens in 3 shards = 134 windows of 32: epoch 1 ends in step 17 (sample 133).
OMP_NUM_THREADS=1 "$exe" "${model[@]}" --data "$work/shards" --max-steps 18 --log-interval 1 \
  --output-dir "$work/run1" >"$work/run1.out" 2>&1 || { cat "$work/run1.out"; fail "pp3d-train on shards failed"; }
grep -q "memory-mapped, vocab 257" "$work/run1.out" || { cat "$work/run1.out"; fail "shards not reported as mapped"; }
grep -q "sampler: epoch (.* windows per epoch)" "$work/run1.out" || fail "no epoch sampler line"
grep -q "data: epoch 1 of the training data .* ends in step 17; epoch 2 starts reshuffled" "$work/run1.out" \
  || { cat "$work/run1.out"; fail "no epoch-end line"; }
[ "$(wc -l <"$work/run1/metrics.jsonl")" = 18 ] || fail "metrics.jsonl does not have 18 rows"

if command -v mpirun >/dev/null; then
  mpirun -n 2 --oversubscribe -x OMP_NUM_THREADS=1 "$exe" "${model[@]}" --data "$work/shards" --max-steps 3 \
    --output-dir "$work/run2" >"$work/run2.out" 2>&1 || { cat "$work/run2.out"; fail "dp 2 run failed"; }
  python3 - "$work" <<'PY'
import json, sys
w = sys.argv[1]
a = [json.loads(l) for l in open(f"{w}/run1/metrics.jsonl")][:3]
b = [json.loads(l) for l in open(f"{w}/run2/metrics.jsonl")]
assert b[0]["dp"] == 2, b[0]
for x, y in zip(a, b):
    assert abs(x["loss"] - y["loss"]) <= 1e-5 * abs(x["loss"]), (x["loss"], y["loss"])
print("dp 2 losses = serial:", [round(x["loss"], 6) for x in b])
PY
fi

OMP_NUM_THREADS=1 "$exe" "${model[@]}" --data "0.7 $work/shards 0.3 $work/in/story.txt" --vocab-size 257 \
  --max-steps 2 --output-dir "$work/run3" >"$work/run3.out" 2>&1 || { cat "$work/run3.out"; fail "blend run failed"; }
grep -q "blend of 2 datasets: \[0.7000\]" "$work/run3.out" || { cat "$work/run3.out"; fail "blend not logged"; }
rc=0
"$exe" "${model[@]}" --data "0.7 $work/shards 0.3" --max-steps 1 --output-dir "$work/run4" >"$work/run4.out" 2>&1 || rc=$?
[ "$rc" != 0 ] && grep -q "WEIGHT PATH" "$work/run4.out" || { cat "$work/run4.out"; fail "bad blend accepted"; }
echo "PASS"
