#!/usr/bin/env bash
# Builds everything the GPU check runs and copies it, with every shared library
# it needs, into DIR, so that the bare GPU machine (CUDA toolkit, NCCL/cuDNN
# wheels and PyTorch, none of our host dependencies, no network) can run it:
#   DIR/bin/        pp3d-train, the CUDA tests and benchmarks, gemm_calibration_bench
#   DIR/lib/        non-system, non-CUDA shared libraries (fmt, spdlog, yaml-cpp, MPI, ...)
#   DIR/configs/ DIR/bench/   the small inputs: model configs, the PyTorch GPU peers (benchmarks/cuda/*.py, *.sh)
#   DIR/device_check.sh, DIR/env.sh   the check and the library-path setup it uses
# Libraries not copied (the GPU machine has them): glibc, libstdc++, libgcc_s,
# libgomp and the CUDA libraries (cudart, cuBLAS(Lt), NCCL, cuDNN, driver);
# tools/bundle_allowed_libs.txt lists them. The bundle is checked by
# tests/cli/device_bundle_test.sh.
#
# usage: tools/device_bundle.sh [--cpu-only] [--from-build BUILD] [--arch SM] [DIR]
#   DIR            output folder (default: device_bundle, git-ignored); an earlier
#                  bundle there is replaced, any other non-empty folder refused
#   --arch SM      CUDA architectures (default 90 = H100/H200; "80;90" adds A100)
#   --cpu-only     build without CUDA (pp3d-train and the CPU benches only): the
#                  same bundle layout, for testing the bundling where nvcc is slow
#                  or missing
#   --from-build B copy from an existing configured build folder B instead of
#                  building (builds the targets it lacks there)
set -euo pipefail
caller="$PWD"  # relative DIR and BUILD are taken from where the script was called
cd "$(dirname "$0")/.."
root="$PWD"
command -v patchelf >/dev/null || { echo "device_bundle: patchelf is missing (tools/setup_deps.sh installs it)" >&2; exit 2; }
dir="device_bundle" arch="90" cpu_only=0 from_build=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu-only) cpu_only=1 ;;
    --arch) arch="${2:?--arch needs a value, e.g. 90 or '80;90'}"; shift ;;
    --from-build) from_build="${2:?--from-build needs a build folder}"; shift ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "device_bundle: unknown option '$1' (see --help)" >&2; exit 2 ;;
    *) dir="$1" ;;
  esac
  shift
