#!/usr/bin/env bash
# 3D-parallel training on this node: NUM_GPUS ranks = TP_SIZE x PP_SIZE x dp, with
# ZeRO stage ZERO_STAGE over dp. Extra arguments go to ./train / pp3d-train.
#   NUM_GPUS=8 TP_SIZE=2 PP_SIZE=2 scripts/run_3d_parallel.sh --max-steps 200
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec "$root/train" --mode 3d --gpus "${NUM_GPUS:-8}" --tp "${TP_SIZE:-2}" --pp "${PP_SIZE:-2}" \
  --zero-stage "${ZERO_STAGE:-1}" "$@"
