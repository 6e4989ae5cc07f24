#!/usr/bin/env bash
# Installs nvcc from Debian 12's non-free archive (nvidia-cuda-toolkit, CUDA 11.8: PTX for sm_80/sm_90),
# enough for build-ptx.sh; no GPU or driver needed to compile. Run as root. CI does not need it: the PTX
# is checked in.
set -euo pipefail
src=/etc/apt/sources.list.d/debian.sources
if [ -f "$src" ] && ! grep -q "non-free" "$src"; then
  sed -i '0,/^Components: main$/s//Components: main contrib non-free/' "$src"
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nvidia-cuda-toolkit
nvcc --version | tail -2