done
case "$dir" in /*) ;; device_bundle) dir="$root/$dir" ;; *) dir="$caller/$dir" ;; esac
case "$from_build" in /*|"") ;; *) from_build="$caller/$from_build" ;; esac
# DIR is replaced: only an empty folder or an earlier bundle (it has BUNDLE.txt).
if [ -d "$dir" ] && [ -n "$(ls -A "$dir")" ] && [ ! -f "$dir/BUNDLE.txt" ]; then
  echo "device_bundle: '$dir' exists and is not a bundle (no BUNDLE.txt): choose another DIR or remove it" >&2; exit 2
fi

# ---- build ------------------------------------------------------------------
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$root}"
if [ -n "$from_build" ]; then
  build="$(cd "$from_build" 2>/dev/null && pwd)" || { echo "device_bundle: no build folder '$from_build'" >&2; exit 2; }
  [ -f "$build/CMakeCache.txt" ] || { echo "device_bundle: '$build' is not a configured CMake build folder" >&2; exit 2; }
  arch=$(sed -n 's/^CMAKE_CUDA_ARCHITECTURES:[A-Z]*=//p' "$build/CMakeCache.txt")
else
  build="$root/build-bundle"; [ "$cpu_only" = 1 ] && build="$root/build-bundle-cpu"
  launcher=()
  command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
  cuda=(-DPP3D_WITH_CUDA=ON "-DCMAKE_CUDA_ARCHITECTURES=$arch")
  [ "$cpu_only" = 1 ] && cuda=(-DPP3D_WITH_CUDA=OFF)
  # No build RPATH: the binaries find their libraries through env.sh, never in
  # this machine's folders.
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_SKIP_BUILD_RPATH=ON "${cuda[@]}" "${launcher[@]}" >/dev/null
fi
targets=(pp3d-train gemm_calibration_bench gpt2_step_bench)
if [ "$cpu_only" = 0 ]; then
  [ -n "$from_build" ] && ! grep -q 'CMAKE_CUDA_COMPILER:' "$build/CMakeCache.txt" &&
    { echo "device_bundle: '$build' is not a CUDA build; pass --cpu-only or omit --from-build" >&2; exit 2; }
  for f in tests/cuda/*_test.cpp benchmarks/cuda/*_bench.cpp; do targets+=("$(basename "${f%.cpp}")"); done
fi
cmake --build "$build" -j "${PP3D_JOBS:-$(nproc)}" --target "${targets[@]}"

# ---- copy -------------------------------------------------------------------
rm -rf "$dir"
mkdir -p "$dir/bin" "$dir/lib" "$dir/bench"
for t in "${targets[@]}"; do
  # Not a copy in a bundle inside the build folder (the ctests device_bundle_self_contained
  # and device_check_dry_run write theirs there); find's errors are ignored, as such a
  # bundle may be rewritten while find walks it.
  exe=$(find "$build" -type f -name "$t" -perm -u+x -not -path '*/CMakeFiles/*' -not -path "$dir/*" \
          -not -path '*/device_bundle/*' -not -path '*/device_check_dry/*' 2>/dev/null | head -1 || true)
  [ -n "$exe" ] || { echo "device_bundle: built target $t not found under $build" >&2; exit 1; }
  cp "$exe" "$dir/bin/"
  strip --strip-unneeded "$dir/bin/$t"  # symbols only; CUDA fatbins stay
  # A build folder's RPATH points into this machine's folders: env.sh replaces it.
  patchelf --remove-rpath "$dir/bin/$t"
done
cp -r configs "$dir/configs"
cp benchmarks/cuda/*.py benchmarks/cuda/*.sh "$dir/bench/"  # PyTorch peers and the e2e driver
cp tools/device_check.sh tools/bundle_allowed_libs.txt "$dir/"

# Shared libraries: walk the NEEDED entries from the binaries, resolving names the
# way the loader does here (ldd), and copy each library that is not on the
# allowed list; allowed libraries are not descended into (their dependencies
# come with them on the GPU machine).
allowed_re=$(grep -v '^#' tools/bundle_allowed_libs.txt | grep . | paste -sd'|')
cuda_lib=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do [ -d "$d" ] && cuda_lib="$cuda_lib:$d"; done
declare -A seen=()
queue=("$dir"/bin/*)
while [ ${#queue[@]} -gt 0 ]; do
  elf="${queue[0]}"; queue=("${queue[@]:1}")
  # ldd resolves the whole closure; keep only this file's direct NEEDED names.
  mapfile -t needed < <(readelf -d "$elf" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  resolved=$(LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}$cuda_lib" ldd "$elf")
  for n in "${needed[@]}"; do
    [[ "$n" =~ ^($allowed_re)$ ]] && continue
    [ -n "${seen[$n]:-}" ] && continue
    path=$(awk -v n="$n" '$1 == n && $2 == "=>" { print $3 }' <<<"$resolved")
    [ -n "$path" ] && [ "$path" != "not" ] || { echo "device_bundle: $elf needs $n, which does not resolve here" >&2; exit 1; }
    seen[$n]=1
    cp -L "$path" "$dir/lib/$n"
    chmod u+w "$dir/lib/$n"
    strip --strip-unneeded "$dir/lib/$n" 2>/dev/null || true
    queue+=("$dir/lib/$n")
  done
done

cat > "$dir/env.sh" <<'EOF'
# Sourced by device_check.sh: the bundle's libraries first, then the GPU
# machine's CUDA libraries (toolkit lib64 and the nvidia/*/lib folders of the
# Python that holds torch).
bundle="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cuda_dirs=""
for d in "${CUDA_HOME:-/usr/local/cuda}/lib64" /usr/local/cuda/targets/x86_64-linux/lib; do
  [ -d "$d" ] && cuda_dirs="$cuda_dirs:$d"
done
for py in "${PP3D_PYTHON:-}" python3 python /usr/bin/python3; do
  [ -n "$py" ] || continue
  site=$("$py" -c 'import torch, os, sys; print(os.path.dirname(os.path.dirname(torch.__file__)))' 2>/dev/null) || continue
  for d in "$site"/nvidia/*/lib; do [ -d "$d" ] && cuda_dirs="$cuda_dirs:$d"; done
  export PP3D_PYTHON="$py"
  break
done
export LD_LIBRARY_PATH="$bundle/lib$cuda_dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
EOF
{
  echo "pp3d device bundle: $(git describe --always --dirty 2>/dev/null || echo unknown)"
  echo "built: $(date -u +%FT%TZ) on $(uname -m); CUDA targets: $([ "$cpu_only" = 1 ] && echo "none (--cpu-only)" || echo "sm $arch")"
  echo "binaries: $(cd "$dir/bin" && echo *)"
  echo "libraries: $(cd "$dir/lib" && echo *)"
} > "$dir/BUNDLE.txt"

size_mb=$(du -sm "$dir" | cut -f1)
cat "$dir/BUNDLE.txt"
echo "size: ${size_mb} MiB in $dir"
[ "$size_mb" -lt 60 ] || { echo "device_bundle: $dir is ${size_mb} MiB: over 60 MiB, the device tool carries 64 MiB with the working tree" >&2; exit 1; }
