#!/usr/bin/env bash
# GPU session check (run on the lent H100/H200 through the device tool):
# builds pp3d with CUDA for sm_90, runs the GPU tests and the GPU benchmarks,
# and writes logs under $OUT (default ./device_out). Keep it under ~8 minutes.
#   usage: OUT=/some/dir tools/device_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/device_out}"
mkdir -p "$OUT"
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  nvcc --version | tail -2
  ls /usr/local/cuda/include | grep -E '^(nccl|cudnn)\.h$' || echo "NCCL/cuDNN headers not in /usr/local/cuda"
  # The configure step needs these host libraries too (find_package REQUIRED).
  for h in eigen3/Eigen/Core fmt/format.h spdlog/spdlog.h yaml-cpp/yaml.h nlohmann/json.hpp CLI/CLI.hpp mpi.h; do
    if [ -e "/usr/include/$h" ] || [ -e "/usr/lib/x86_64-linux-gnu/openmpi/include/$h" ]; then echo "have $h"; else echo "MISSING $h"; fi
  done
} > "$OUT/device_info.txt" 2>&1
# NCCL / cuDNN from the pip wheels when the toolkit lacks them.
extra=()
site=$(python3 -c 'import nvidia, os; print(os.path.dirname(nvidia.__path__[0]))' 2>/dev/null || true)
if [ -n "$site" ]; then
  [ -d "$site/nvidia/nccl" ] && extra+=(-DNCCL_ROOT="$site/nvidia/nccl") && export LD_LIBRARY_PATH="$site/nvidia/nccl/lib:${LD_LIBRARY_PATH:-}"
  [ -d "$site/nvidia/cudnn" ] && extra+=(-DCUDNN_ROOT="$site/nvidia/cudnn") && export LD_LIBRARY_PATH="$site/nvidia/cudnn/lib:${LD_LIBRARY_PATH:-}"
fi
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DPP3D_WITH_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DPP3D_BUILD_EXAMPLES=OFF "${extra[@]}" > "$OUT/configure.log" 2>&1 || { tail -30 "$OUT/configure.log"; exit 1; }
# Only what this check runs: the GPU tests (tests/cuda/*_test.cpp) and GPU benchmarks (benchmarks/cuda/*_bench.cpp).
targets=()
for f in tests/cuda/*_test.cpp benchmarks/cuda/*_bench.cpp; do [ -e "$f" ] && targets+=("$(basename "${f%.cpp}")"); done
targets+=(gemm_calibration_bench)
cmake --build build-gpu -j 16 --target "${targets[@]}" > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
ctest --test-dir build-gpu -L cuda --output-on-failure > "$OUT/cuda_tests.log" 2>&1
echo "cuda tests rc=$?" >> "$OUT/cuda_tests.log"
tail -20 "$OUT/cuda_tests.log"
# The planner's GEMM calibration for this card (pp3d-plan --gemm-calibration).
build-gpu/benchmarks/gemm_calibration_bench --device cuda --gpu "${PP3D_GPU_PRESET:-h100}" \
  --out "$OUT/gemm_calibration_${PP3D_GPU_PRESET:-h100}.yaml" > "$OUT/gemm_calibration.txt" 2>&1
for b in build-gpu/benchmarks/*cuda*_bench; do
  [ -x "$b" ] && "$b" > "$OUT/$(basename "$b").txt" 2>&1
done
ls -la "$OUT"
