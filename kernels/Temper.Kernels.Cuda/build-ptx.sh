#!/usr/bin/env bash
# Compiles cuda/*.cu to Ptx/*.ptx (PTX for compute_80: the driver JIT-compiles it for the GPU at hand,
# Ampere and later) with the nvcc on PATH, and writes the SHA-256 of each source (the .cu, then the local
# headers it includes) on its .ptx's first line;
# Temper.Cuda.Tests (PtxSourceChecks, in CI) fails when a .cu no longer matches the hash in its .ptx.
# Needs nvcc 11.8 or later (Debian 12: bash kernels/Temper.Kernels.Cuda/install-nvcc.sh, as root).
# A .cu with the line `// ptx-target: sm_90a` (Hopper-only instructions such as wgmma, which nvcc 11.8 passes
# through as inline asm text) gets its header retargeted to `.version 8.0` / `.target sm_90a`: the driver
# JIT-compiles that on a compute capability 9.0 GPU only.
# A .cu with the line `// ptx-also: compute_90` is also compiled for compute_90 into Ptx/NAME.sm90.ptx (same stamp):
# code under __CUDA_ARCH__ >= 900 (grid_dependency.cuh's griddepcontrol) is in that build only.
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
  target="-arch=compute_80 -O3"
  if grep -q '^// ptx-target: sm_90a$' "$cu"; then
    sed -i -E 's/^\.version [0-9.]+$/.version 8.0/; s/^\.target sm_[0-9]+$/.target sm_90a/' "$tmp"
    grep -qx '.target sm_90a' "$tmp" || { echo "build-ptx.sh: $cu: no .target line to retarget" >&2; exit 2; }
    target="$target, retargeted to .version 8.0 .target sm_90a"
  fi
  { echo "// source-sha256: $sha cuda/$name.cu (nvcc $version, $target)"; cat "$tmp"; } > "Ptx/$name.ptx.tmp"
  mv "Ptx/$name.ptx.tmp" "Ptx/$name.ptx"
  echo "Ptx/$name.ptx <- $cu"
  if grep -q '^// ptx-also: compute_90$' "$cu"; then
    nvcc -ptx -arch=compute_90 -O3 -std=c++17 ${ccbin:+-ccbin "$ccbin"} -o "$tmp" "$cu"
    { echo "// source-sha256: $sha cuda/$name.cu (nvcc $version, -arch=compute_90 -O3)"; cat "$tmp"; } > "Ptx/$name.sm90.ptx.tmp"
    mv "Ptx/$name.sm90.ptx.tmp" "Ptx/$name.sm90.ptx"
    echo "Ptx/$name.sm90.ptx <- $cu"
  fi
  rm -f "$tmp"
done
