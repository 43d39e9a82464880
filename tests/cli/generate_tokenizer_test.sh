#!/usr/bin/env bash
# ctest driver: a run on tokenizer.json data carries its tokenizer to pp3d-generate.
#   - shards + meta.json ("tokenizer": "tokenizer.json") are written from the committed
#     fixture's ids (tests/fixtures/tokenizer, made by Hugging Face `tokenizers`), so
#     the test needs no `tokenizers` package;
#   - pp3d-train saves a checkpoint that holds tokenizer.json and records the tokenizer;
#   - pp3d-generate encodes --prompt with it (the same sample as the fixture's ids as
#     --prompt-ids) and prints decoded text, not ids.
# Usage: generate_tokenizer_test.sh PP3D_TRAIN PP3D_GENERATE FIXTURE_DIR WORKDIR
set -euo pipefail
train="$1" gen="$2" fix="$3" work="$4"
rm -rf "$work"
mkdir -p "$work/data"
fail() { echo "FAIL: $*"; exit 1; }
cp "$fix/tokenizer.json" "$work/data/"
python3 - "$fix/cases.json" "$work/data" <<'PY'
import json, os, struct, sys
cases = json.load(open(sys.argv[1]))["cases"]
out = sys.argv[2]
ids = []
for c in cases * 40:
    ids += c["ids"] + [0]  # <|endoftext|> between documents
def shard(name, toks):
    with open(os.path.join(out, name), "wb") as f:
        f.write(struct.pack("<256i", 20240520, 1, len(toks), 2, *([0] * 252)))
        f.write(struct.pack(f"<{len(toks)}H", *toks))
shard("d_train_000.bin", ids)
shard("d_val_000.bin", ids[:2000])
json.dump({"vocab_size": 552, "eot": 0, "tokenizer": "tokenizer.json"}, open(os.path.join(out, "meta.json"), "w"))
PY
python3 -c "import json,sys; c=json.load(open(sys.argv[1]))['cases'][0]; print(','.join(map(str,c['ids'])))" \
  "$fix/cases.json" >"$work/ids.txt"
text=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['cases'][0]['text'])" "$fix/cases.json")
OMP_NUM_THREADS=1 "$train" --num-layers 1 --hidden-size 32 --num-heads 2 --seq-len 32 --batch-size 4 \
  --eval-batches 1 --max-steps 3 --warmup-steps 0 --data "$work/data" --save-interval 3 \
  --output-dir "$work/run" --quiet >"$work/train.out" 2>&1 || { cat "$work/train.out"; fail "training failed"; }
ckpt="$work/run/checkpoint-3"
[ -f "$ckpt/tokenizer.json" ] || fail "the checkpoint does not carry tokenizer.json"
cmp -s "$ckpt/tokenizer.json" "$fix/tokenizer.json" || fail "the checkpoint's tokenizer.json differs"
python3 -c "import json,sys; sys.exit(json.load(open(sys.argv[1]))['trainer_config']['tokenizer'] != 'tokenizer.json')" \
  "$ckpt/manifest.json" || fail "the manifest does not record the tokenizer"
common=(--checkpoint "$work/run" --temperature 0 --max-new-tokens 6)
"$gen" "${common[@]}" --prompt "$text" >"$work/text.out" 2>"$work/text.err" || { cat "$work/text.err"; fail "generate --prompt"; }
"$gen" "${common[@]}" --prompt-ids "$(cat "$work/ids.txt")" >"$work/ids.out" 2>"$work/ids.err" || { cat "$work/ids.err"; fail "generate --prompt-ids"; }
cat "$work/text.out"
grep -q "^tokenizer: .*tokenizer.json" "$work/text.err" || fail "pp3d-generate did not use the checkpoint's tokenizer"
[ "$(head -c ${#text} "$work/text.out")" = "$text" ] || fail "the prompt is not echoed as text"
cmp -s "$work/text.out" "$work/ids.out" || fail "--prompt and the fixture's --prompt-ids generate differently"
# A checkpoint without the file: a clear error, not ids silently.
rm "$ckpt/tokenizer.json"
rc=0
"$gen" "${common[@]}" --prompt "x" >"$work/missing.out" 2>&1 || rc=$?
[ "$rc" = 2 ] && grep -q "give the tokenizer as --tokenizer" "$work/missing.out" || { cat "$work/missing.out"; fail "missing tokenizer"; }
"$gen" "${common[@]}" --tokenizer "$fix/tokenizer.json" --prompt "$text" >"$work/flag.out" 2>/dev/null || fail "--tokenizer"
cmp -s "$work/flag.out" "$work/text.out" || fail "--tokenizer gives a different sample"
echo PASS
