#!/usr/bin/env bash
# Builds the CUDA emulator, libtemper_cuda_emu.so (see include/cuda_emu.h and driver.cpp), with g++ (C++20):
# the runtime, driver and graphs, its self-test kernels (selftest/*.cu), plus every cuda/*.cu compiled for the CPU with each of its extern "C" __global__
# kernels registered under its name. Usage: build-emu.sh [OUTPUT_DIR] (default: <repo>/build/cuda-emu).
# Prints the library's path. Tests load it with TEMPER_CUDA_DRIVER=<that path> (test.sh does).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(mkdir -p "${1:-$here/../../../build/cuda-emu}" && cd "${1:-$here/../../../build/cuda-emu}" && pwd)
command -v g++ >/dev/null || { echo "build-emu.sh: g++ is not on PATH" >&2; exit 2; }
flags=(-std=c++20 -O2 -fPIC -Wall -Wno-unused-variable -Wno-unknown-pragmas -I "$here/include" -I "$here" -I "$here/../cuda")
objects=()
for src in "$here/runtime.cpp" "$here/driver.cpp" "$here/graph.cpp"; do
  obj="$out/$(basename "$src" .cpp).o"
  g++ "${flags[@]}" -c "$src" -o "$obj"
  objects+=("$obj")
done
for cu in "$here"/../cuda/*.cu "$here"/selftest/*.cu; do
  name=$(basename "$cu" .cu)
  kernels=$(tr '\n' ' ' < "$cu" | grep -oE 'extern "C" __global__ void( __launch_bounds__\([^)]*\))? [A-Za-z_][A-Za-z0-9_]*\(' | sed -E 's/.* ([A-Za-z_][A-Za-z0-9_]*)\($/\1/')
  [ -n "$kernels" ] || { echo "build-emu.sh: $cu has no extern \"C\" __global__ kernel" >&2; exit 2; }
  wrapper="$out/$name.emu.cpp"
  { echo "#include \"cuda_emu.h\""; echo "#include \"$(cd "$(dirname "$cu")" && pwd)/$name.cu\""; echo "#include \"runtime.h\"";
    for k in $kernels; do echo "TEMPER_EMU_REGISTER($k)"; done; } > "$wrapper"
  g++ "${flags[@]}" -c "$wrapper" -o "$out/$name.o"
  objects+=("$out/$name.o")
done
g++ -shared -o "$out/libtemper_cuda_emu.so.tmp" "${objects[@]}"
mv "$out/libtemper_cuda_emu.so.tmp" "$out/libtemper_cuda_emu.so"
echo "$out/libtemper_cuda_emu.so"
