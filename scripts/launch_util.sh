# Sourced by ./train and scripts/run_multinode.sh (not a program of its own).
#
# wait_ranks LAUNCHER PID=NAME ...: waits for the rank processes a launcher
# started in the background. On the first one to fail (in time, not in list
# order) it prints "LAUNCHER: NAME failed first, exit status S (pid P)" to stderr,
# sends SIGTERM to the others and still waits for them (no process is left
# behind); returns that first status, or 0 when every rank succeeded.
wait_ranks() {
  local who="$1"; shift
  local -A names=()
  local item pid rc first=0
  for item in "$@"; do names[${item%%=*}]="${item#*=}"; done
  while (( ${#names[@]} > 0 )); do
    pid="" rc=0
    wait -n -p pid "${!names[@]}" || rc=$?
    [ -n "$pid" ] || break  # no such child left (cannot happen unless reaped elsewhere)
    if (( rc != 0 && first == 0 )); then
      first=$rc
      local how="exit status $rc"
      (( rc > 128 )) && how+=" (signal $(kill -l $(( rc - 128 )) 2>/dev/null || echo $(( rc - 128 ))))"
      echo "$who: ${names[$pid]} failed first, $how (pid $pid); stopping the other ranks" >&2
      unset "names[$pid]"
      for item in "${!names[@]}"; do kill "$item" 2>/dev/null || true; done
    else
      unset "names[$pid]"
    fi
  done
  return "$first"
}
