#!/usr/bin/env bash
# Dead-peer test driver: runs comm_dead_peer under mpirun -n 4 with
# PP3D_COMM_TIMEOUT=5 and checks that every survivor got an error naming the
# operation, the group and the peer within timeout + 10 s. Whatever mpirun's
# own exit code, the verdict comes from the survivors' files. `timeout` bounds
# the whole run so ctest can never hang.
# usage: run_dead_peer.sh MPIEXEC PROGRAM kill|stall
set -u
mpiexec=$1 prog=$2 mode=$3
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
extra=()
# With recovery enabled, mpirun does not kill the survivors when rank 2 dies,
# so their deadlines are what ends the collective.
[ "$mode" = kill ] && extra=(--enable-recovery)
start=$(date +%s)
PP3D_COMM_TIMEOUT=5 timeout -k 5 45 "$mpiexec" -n 4 --allow-run-as-root --oversubscribe "${extra[@]}" \
  -x PP3D_COMM_TIMEOUT "$prog" "$mode" "$out"
echo "mpirun exit code $? after $(( $(date +%s) - start )) s (not used for the verdict)"
fail=0
check() {  # rank pattern...
  local f="$out/rank$1.txt"; shift
  if [ ! -f "$f" ]; then echo "FAIL: $f missing (the survivor did not report an error)"; fail=1; return; fi
  local secs; secs=$(head -1 "$f")
  echo "rank file $f: $(tail -n +2 "$f")"
  awk -v s="$secs" 'BEGIN { exit !(s >= 4.5 && s <= 15.0) }' || { echo "FAIL: error after $secs s, expected 5..15"; fail=1; }
  for pat in "$@"; do
    grep -qF -- "$pat" "$f" || { echo "FAIL: '$pat' not in $f"; fail=1; }
  done
}
if [ "$mode" = kill ]; then
  for r in 0 1 3; do
    check $r "all_reduce on group 'world'" "did not complete within 5 s" "did not arrive"
    # The list of ranks that may be missing must include the victim.
    grep -qE 'global ranks \[([0-9]+, )*2(, [0-9]+)*\] did not arrive' "$out/rank$r.txt" ||
      { echo "FAIL: rank 2 not named in rank$r.txt"; fail=1; }
  done
else
  check 0 "barrier on group 'world'" "did not complete within 5 s"
  check 1 "barrier on group 'world'" "did not complete within 5 s"
  check 3 "recv on group 'world'" "peer global rank(s) [2]"
fi
[ -f "$out/rank2.txt" ] && { echo "FAIL: the victim (rank 2) reported"; fail=1; }
[ $fail = 0 ] && echo "dead-peer ($mode): PASS"
exit $fail
