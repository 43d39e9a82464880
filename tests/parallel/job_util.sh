# Shell helpers of the job-control tests (train_sigterm.sh, train_kill9.sh):
# sourced, not run. Callers define fail() and $work.
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
# wait_steps DIR N DEADLINE_S: until DIR/metrics.jsonl has N lines (1 at the deadline)
wait_steps() {
  local t0; t0=$(now)
  until [ "$( (wc -l < "$1/metrics.jsonl") 2>/dev/null || echo 0)" -ge "$2" ]; do
    awk -v a="$t0" -v b="$(now)" -v d="$3" 'BEGIN { exit !(b - a > d) }' && return 1
    sleep 0.1
  done
}
# wait_exit PID DEADLINE_S: the exit status, or 124 after killing the job at the deadline
wait_exit() {
  local t0; t0=$(now)
  while kill -0 "$1" 2>/dev/null; do
    if awk -v a="$t0" -v b="$(now)" -v d="$2" 'BEGIN { exit !(b - a > d) }'; then
      kill -KILL "$1" $(pgrep -P "$1") 2>/dev/null; wait "$1" 2>/dev/null; return 124
    fi
    sleep 0.05
  done
  wait "$1"
}
