#!/usr/bin/env bash
# torchrun-style launch without MPI: starts N copies of PROGRAM with RANK,
# WORLD_SIZE, LOCAL_RANK, MASTER_ADDR=127.0.0.1 and a free MASTER_PORT, and
# passes when all of them exit 0 (each is bounded by `timeout`).
# usage: run_torchrun.sh PROGRAM N
set -u
prog=$1 n=$2
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
pids=()
for ((r = 0; r < n; r++)); do
  env -u OMPI_COMM_WORLD_SIZE -u PMI_SIZE -u PMI_RANK -u PMIX_RANK -u SLURM_PROCID \
    RANK=$r WORLD_SIZE=$n LOCAL_RANK=$r LOCAL_WORLD_SIZE=$n MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
    PP3D_COMM_TIMEOUT=30 timeout -k 5 60 "$prog" &
  pids+=($!)
done
fail=0
for ((r = 0; r < n; r++)); do
  wait "${pids[$r]}" || { echo "FAIL: rank $r exited with $?"; fail=1; }
done
[ $fail = 0 ] && echo "torchrun-style launch of $n ranks on port $port: PASS"
exit $fail
