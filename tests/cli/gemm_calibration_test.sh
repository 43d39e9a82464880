#!/usr/bin/env bash
# GEMM calibration round trip (issue: planner calibration from the benchmark):
# gemm_calibration_bench measures this machine's GEMMs and writes the file,
# pp3d-plan --gemm-calibration loads it; the file must change the predicted
# step time (efficiencies measured here differ from the analytic default), and
# a damaged file must be rejected with its name and the bad key.
# usage: gemm_calibration_test.sh BENCH PP3D_PLAN MODEL_YAML WORKDIR
set -eu
bench=$1 plan=$2 model=$3 work=$4
rm -rf "$work" && mkdir -p "$work"
fail() { echo "FAIL: $*"; exit 1; }
"$bench" --sizes 32,64,128 --iters 3 --out "$work/calib.yaml" > "$work/bench.txt" || fail "benchmark failed"
grep -q "^| 128 |" "$work/bench.txt" || fail "no row for d = 128 in the table"
grep -qE "^  128: [0-9.e+-]+$" "$work/calib.yaml" || fail "no efficiency for d = 128 in the file"
args=(--model "$model" --gpus 2 --gpu cpu --global-batch 8 --top 1 --json)
step() { python3 -c 'import json,sys; print(json.load(sys.stdin)["best"]["time_s"]["step"])'; }
base=$("$plan" "${args[@]}" | step) || fail "pp3d-plan failed"
calibrated=$("$plan" "${args[@]}" --gemm-calibration "$work/calib.yaml" | step) || fail "pp3d-plan with the calibration failed"
echo "predicted step: analytic GEMM efficiency $base s, calibrated $calibrated s"
[ "$base" != "$calibrated" ] || fail "the calibration file did not change the prediction"
sed 's/^gemm_efficiency:/gemm_efficency:/' "$work/calib.yaml" > "$work/bad.yaml"
if "$plan" "${args[@]}" --gemm-calibration "$work/bad.yaml" > "$work/bad.txt" 2>&1; then fail "a misspelt key was accepted"; fi
grep -q "unknown key 'gemm_efficency'" "$work/bad.txt" || fail "rejection does not name the key: $(cat "$work/bad.txt")"
echo "gemm calibration round trip: PASS"
