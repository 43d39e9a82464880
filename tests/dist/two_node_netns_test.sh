#!/usr/bin/env bash
# Two "nodes" on this machine (issue 18): network namespaces joined by a veth pair
# (the addresses exist only inside them) each run scripts/run_multinode.sh with 4
# ranks (NUM_NODES=2, NODE_RANK, MASTER_ADDR = node 0's veth address).
#   1. equality: tp 2 x pp 2 x dp 2, ZeRO-1, 20 steps; the per-step losses must be
#      bitwise equal to a one-node run of 8 ranks (run inside node 0's namespace).
#   2. partition: a long run whose veth link is set down after 3 steps; both
#      nodes' launchers must exit non-zero within PP3D_COMM_TIMEOUT + 15 s of the
#      cut, node 0 naming a rank of node 1 and node 1 naming rank 0 (the rendezvous
#      host), and no process may be left in either namespace.
# Needs root and `ip netns` (iproute2); exits 77 (skipped) with a message when
# network namespaces cannot be created. The namespaces are deleted on exit.
# Usage: two_node_netns_test.sh SOURCE_DIR BUILD_DIR WORKDIR
set -uo pipefail
src="$1" build="$2" work="$3"
skip() { echo "SKIP: $*"; exit 77; }
command -v ip >/dev/null || skip "no 'ip' command (apt-get install iproute2, or tools/setup_deps.sh)"
[ "$(id -u)" = 0 ] || skip "network namespaces need root (this runs as uid $(id -u))"
exe="$build/examples/train_gpt/pp3d-train"
[ -x "$exe" ] || { echo "FAIL: $exe is not built"; exit 1; }

tag=$$  # unique names: other runs of this test may share the machine
ns0=pp3d_n0_$tag ns1=pp3d_n1_$tag veth0=p3v0_$tag veth1=p3v1_$tag
addr0=10.218.0.1 addr1=10.218.0.2
cleanup() {
  for ns in $ns0 $ns1; do
    pids=$(ip netns pids "$ns" 2>/dev/null); [ -n "$pids" ] && kill -KILL $pids 2>/dev/null
    ip netns del "$ns" 2>/dev/null  # also removes the veth pair
  done
}
trap cleanup EXIT
trap 'exit 1' INT TERM
ip netns add $ns0 2>"$work.err" || { rm -f "$work.err"; skip "cannot create a network namespace here (ip netns add: $(cat "$work.err" 2>/dev/null)); needs root with CAP_SYS_ADMIN"; }
rm -rf "$work"; mkdir -p "$work"
set -e
ip netns add $ns1
ip link add $veth0 type veth peer name $veth1
ip link set $veth0 netns $ns0
ip link set $veth1 netns $ns1
ip -n $ns0 addr add $addr0/24 dev $veth0
ip -n $ns1 addr add $addr1/24 dev $veth1
for ns in $ns0 $ns1; do ip -n $ns link set lo up; done
ip -n $ns0 link set $veth0 up
ip -n $ns1 link set $veth1 up
set +e

timeout_s=10
flags=(--num-layers 2 --hidden-size 32 --num-heads 4 --seq-len 16 --batch-size 2 --warmup-steps 0 --eval-batches 2
       --tp 2 --pp 2 --zero-stage 1 --device cpu)
common=(PP3D_BUILD_DIR="$build" OMP_NUM_THREADS=1 PP3D_COMM_TIMEOUT=$timeout_s MASTER_PORT=29500)
node() {  # node NS NUM_NODES NODE_RANK GPUS_PER_NODE MASTER_ADDR OUT [flags...]: one node's launcher
  local ns=$1 n=$2 r=$3 g=$4 a=$5 out=$6; shift 6
  ip netns exec "$ns" env "${common[@]}" NUM_NODES=$n NODE_RANK=$r GPUS_PER_NODE=$g MASTER_ADDR=$a \
    "$src/scripts/run_multinode.sh" "${flags[@]}" "$@" --output-dir "$out" >"$out.log" 2>&1
}
fails=0
fail() { echo "FAIL: $*"; fails=1; }
show() { sed "s|^|  [$(basename "$1")] |" "$1" | tail -n "${2:-8}"; }

