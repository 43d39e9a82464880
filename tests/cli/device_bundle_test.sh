#!/usr/bin/env bash
# The device bundle is self-contained (issue 19): tools/device_bundle.sh
# --cpu-only --from-build BUILD (the CI build: no nvcc work here; the sm_90
# bundle goes through the same copy code) must give a folder where
#  1. every ELF needs (readelf NEEDED) only libraries in DIR/lib or on
#     tools/bundle_allowed_libs.txt;
#  2. with DIR/env.sh, ldd resolves every library into DIR/lib or to an allowed
#     name, and DIR/bin carries no RPATH/RUNPATH into this machine's folders;
#  3. `pp3d-train --device cpu` runs two steps from the bundle while the host's
#     copies of every carried library are hidden (a mount namespace binds
#     /dev/null over them); the same run without env.sh must fail there, which
#     proves the hiding works.
# usage: device_bundle_test.sh SOURCE_DIR BUILD WORKDIR
#        device_bundle_test.sh SOURCE_DIR --bundle DIR WORKDIR   (checks an existing bundle, e.g. the sm_90 one)
set -eu
fail() { echo "FAIL: $*"; exit 1; }
src=$1
if [ "$2" = --bundle ]; then
  dir=$(cd "$3" && pwd) work=$4
  rm -rf "$work" && mkdir -p "$work"
else
  build=$2 work=$3
  rm -rf "$work" && mkdir -p "$work"
  dir="$work/bundle"
  PP3D_JOBS=1 "$src/tools/device_bundle.sh" --cpu-only --from-build "$build" "$dir" > "$work/bundle.log" 2>&1 ||
    fail "device_bundle.sh failed: $(tail -20 "$work/bundle.log")"
fi
cat "$dir/BUNDLE.txt"
[ -x "$dir/bin/pp3d-train" ] || fail "no bin/pp3d-train in the bundle"
[ -f "$dir/env.sh" ] && [ -x "$dir/device_check.sh" ] || fail "env.sh or device_check.sh missing from the bundle"
size_mb=$(du -sm "$dir" | cut -f1)
[ "$size_mb" -lt 60 ] || fail "bundle is $size_mb MiB (limit 60: 64 MiB carried with the working tree)"
if git -C "$src" rev-parse --git-dir > /dev/null 2>&1; then
  git -C "$src" check-ignore -q device_bundle/bin/pp3d-train || fail "the default bundle folder device_bundle/ is not git-ignored"
fi
allowed_re="^($(grep -v '^#' "$src/tools/bundle_allowed_libs.txt" | grep . | paste -sd'|'))$"

# 1. NEEDED entries.
bad=()
n_elf=0
for f in "$dir"/bin/* "$dir"/lib/*; do
  [ "$(head -c 4 "$f" | od -An -c | tr -d ' ')" = '177ELF' ] || continue
  n_elf=$((n_elf + 1))
  for n in $(readelf -d "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    [[ "$n" =~ $allowed_re ]] || [ -f "$dir/lib/$n" ] || bad+=("$(basename "$f") needs $n")
  done
  rp=$(readelf -d "$f" | sed -n 's/.*(R.*PATH).*\[\(.*\)\]/\1/p')
  [ -z "$rp" ] || [[ "$f" != "$dir"/bin/* ]] || bad+=("$(basename "$f") has RPATH/RUNPATH $rp")
done
[ ${#bad[@]} -eq 0 ] || fail "bundle ELFs need libraries that are neither carried nor allowed: ${bad[*]}"
[ "$n_elf" -ge 3 ] || fail "only $n_elf ELF files in the bundle"
echo "1. NEEDED: $n_elf ELF files need only $dir/lib or allowed libraries"

# 2. ldd through env.sh.
env_ld=$(bash -c "source '$dir/env.sh'; echo \"\$LD_LIBRARY_PATH\"")
for f in "$dir"/bin/*; do
  while read -r name arrow path _; do
    [ "$arrow" = "=>" ] || continue
    [ "$path" != "not" ] || { [[ "$name" =~ $allowed_re ]] && continue; bad+=("$(basename "$f"): $name not found"); continue; }
    case "$path" in "$dir"/lib/*) continue ;; esac
    [[ "$name" =~ $allowed_re ]] || bad+=("$(basename "$f"): $name -> $path")
  done < <(LD_LIBRARY_PATH="$env_ld" ldd "$f")
done
[ ${#bad[@]} -eq 0 ] || fail "ldd resolves outside the bundle: ${bad[*]}"
echo "2. ldd: every library resolves into $dir/lib or to an allowed one"

# 3. Smoke run with the host's copies hidden.
hidden=()
for n in $(cd "$dir/lib" && ls); do
  p=$(ldd "$dir/bin/pp3d-train" | awk -v n="$n" '$1 == n { print $3 }')
  [ -n "$p" ] && [ -e "$p" ] && hidden+=("$(readlink -f "$p")")
done
[ ${#hidden[@]} -gt 0 ] || fail "no host copy of a carried library found to hide"
train=("$dir/bin/pp3d-train" --device cpu --max-steps 2 --warmup-steps 0 --num-layers 1 --hidden-size 16
       --num-heads 2 --seq-len 8 --batch-size 2 --global-batch-size 4 --output-dir "$work/run")
cat > "$work/hide.sh" <<EOF
set -e
for p in ${hidden[*]}; do mount --bind /dev/null "\$p"; done
if [ "\$1" = with-env ]; then source "$dir/env.sh"; else unset LD_LIBRARY_PATH; fi
shift
exec "\$@"
EOF
if unshare -m --propagation private true 2>/dev/null; then
  if OMP_NUM_THREADS=1 unshare -m --propagation private bash "$work/hide.sh" without-env "${train[@]}" > "$work/control.log" 2>&1; then
    fail "control: pp3d-train started without env.sh although the host's ${hidden[*]} were hidden"
  fi
  echo "3a. control: without env.sh the run fails ($(grep -m1 -o 'error while loading shared libraries[^:]*: [^:]*' "$work/control.log" || head -c 200 "$work/control.log"))"
  OMP_NUM_THREADS=1 unshare -m --propagation private bash "$work/hide.sh" with-env "${train[@]}" > "$work/run.log" 2>&1 ||
    fail "pp3d-train from the bundle failed with the host libraries hidden: $(tail -20 "$work/run.log")"
  mode="host copies of ${#hidden[@]} libraries hidden in a mount namespace"
else
  # No CAP_SYS_ADMIN (some containers): 1 and 2 above are the proof; say so.
  (source "$dir/env.sh"; OMP_NUM_THREADS=1 "${train[@]}") > "$work/run.log" 2>&1 ||
    fail "pp3d-train from the bundle failed: $(tail -20 "$work/run.log")"
  mode="NOT hidden: unshare -m is not permitted here, only LD_LIBRARY_PATH from env.sh"
fi
grep -q "done: final train loss [0-9]" "$work/run.log" || fail "the smoke run did not finish: $(tail -5 "$work/run.log")"
echo "3. pp3d-train --device cpu, 2 steps from the bundle ($mode): $(grep -o 'done: final train loss [0-9.]*' "$work/run.log")"
echo "device bundle self-contained: PASS"
