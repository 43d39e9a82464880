#!/usr/bin/env bash
# Installs pp3d's build and test dependencies (Debian 12). Idempotent and quick
# when everything is present. PP3D_WITH_TORCH=1 also installs PyTorch (for the
# reference-fixture generator and the e2e speed benchmark only; tests do not need it).
# PP3D_WITH_TOKENIZERS=1 also pip-installs Hugging Face `tokenizers` (tools/prepare_data
# --tokenizer / --train-bpe only; its test checks the install hint without it).
set -euo pipefail
pkgs=(cmake g++ libeigen3-dev libfmt-dev catch2 libopenmpi-dev openmpi-bin libyaml-cpp-dev nlohmann-json3-dev
      libcli11-dev libspdlog-dev ninja-build ccache libopenblas-dev python3
      python3-matplotlib patchelf iproute2)  # python3-matplotlib: tools/monitor --png (its test skips without it);
      # patchelf: tools/device_bundle.sh; iproute2: `ip netns` for the two-node test (tests/dist/two_node_netns_test.sh)
if [ "${PP3D_WITH_TORCH:-0}" = 1 ]; then pkgs+=(python3-torch libopenblas0); fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" != 0 ] && SUDO=sudo
  echo "setup_deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ "${PP3D_WITH_TOKENIZERS:-0}" = 1 ] && ! python3 -c "import tokenizers" 2>/dev/null; then
  python3 -m pip install --quiet tokenizers
fi
# cuDNN frontend headers (header-only C++ graph API for the fused SDPA, lib/backend/cuda/cuda_sdpa.cpp):
# the pinned nvidia-cudnn-frontend wheel, unpacked into .deps/cudnn_frontend (CMake looks there). Only
# with nvcc; needs the network once, and a failed download leaves the build without fused SDPA.
CUDNN_FRONTEND_VERSION=1.32.0
root="$(cd "$(dirname "$0")/.." && pwd)"
fe_dir="$root/.deps/cudnn_frontend"
if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
  if [ ! -f "$fe_dir/include/cudnn_frontend.h" ] || [ "$(cat "$fe_dir/VERSION" 2>/dev/null)" != "$CUDNN_FRONTEND_VERSION" ]; then
    tmp="$(mktemp -d)"
    if python3 -m pip download --quiet --no-deps --dest "$tmp" "nvidia-cudnn-frontend==$CUDNN_FRONTEND_VERSION"; then
      rm -rf "$fe_dir" && mkdir -p "$fe_dir"
      python3 - "$tmp"/nvidia_cudnn_frontend-*.whl "$fe_dir" <<'PY'
import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
for n in z.namelist():
    if n.startswith("include/"):
        z.extract(n, sys.argv[2])
PY
      echo "$CUDNN_FRONTEND_VERSION" > "$fe_dir/VERSION"
      echo "setup_deps: cuDNN frontend $CUDNN_FRONTEND_VERSION headers in $fe_dir"
    else
      echo "setup_deps: could not download nvidia-cudnn-frontend==$CUDNN_FRONTEND_VERSION (no network?): fused SDPA not built"
    fi
    rm -rf "$tmp"
  fi
fi
echo "setup_deps: all dependencies present"
