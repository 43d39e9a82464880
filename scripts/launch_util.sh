# Sourced by ./train and scripts/run_multinode.sh (not a program of its own).
#
# wait_ranks LAUNCHER PID=NAME ...: waits for the rank processes a launcher
# started in the background. On the first one to fail (in time, to 0.1 s, not
# in list order) it prints "LAUNCHER: NAME failed first, exit status S (pid P)"
# to stderr, sends SIGTERM to the others and still waits for them (no process
# is left behind); returns that first status, or 0 when every rank succeeded.
# Polls with kill -0 and reaps with a plain `wait PID`: `wait -n PID...` fails
# with "no such job" for a child bash has already reaped.
wait_ranks() {
  local who="$1"; shift
  local -A names=()
  local item pid rc first=0
  for item in "$@"; do names[${item%%=*}]="${item#*=}"; done
  while (( ${#names[@]} > 0 )); do
    for pid in "${!names[@]}"; do
      kill -0 "$pid" 2>/dev/null && continue
      rc=0
      wait "$pid" || rc=$?
      local name="${names[$pid]}"
      unset "names[$pid]"
      if (( rc != 0 && first == 0 )); then
        first=$rc
        local how="exit status $rc"
        (( rc > 128 )) && how+=" (signal $(kill -l $(( rc - 128 )) 2>/dev/null || echo $(( rc - 128 ))))"
        echo "$who: $name failed first, $how (pid $pid); stopping the other ranks" >&2
        for item in "${!names[@]}"; do kill "$item" 2>/dev/null || true; done
      fi
    done
    if (( ${#names[@]} > 0 )); then sleep 0.1; fi
  done
  return "$first"
}
