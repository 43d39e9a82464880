#!/usr/bin/env bash
# ctest driver: runs every fenced shell block in the given Markdown files that is
# marked runnable — the line before its opening ``` fence is `<!-- runnable -->` —
# so the documented commands cannot drift from the code. Shrink rule (also stated in
# docs/USAGE_GUIDE.md "Documented commands are tested"):
#   - a command that starts training (./train, scripts/run_*.sh, .../pp3d-train) gets
#     `--max-steps 2` appended (a flag given twice takes its last value);
#   - build lines (`cmake ...`, `ninja ...`) are skipped: the build under test is used,
#     and `build/` means that build directory;
#   - `tail -f FILE` runs as `tail -n 5 FILE`;
#   - `# comments` are dropped and `\` continuations joined.
# Commands run in order, one bash each (so a block may use files an earlier one wrote),
# in a scratch directory linked to the repository (train, scripts, configs, tools) and to
# the build; any failing command fails the test and is printed with its output.
# Usage: docs_commands_test.sh REPO BUILD_DIR WORKDIR FILE.md...
set -euo pipefail
repo="$(cd "$1" && pwd)" build="$(cd "$2" && pwd)" work="$3"
shift 3
rm -rf "$work"
mkdir -p "$work/run"
for d in train scripts configs tools; do ln -s "$repo/$d" "$work/run/$d"; done
ln -s "$build" "$work/run/build"
export PP3D_BUILD_DIR="$build" PP3D_NO_BUILD=1 OMP_NUM_THREADS=1

# Prints the commands of the runnable blocks, one per line (continuations joined, comments dropped).
extract() {
  awk '
    /^<!-- runnable -->[[:space:]]*$/ { marked = 1; next }
    /^```/ {
      if (inblock) { inblock = 0; next }
      if (marked) { inblock = 1 }
      marked = 0; next
    }
    { marked = 0 }
    inblock {
      line = $0
      sub(/[[:space:]]+#.*$/, "", line); sub(/^#.*$/, "", line)
      if (line ~ /\\[[:space:]]*$/) { sub(/\\[[:space:]]*$/, " ", line); pending = pending line; next }
      line = pending line; pending = ""
      gsub(/^[[:space:]]+|[[:space:]]+$/, "", line); gsub(/[[:space:]]+/, " ", line)
      if (line != "") print line
    }' "$1"
}

shrink() {
  local cmd="$1"
  case "$cmd" in
    cmake\ *|ninja\ *) return 1 ;;
  esac
  cmd="$(sed -E 's/^tail -f /tail -n 5 /' <<<"$cmd")"
  if [[ "$cmd" =~ (^|[[:space:]/])(train|run_[a-z0-9_]+\.sh|pp3d-train)([[:space:]]|$) ]]; then cmd+=" --max-steps 2"; fi
  printf '%s\n' "$cmd"
}

failed=0 ran=0 n=0
for md in "$@"; do
  while IFS= read -r raw; do
    n=$((n + 1))
    if ! cmd="$(shrink "$raw")"; then echo "skip (build line): $raw"; continue; fi
    ran=$((ran + 1))
    t0=$EPOCHREALTIME
    rc=0
    (cd "$work/run" && timeout 300 bash -c "$cmd") >"$work/cmd$n.out" 2>&1 </dev/null || rc=$?
    secs=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { print b - a }')
    if [ "$rc" = 0 ]; then
      printf 'ok   %6.1f s  %s  (%s)\n' "$secs" "$cmd" "$(basename "$md")"
    else
      printf 'FAIL %6.1f s  %s  (%s): exit %s\n' "$secs" "$cmd" "$(basename "$md")" "$rc"
      tail -n 20 "$work/cmd$n.out" | sed 's/^/    | /'
      failed=$((failed + 1))
    fi
  done < <(extract "$md")
done
echo "$ran documented command(s) run, $failed failed"
[ "$ran" -gt 0 ] || { echo "FAIL: no runnable block found (mark one with <!-- runnable -->)"; exit 1; }
[ "$failed" = 0 ]
