#!/usr/bin/env bash
# ctest driver: pp3d-generate and pp3d-eval on a Llama trained by pp3d-train.
#   - pp3d-train --arch llama on the embedded corpus exports a Hugging Face
#     directory (--export-safetensors);
#   - pp3d-generate --init-from DIR echoes the prompt (text and --prompt-ids) and
#     generates; greedy (--temperature 0) equals --top-k 1; a seeded top-p sample
#     is reproducible;
#   - pp3d-eval --init-from DIR prints a val_loss well below the corpus's unigram
#     entropy (read from a 1-step GPT run's log: the same corpus pp3d-eval reads),
#     equal within 1e-5 to the Trainer's final val_loss in metrics.jsonl (same
#     --batch-size, --seq-len, --eval-batches and seed), on the export and on
#     the run's pp3d checkpoint (--checkpoint), which also generates the same text;
#   - tools/test_model --init-from DIR (given BUILD_DIR, where it finds both programs) ends OK.
# Usage: llama_generate_eval_test.sh PP3D_TRAIN PP3D_GENERATE PP3D_EVAL WORKDIR [BUILD_DIR]
set -euo pipefail
train="$1" gen="$2" eval="$3" work="$4" build="${5:-}"
rm -rf "$work"
mkdir -p "$work"
export OMP_NUM_THREADS=1
fail() { echo "FAIL: $*"; exit 1; }

"$train" --arch llama --num-layers 2 --hidden-size 64 --num-heads 4 --num-kv-heads 2 --seq-len 64 \
  --batch-size 8 --max-steps 150 --lr 3e-3 --warmup-steps 10 --eval-batches 2 --save-interval 150 --output-dir "$work/run" \
  --export-safetensors "$work/hf" >"$work/train.out" 2>&1 || { cat "$work/train.out"; fail "training failed"; }
[ -f "$work/hf/config.json" ] && [ -f "$work/hf/model.safetensors" ] || fail "no Hugging Face export"

# Generation: the prompt is echoed, then 24 new bytes (non-printable ones as \xNN: at least 24 characters).
out=$("$gen" --init-from "$work/hf" --prompt "alice has " --max-new-tokens 24 --temperature 0 2>"$work/gen.err") \
  || { cat "$work/gen.err"; fail "pp3d-generate failed"; }
echo "greedy: $out"
grep -q "^model: llama L2 C64 H4/2kv" "$work/gen.err" || { cat "$work/gen.err"; fail "no llama model summary"; }
case "$out" in "alice has "*) ;; *) fail "the prompt is not echoed: '$out'" ;; esac
[ "${#out}" -ge $((10 + 24)) ] || fail "fewer than 24 generated characters: '$out'"
topk1=$("$gen" --init-from "$work/hf" --prompt "alice has " --max-new-tokens 24 --temperature 1 --top-k 1 2>/dev/null)
[ "$out" = "$topk1" ] || fail "--top-k 1 ('$topk1') differs from greedy"
ids=$("$gen" --init-from "$work/hf" --prompt-ids 97,108,105,99,101 --max-new-tokens 8 --temperature 0 2>/dev/null)
case "$ids" in alice?*) ;; *) fail "--prompt-ids 97,108,105,99,101 is not echoed as 'alice': '$ids'" ;; esac
s1=$("$gen" --init-from "$work/hf" --prompt "bob " --max-new-tokens 24 --temperature 0.9 --top-p 0.9 --seed 7 2>/dev/null)
s2=$("$gen" --init-from "$work/hf" --prompt "bob " --max-new-tokens 24 --temperature 0.9 --top-p 0.9 --seed 7 2>/dev/null)
echo "top-p sample: $s1"
[ -n "$s1" ] && [ "$s1" = "$s2" ] || fail "a seeded sample is not reproducible: '$s1' vs '$s2'"

# Evaluation.
got=$("$eval" --init-from "$work/hf" --batches 2 --batch-size 8 --seq-len 64 --json 2>"$work/eval.err") \
  || { cat "$work/eval.err"; fail "pp3d-eval failed"; }
echo "eval: $got"
loss=$(echo "$got" | sed -n 's/.*"val_loss": \([^,]*\),.*/\1/p')
"$train" --num-layers 1 --hidden-size 32 --num-heads 2 --seq-len 32 --batch-size 4 --max-steps 1 \
  --output-dir "$work/gpt" >"$work/gpt.out" 2>&1 || { cat "$work/gpt.out"; fail "the GPT reference run failed"; }
unigram=$(sed -n 's/.*unigram entropy of the training split: .* = \([0-9.]*\) nats.*/\1/p' "$work/gpt.out")
[ -n "$unigram" ] || fail "no unigram entropy in the GPT run's log"
echo "val_loss $loss, unigram entropy $unigram nats"
awk -v l="$loss" -v u="$unigram" 'BEGIN { exit !(l > 0 && l < 0.75 * u) }' \
  || fail "val_loss $loss is not well below the unigram entropy $unigram (the model did not learn?)"

# The trainer's final val_loss (metrics.jsonl) is pp3d-eval's on the exported weights and on the checkpoint.
[ -f "$work/run/metrics.jsonl" ] || fail "the llama training run wrote no metrics.jsonl"
want=$(python3 -c "
import json, sys
v = [json.loads(l).get('val_loss') for l in open(sys.argv[1]) if l.strip()]
v = [x for x in v if x is not None]
print(v[-1] if v else '')" "$work/run/metrics.jsonl")
[ -n "$want" ] || fail "the llama training run recorded no val_loss in metrics.jsonl"
ck=$("$eval" --checkpoint "$work/run" --batches 2 --batch-size 8 --seq-len 64 --json 2>"$work/evalck.err") \
  || { cat "$work/evalck.err"; fail "pp3d-eval --checkpoint failed"; }
ckloss=$(echo "$ck" | sed -n 's/.*"val_loss": \([^,]*\),.*/\1/p')
echo "trainer val_loss $want, pp3d-eval on the export $loss, on the checkpoint $ckloss"
for l in "$loss" "$ckloss"; do
  awk -v a="$want" -v b="$l" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a > 0 && d <= 1e-5 * a) }' \
    || fail "pp3d-eval's val_loss $l differs from the trainer's final $want"
done
ckgen=$("$gen" --checkpoint "$work/run" --prompt "alice has " --max-new-tokens 24 --temperature 0 2>/dev/null) \
  || fail "pp3d-generate --checkpoint failed"
[ "$ckgen" = "$out" ] || fail "greedy from the checkpoint ('$ckgen') differs from greedy from the export ('$out')"
if [ -n "$build" ]; then
  "$(dirname "$0")/../../tools/test_model" --init-from "$work/hf" --bin-dir "$build" --batches 2 --batch-size 4 \
    >"$work/test_model.out" 2>&1 || { cat "$work/test_model.out"; fail "tools/test_model failed"; }
  tail -n 2 "$work/test_model.out"
  grep -q "^test_model: OK" "$work/test_model.out" || fail "tools/test_model did not end OK"
fi
echo "OK"
