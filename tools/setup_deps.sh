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
echo "setup_deps: all dependencies present"
