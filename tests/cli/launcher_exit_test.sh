#!/usr/bin/env bash
# The torchrun-style launchers (scripts/run_multinode.sh, ./train --launcher tcp)
# must exit with the first failing rank's status and name that rank (issue 18:
# `if ! wait "$pid"; then rc=$?` made them exit 0). A stand-in pp3d-train in a
# fake build dir fails with status 7 on RANK 1 after 0.3 s while the other ranks
# would sleep 60 s: the launcher must return 7 within 10 s, print
# "rank 1 ... failed first, exit status 7" and leave no rank running.
# Usage: launcher_exit_test.sh SOURCE_DIR WORKDIR
set -uo pipefail
src="$1" work="$2"
rm -rf "$work"; mkdir -p "$work/examples/train_gpt"
fake="$work/examples/train_gpt/pp3d-train"
cat >"$fake" <<'SH'
#!/usr/bin/env bash
# ./train validates the flags with `pp3d-train --check-config N` before launching: accept.
for a in "$@"; do [ "$a" = --check-config ] && exit 0; done
echo "$PPID $$" >>"${FAKE_PIDS:?}"
if [ "$RANK" = 1 ]; then sleep 0.3; exit 7; fi
exec sleep 60
SH
chmod +x "$fake"
fails=0
check() {  # check NAME COMMAND...: runs it, checks status, message, time and leftovers
  local name="$1"; shift
  export FAKE_PIDS="$work/$name.pids"; : >"$FAKE_PIDS"
  local t0=$SECONDS rc=0
  "$@" >"$work/$name.out" 2>&1 || rc=$?
  local took=$(( SECONDS - t0 ))
  sed "s/^/  [$name] /" "$work/$name.out"
  [ "$rc" = 7 ] || { echo "FAIL: $name exited $rc, want 7 (rank 1's status)"; fails=1; }
  grep -q "rank 1.* failed first, exit status 7" "$work/$name.out" ||
    { echo "FAIL: $name did not name rank 1 and its status"; fails=1; }
  (( took < 10 )) || { echo "FAIL: $name took ${took}s (the other ranks were not stopped)"; fails=1; }
  local left=""
  for p in $(cut -d' ' -f2 "$FAKE_PIDS"); do kill -0 "$p" 2>/dev/null && left+=" $p"; done
  [ -z "$left" ] || { echo "FAIL: $name left ranks running:$left"; kill $left 2>/dev/null; fails=1; }
}
check run_multinode env NUM_NODES=1 NODE_RANK=0 GPUS_PER_NODE=3 MASTER_PORT=29999 PP3D_BUILD_DIR="$work" \
  "$src/scripts/run_multinode.sh" --max-steps 1
check train_tcp env PP3D_BUILD_DIR="$work" PP3D_NO_BUILD=1 "$src/train" --launcher tcp --mode simple --gpus 3 \
  --device cpu --max-steps 1
[ "$fails" = 0 ] && echo "launcher_exit_test: OK"
exit "$fails"
