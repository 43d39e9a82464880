#!/usr/bin/env bash
# Megatron-LM-style run: tensor parallel TP_SIZE + pipeline PP_SIZE (1F1B) + sequence
# parallelism + ZeRO-1 (distributed optimizer) over dp = NUM_GPUS / (TP_SIZE x PP_SIZE).
#   NUM_GPUS=8 TP_SIZE=2 PP_SIZE=2 scripts/run_megatron.sh --max-steps 200
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec "$root/train" --mode megatron --gpus "${NUM_GPUS:-8}" --tp "${TP_SIZE:-2}" --pp "${PP_SIZE:-2}" "$@"
