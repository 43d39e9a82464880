#!/usr/bin/env bash
# Multi-node launch without MPI (torchrun-style): run this once on every node with
#   NUM_NODES=2 NODE_RANK=<0..NUM_NODES-1> MASTER_ADDR=<node 0's address> MASTER_PORT=29500 \
#   GPUS_PER_NODE=8 scripts/run_multinode.sh --tp 2 --pp 2 --zero-stage 1 [pp3d-train flags]
# It starts GPUS_PER_NODE processes with RANK = NODE_RANK x GPUS_PER_NODE + LOCAL_RANK,
# WORLD_SIZE = NUM_NODES x GPUS_PER_NODE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and
# MASTER_PORT; rank 0 (on node 0) hosts the TCP rendezvous. Arguments go to pp3d-train
# (dp = WORLD_SIZE / (tp x pp)). DRY_RUN=1 prints the commands instead.
# Exits with the first failing local rank's status ("run_multinode: rank R (node N,
# local rank L) failed first, exit status S (pid P)" on stderr), 0 when all succeed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NUM_NODES="${NUM_NODES:-1}" NODE_RANK="${NODE_RANK:-0}" GPUS_PER_NODE="${GPUS_PER_NODE:-1}"
MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}" MASTER_PORT="${MASTER_PORT:-29500}"
for v in NUM_NODES NODE_RANK GPUS_PER_NODE MASTER_PORT; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || { echo "run_multinode: $v must be a non-negative integer, got '${!v}'" >&2; exit 2; }
done
(( NODE_RANK < NUM_NODES )) || { echo "run_multinode: NODE_RANK $NODE_RANK must be < NUM_NODES $NUM_NODES" >&2; exit 2; }
world=$(( NUM_NODES * GPUS_PER_NODE ))
# Uses an existing build (so nodes sharing a file system do not build concurrently);
# builds with ./train --build-only only when the binary is missing.
exe="${PP3D_BUILD_DIR:-$root/build}/examples/train_gpt/pp3d-train"
if [ "${DRY_RUN:-0}" != 1 ] && [ ! -x "$exe" ]; then exe="$("$root/train" --build-only | tail -1)"; fi
threads="${OMP_NUM_THREADS:-$(( $(nproc) / GPUS_PER_NODE > 1 ? $(nproc) / GPUS_PER_NODE : 1 ))}"
ranks=()  # PID=NAME for wait_ranks
for ((l = 0; l < GPUS_PER_NODE; l++)); do
  rank=$(( NODE_RANK * GPUS_PER_NODE + l ))
  envs=(RANK=$rank WORLD_SIZE=$world LOCAL_RANK=$l LOCAL_WORLD_SIZE=$GPUS_PER_NODE MASTER_ADDR=$MASTER_ADDR
        MASTER_PORT=$MASTER_PORT OMP_NUM_THREADS=$threads)
  if [ "${DRY_RUN:-0}" = 1 ]; then
    printf '%s ' "${envs[@]}"; printf '%q ' "$exe" "$@"; echo
    continue
  fi
  env "${envs[@]}" "$exe" "$@" &
  ranks+=("$!=rank $rank (node $NODE_RANK, local rank $l)")
done
# Exit status: 0 when every local rank succeeded, else the first failing rank's
# status (named on stderr); the other local ranks are then stopped.
source "$root/scripts/launch_util.sh"
status=0
wait_ranks run_multinode "${ranks[@]+"${ranks[@]}"}" || status=$?
exit "$status"
