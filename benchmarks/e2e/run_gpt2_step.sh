#!/usr/bin/env bash
# One GPT-2 124M training step (B=4, T=64) on N CPU threads: pp3d vs PyTorch,
# run back to back in this invocation; prints a table and the time ratio pp3d/torch.
# The peer runs on the best OpenBLAS kernel this CPU supports: OpenBLAS 0.3.21 does
# not recognise some VM CPU models and falls back to its generic Prescott kernel
# (37 vs 195 GFLOP/s on the MLP GEMM), so unless OPENBLAS_CORETYPE is set, AVX-512
# selects SkylakeX and AVX2 Haswell. The table shows the peer's GEMM GFLOP/s.
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

# openblas_coretype FLAGS: the OpenBLAS kernel for a /proc/cpuinfo flags line ("" = its own detection).
openblas_coretype() {
  if grep -qw avx512f <<<"$1"; then echo SkylakeX; elif grep -qw avx2 <<<"$1"; then echo Haswell; fi
}
coretype_note="set by the user"
if [ -z "${OPENBLAS_CORETYPE:-}" ]; then
  OPENBLAS_CORETYPE="$(openblas_coretype "$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)")"
  coretype_note="detected from the CPU flags"
  [ -n "$OPENBLAS_CORETYPE" ] || coretype_note="no AVX2/AVX-512: OpenBLAS's own detection"
fi
export OPENBLAS_CORETYPE

pp3d_line="$(OMP_NUM_THREADS="$threads" "$bench" --threads "$threads" --steps "$steps")"
torch_line="$(OMP_NUM_THREADS="$threads" /usr/bin/python3 "$here/gpt2_step_torch.py" --threads "$threads" --steps "$steps")"
field() { sed -n "s/.*$2=\([^ ]*\).*/\1/p" <<<"$1"; }

echo "PyTorch peer: OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-(unset)} ($coretype_note)"
printf '%-8s %10s %12s %10s %10s %12s\n' impl step_s fwd_bwd_s opt_s loss gemm_gflops
for line in "$pp3d_line" "$torch_line"; do
  gemm="$(field "$line" gemm_gflops)"
  printf '%-8s %10s %12s %10s %10s %12s\n' "${line%% *}" "$(field "$line" step_s)" "$(field "$line" fwd_bwd_s)" \
    "$(field "$line" opt_s)" "$(field "$line" loss)" "${gemm:--}"
done
awk -v a="$(field "$pp3d_line" step_s)" -v b="$(field "$torch_line" step_s)" \
    -v c="$(field "$pp3d_line" fwd_bwd_s)" -v d="$(field "$torch_line" fwd_bwd_s)" \
    'BEGIN { printf "ratio pp3d/torch: step %.2f, fwd+bwd %.2f (threads '"$threads"'; <1 means pp3d is faster)\n", a / b, c / d }'
echo "# $pp3d_line"
echo "# $torch_line"
