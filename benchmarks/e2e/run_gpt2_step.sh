#!/usr/bin/env bash
# One GPT-2 124M training step (B=4, T=64) on N CPU threads: pp3d vs PyTorch,
# run back to back in this invocation; prints a table and the time ratio pp3d/torch.
# Usage: benchmarks/e2e/run_gpt2_step.sh [build-dir] [threads] [steps]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="${1:-$here/../../build}"
threads="${2:-2}"
steps="${3:-3}"
bench="$build/benchmarks/gpt2_step_bench"
[[ -x "$bench" ]] || { echo "missing $bench: build the target gpt2_step_bench first" >&2; exit 2; }
/usr/bin/python3 -c "import torch" 2>/dev/null || {
  echo "PyTorch missing for /usr/bin/python3: apt-get install -y python3-torch libopenblas0" >&2; exit 2; }

pp3d_line="$(OMP_NUM_THREADS="$threads" "$bench" --threads "$threads" --steps "$steps")"
torch_line="$(OMP_NUM_THREADS="$threads" /usr/bin/python3 "$here/gpt2_step_torch.py" --threads "$threads" --steps "$steps")"
field() { sed -n "s/.*$2=\([^ ]*\).*/\1/p" <<<"$1"; }

printf '%-8s %10s %12s %10s %10s\n' impl step_s fwd_bwd_s opt_s loss
for line in "$pp3d_line" "$torch_line"; do
  printf '%-8s %10s %12s %10s %10s\n' "${line%% *}" "$(field "$line" step_s)" "$(field "$line" fwd_bwd_s)" \
    "$(field "$line" opt_s)" "$(field "$line" loss)"
done
awk -v a="$(field "$pp3d_line" step_s)" -v b="$(field "$torch_line" step_s)" \
    -v c="$(field "$pp3d_line" fwd_bwd_s)" -v d="$(field "$torch_line" fwd_bwd_s)" \
    'BEGIN { printf "ratio pp3d/torch: step %.2f, fwd+bwd %.2f (threads '"$threads"'; <1 means pp3d is faster)\n", a / b, c / d }'
echo "# $pp3d_line"
echo "# $torch_line"
