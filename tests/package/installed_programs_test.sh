#!/usr/bin/env bash
# The installed programs work from the install tree alone (issue 18: `cmake
# --install` left out pp3d-plan): every user-facing program the docs mention is in
# PREFIX/bin and answers --help; then pp3d-plan plans the installed tiny config,
# pp3d-train trains it 2 steps and saves a checkpoint, pp3d-test-model checks it
# (finding pp3d-eval and pp3d-generate next to itself) and pp3d-monitor summarises
# the run. Nothing from the source or build tree is on PATH.
# Usage: installed_programs_test.sh PREFIX WORKDIR
set -euo pipefail
prefix="$1" work="$2"
bin="$prefix/bin" cfg="$prefix/share/pp3d/configs/models/tiny.yaml"
rm -rf "$work"; mkdir -p "$work"; cd "$work"
export PATH="$bin:/usr/bin:/bin"
fail() { echo "FAIL: $*"; exit 1; }
for p in pp3d-train pp3d-plan pp3d-eval pp3d-generate pp3d-test-model pp3d-monitor; do
  [ -x "$bin/$p" ] || fail "$p is not installed in $bin"
  "$bin/$p" --help >"help_$p.txt" 2>&1 || { cat "help_$p.txt"; fail "$p --help exited non-zero"; }
  echo "installed: $p"
done
[ -f "$cfg" ] || fail "$cfg is not installed"
pp3d-plan --model "$cfg" --gpus 4 --gpu cpu --top 2 >plan.txt || { cat plan.txt; fail "pp3d-plan failed"; }
head -5 plan.txt
pp3d-train --config "$cfg" --max-steps 2 --warmup-steps 0 --eval-batches 1 --save-interval 2 --output-dir run \
  >train.txt 2>&1 || { cat train.txt; fail "pp3d-train failed"; }
[ -f run/latest ] || fail "pp3d-train saved no checkpoint (run/latest missing)"
pp3d-test-model --checkpoint run --batches 1 --max-new-tokens 8 >test_model.txt 2>&1 ||
  { cat test_model.txt; fail "pp3d-test-model failed"; }
grep -q "test_model: OK" test_model.txt || fail "pp3d-test-model did not end with 'test_model: OK'"
pp3d-monitor --once run >monitor.txt 2>&1 || { cat monitor.txt; fail "pp3d-monitor --once failed"; }
grep -q "2 / 2" monitor.txt || { cat monitor.txt; fail "pp3d-monitor did not show step 2 / 2"; }
echo "installed_programs_test: OK"
