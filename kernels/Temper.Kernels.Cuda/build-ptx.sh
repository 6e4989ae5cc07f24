#!/usr/bin/env bash
# Compiles cuda/*.cu to Ptx/*.ptx (PTX for compute_80: the driver JIT-compiles it for the GPU at hand,
# Ampere and later) with the nvcc on PATH, and writes the SHA-256 of each source (the .cu, then the local
# headers it includes) on its .ptx's first line;
# Temper.Cuda.Tests (PtxSourceChecks, in CI) fails when a .cu no longer matches the hash in its .ptx.
# Needs nvcc 11.8 or later (Debian 12: bash kernels/Temper.Kernels.Cuda/install-nvcc.sh, as root).
# Also run by the `ptx` target of the top-level CMakeLists.txt where CMake finds nvcc.
set -euo pipefail
cd "$(dirname "$0")"
command -v nvcc >/dev/null || { echo "build-ptx.sh: nvcc is not on PATH (see install-nvcc.sh)" >&2; exit 2; }
version=$(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')
# nvcc 11.8 refuses Debian 12's gcc 12 as host compiler; it takes the clang-14 that its package brings.
ccbin=${NVCC_CCBIN:-$(command -v clang-14 || true)}
# Usage: build-ptx.sh [cuda/NAME.cu ...] (default: every .cu). nvcc names anonymous namespaces after a
# per-run hash, so rebuilding an unchanged .cu rewrites its .ptx: name the sources you changed.
sources=("$@")
[ ${#sources[@]} -gt 0 ] || sources=(cuda/*.cu)
for cu in "${sources[@]}"; do
  name=$(basename "$cu" .cu)
  # The stamp covers the .cu and the local headers it includes (#include "x.cuh", in order).
  headers=$(grep -oE '^#include "[^"]+"' "$cu" | sed -E 's/^#include "(.*)"$/cuda\/\1/' || true)
  sha=$(cat "$cu" $headers | sha256sum | cut -d' ' -f1)
  tmp=$(mktemp)
  nvcc -ptx -arch=compute_80 -O3 -std=c++17 ${ccbin:+-ccbin "$ccbin"} -o "$tmp" "$cu"
  { echo "// source-sha256: $sha cuda/$name.cu (nvcc $version, -arch=compute_80 -O3)"; cat "$tmp"; } > "Ptx/$name.ptx.tmp"
  mv "Ptx/$name.ptx.tmp" "Ptx/$name.ptx"
  rm -f "$tmp"
  echo "Ptx/$name.ptx <- $cu"
done