# 1. equality with a one-node run
t0=$SECONDS
node $ns0 1 0 8 127.0.0.1 "$work/one_node" --max-steps 20 || fail "one-node run exited $?"
node $ns1 2 1 4 $addr0 "$work/node1" --max-steps 20 & n1=$!
node $ns0 2 0 4 $addr0 "$work/node0" --max-steps 20; rc0=$?
wait $n1; rc1=$?
echo "equality runs took $(( SECONDS - t0 )) s; node exit statuses $rc0 / $rc1"
[ "$rc0" = 0 ] && [ "$rc1" = 0 ] || { show "$work/node0.log" 20; show "$work/node1.log" 20; fail "two-node run exited $rc0 / $rc1"; }
python3 - "$work/one_node/metrics.jsonl" "$work/node0/metrics.jsonl" <<'PY' || fail "losses differ"
import json, sys
a, b = ([json.loads(l)["loss"] for l in open(p) if l.strip()] for p in sys.argv[1:3])
print(f"one node: {len(a)} steps, last loss {a[-1]!r}; two nodes: {len(b)} steps, last loss {b[-1]!r}")
bad = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
sys.exit(0 if len(a) == len(b) == 20 and not bad else 1)
PY

# 2. partition: the link goes down mid-run
node $ns1 2 1 4 $addr0 "$work/cut1" --max-steps 100000 & n1=$!
node $ns0 2 0 4 $addr0 "$work/cut0" --max-steps 100000 & n0=$!
for ((i = 0; i < 600; i++)); do  # up to 60 s for 3 steps
  [ "$( (wc -l < "$work/cut0/metrics.jsonl") 2>/dev/null || echo 0)" -ge 3 ] && break
  sleep 0.1
done
ip -n $ns1 link set $veth1 down
cut=$SECONDS
limit=$(( timeout_s + 15 ))
declare -A took=() status=()
while (( SECONDS - cut <= limit + 5 )) && { kill -0 $n0 2>/dev/null || kill -0 $n1 2>/dev/null; }; do
  for n in $n0 $n1; do
    if [ -z "${took[$n]:-}" ] && ! kill -0 $n 2>/dev/null; then took[$n]=$(( SECONDS - cut )); wait $n; status[$n]=$?; fi
  done
  sleep 0.2
done
for n in $n0 $n1; do
  if [ -z "${took[$n]:-}" ] && ! kill -0 $n 2>/dev/null; then took[$n]=$(( SECONDS - cut )); wait $n; status[$n]=$?; fi
done
for i in 0 1; do
  n=$([ $i = 0 ] && echo $n0 || echo $n1)
  echo "node $i: exit status ${status[$n]:-none (still running)} ${took[$n]:-?} s after the cut"
  show "$work/cut$i.log" 6
  [ -n "${took[$n]:-}" ] || { fail "node $i still running $(( limit + 5 )) s after the cut"; continue; }
  [ "${status[$n]}" != 0 ] || fail "node $i exited 0 after losing its peer node"
  (( took[$n] <= limit )) || fail "node $i took ${took[$n]} s (> PP3D_COMM_TIMEOUT $timeout_s + 15)"
  grep -q "run_multinode: rank [0-9]* (node $i.*failed first" "$work/cut$i.log" ||
    fail "node $i's launcher did not name its first failing rank"
done
grep -qE "global rank\(?s?\)? \[?([0-9]+, )*[4-7]" "$work/cut0.log" || fail "node 0 did not name a rank of node 1"
grep -qE "TCP store at $addr0|global rank\(?s?\)? \[?([0-9]+, )*[0-3]\b" "$work/cut1.log" ||
  fail "node 1 did not name node 0 (the rendezvous at $addr0 or a rank 0-3)"
for ns in $ns0 $ns1; do
  left=$(ip netns pids $ns)
  [ -z "$left" ] || fail "processes left in $ns: $(ps -o pid=,comm= -p $left | tr '\n' ' ')"
done
[ "$fails" = 0 ] && echo "two_node_netns_test: OK"
exit "$fails"
