#!/usr/bin/env bash
# DeepSpeed-style ZeRO data parallelism: NUM_GPUS ranks, ZeRO stage ZERO_STAGE (1, 2, 3);
# DS_CONFIG (default configs/deepspeed/zero<stage>.json for stages 2 and 3) supplies the
# bucket / prefetch settings.
#   NUM_GPUS=4 ZERO_STAGE=3 scripts/run_deepspeed.sh --max-steps 200
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
args=(--mode deepspeed --gpus "${NUM_GPUS:-4}" --zero-stage "${ZERO_STAGE:-2}")
[ -z "${DS_CONFIG:-}" ] || args+=(--deepspeed-config "$DS_CONFIG")
exec "$root/train" "${args[@]}" "$@"
