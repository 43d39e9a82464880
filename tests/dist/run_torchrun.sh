#!/usr/bin/env bash
# torchrun-style launch without MPI: starts N copies of PROGRAM with RANK,
# WORLD_SIZE, LOCAL_RANK, MASTER_ADDR=127.0.0.1 and a free MASTER_PORT, and
# passes when all of them exit 0 (each is bounded by `timeout`).
# With "count-local", LOCAL_WORLD_SIZE and OMP_NUM_THREADS are left unset: the
# ranks on this host are then counted at the rendezvous, and rank 0 must log
# the OpenMP thread default for N ranks on this node.
# usage: run_torchrun.sh PROGRAM N [count-local]
set -u
prog=$1 n=$2 mode=${3:-}
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
local_env=(LOCAL_WORLD_SIZE=$n)
[ "$mode" = count-local ] && local_env=(-u LOCAL_WORLD_SIZE -u OMP_NUM_THREADS)
pids=()
for ((r = 0; r < n; r++)); do
  env -u OMPI_COMM_WORLD_SIZE -u PMI_SIZE -u PMI_RANK -u PMIX_RANK -u SLURM_PROCID "${local_env[@]}" \
    RANK=$r WORLD_SIZE=$n LOCAL_RANK=$r MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
    PP3D_COMM_TIMEOUT=30 timeout -k 5 60 "$prog" 2>"$out/rank$r.err" &
  pids+=($!)
done
fail=0
for ((r = 0; r < n; r++)); do
  wait "${pids[$r]}" || { echo "FAIL: rank $r exited with $?"; cat "$out/rank$r.err"; fail=1; }
done
if [ "$mode" = count-local ]; then
  cat "$out/rank0.err"
  grep -q "OpenMP threads per rank: [0-9]* ([0-9]* usable cores / $n ranks on this node)" "$out/rank0.err" ||
    { echo "FAIL: rank 0 did not log a thread default for $n ranks counted at the rendezvous"; fail=1; }
fi
[ $fail = 0 ] && echo "torchrun-style launch of $n ranks on port $port${mode:+ ($mode)}: PASS"
exit $fail
