#!/usr/bin/env bash
# Configures, builds and runs the whole test suite; prints ctest's summary.
# Usage: tools/run_tests.sh [build-dir]   (default: build). CUDA sources are
# compiled when nvcc is found (PP3D_WITH_CUDA=AUTO); GPU tests are skipped
# (exit 77) on machines without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build}"
jobs="${PP3D_JOBS:-$(nproc)}"
launcher=()
# Relative paths in ccache's hash: a fresh clone in another folder reuses the cache.
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$PWD}"
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPP3D_WITH_CUDA="${PP3D_WITH_CUDA:-AUTO}" "${launcher[@]}"
cmake --build "$build" -j "$jobs"
# Tests run two at a time (ctest -j); one OpenMP thread each avoids oversubscribing
# the cores, which makes small OpenMP regions 20-50x slower.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
ctest --test-dir "$build" --output-on-failure -j "$jobs" --timeout 900
