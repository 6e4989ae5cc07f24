#!/usr/bin/env bash
# Builds the solution (Release, warnings as errors) and runs every xunit v3 test project (each is its
# own runner) under its time budget, then prints one line: `tests: N passed, N failed, N skipped`.
# Budgets (seconds) are listed in README.md's testing section; CI=true sizes heavy tests down.
set -uo pipefail
cd "$(dirname "$0")"
declare -A budget=( [Temper.Core.Tests]=120 [Temper.Kernels.Tests]=240 [Temper.Models.Tests]=300 [Temper.Cli.Tests]=240 [Temper.Training.Tests]=300 [Temper.Kernels.Ilgpu.Tests]=180 [Temper.Native.Tests]=120 [Temper.Serving.Tests]=180 [Temper.Cuda.Tests]=60 )
dotnet build Engine.sln -c Release -warnaserror -nologo -v q || { echo "tests: 0 passed, 1 failed, 0 skipped"; exit 1; }
passed=0; failed=0; skipped=0; status=0
# run_suite LABEL BUDGET EXE [ARGS...]: runs one xunit v3 runner under its budget and adds up its summary.
run_suite() {
  local label=$1 limit=$2 exe=$3; shift 3
  local log; log=$(mktemp)
  timeout "$limit" "$exe" -noColor -parallel collections "$@" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  local line; line=$(grep -E "^\s*$(basename "$exe")\s+Total:" "$log" | tail -1)
  rm -f "$log"
  if [ -z "$line" ]; then
    echo "$label: no summary (exit $rc; 124 means it ran past its $limit s budget)"; failed=$((failed+1)); status=1; return
  fi
  local t f e s n
  t=$(sed -E 's/.*Total: ([0-9]+).*/\1/' <<<"$line"); f=$(sed -E 's/.*Failed: ([0-9]+).*/\1/' <<<"$line")
  e=$(sed -E 's/.*Errors: ([0-9]+).*/\1/' <<<"$line"); s=$(sed -E 's/.*Skipped: ([0-9]+).*/\1/' <<<"$line")
  n=$(sed -E 's/.*Not Run: ([0-9]+).*/\1/' <<<"$line")
  passed=$((passed + t - f - s - n)); failed=$((failed + f + e)); skipped=$((skipped + s + n))
  [ "$rc" -eq 0 ] && [ "$f" -eq 0 ] && [ "$e" -eq 0 ] || status=1
}
for proj in "${!budget[@]}"; do
  run_suite "$proj" "${budget[$proj]}" "tests/$proj/bin/Release/net10.0/$proj"
done
# The CUDA C++ kernels (cuda/*.cu) on the CPU through the CUDA emulator, where g++ exists: the kernel
# checks of Temper.Cuda.Tests (trait Kernels=cuda) again, with the emulator as the driver library, in three
# run orders; then
# IlgpuBackend's PTX route (those kernels on the buffers of ILGPU's CPU accelerator) through the emulator:
# the routing checks of Temper.Kernels.Ilgpu.Tests (trait Ptx=emulated; skipped in its plain run), with
# uninitialised tensors poisoned (NaN) so a kernel that leaves part of an output unwritten fails; and the
# native library's CUDA generation (Temper.Native.Tests, trait Kernels=cuda) and `temper bench gemm`'s
# validation of every GEMM kernel (Temper.Cli.Tests, trait Kernels=cuda).
if command -v g++ >/dev/null && emu=$(timeout 120 bash kernels/Temper.Kernels.Cuda/emu/build-emu.sh build/cuda-emu | tail -1) && [ -f "$emu" ]; then
  TEMPER_CUDA_DRIVER="$emu" run_suite "Temper.Cuda.Tests (CUDA emulator)" 120 tests/Temper.Cuda.Tests/bin/Release/net10.0/Temper.Cuda.Tests -trait "Kernels=cuda"
  # The same checks with the blocks and the fibers of each round run in reverse and in shuffled order: a
  # result that changes with the order reads memory another thread or block writes without a barrier.
  TEMPER_CUDA_DRIVER="$emu" TEMPER_EMU_SCHEDULE=reverse run_suite "Temper.Cuda.Tests (CUDA emulator, reverse order)" 120 tests/Temper.Cuda.Tests/bin/Release/net10.0/Temper.Cuda.Tests -trait "Kernels=cuda"
  TEMPER_CUDA_DRIVER="$emu" TEMPER_EMU_SCHEDULE=shuffle:1 run_suite "Temper.Cuda.Tests (CUDA emulator, shuffled order)" 120 tests/Temper.Cuda.Tests/bin/Release/net10.0/Temper.Cuda.Tests -trait "Kernels=cuda"
  TEMPER_CUDA_DRIVER="$emu" TEMPER_POISON_MEMORY=1 run_suite "Temper.Kernels.Ilgpu.Tests (PTX route on the CUDA emulator)" 120 tests/Temper.Kernels.Ilgpu.Tests/bin/Release/net10.0/Temper.Kernels.Ilgpu.Tests -trait "Ptx=emulated"
  # The same route, and the graph decoder, with every kernel opt-in a GPU has not yet checked turned on (README's list;
  # the sm_90a ones take no effect on the emulator's compute capability 8.0): kept passing until their lease steps run.
  TEMPER_LORA_RANK=1 TEMPER_ATTENTION_BACKWARD_MMA=1 TEMPER_ATTENTION_MMA=3 TEMPER_NF4_DEQUANT=1 TEMPER_GEMV_PERSISTENT=1 TEMPER_CUDA_DRIVER="$emu" TEMPER_POISON_MEMORY=1 \
    run_suite "Temper.Kernels.Ilgpu.Tests (PTX route with the opt-ins, CUDA emulator)" 120 tests/Temper.Kernels.Ilgpu.Tests/bin/Release/net10.0/Temper.Kernels.Ilgpu.Tests -trait "Ptx=emulated"
  # (the one-row checks: the persistent GEMVs serve one row only)
  TEMPER_GEMV_PERSISTENT=1 TEMPER_CUDA_DRIVER="$emu" run_suite "Temper.Cuda.Tests (graph decoder with the persistent GEMVs, CUDA emulator)" 60 tests/Temper.Cuda.Tests/bin/Release/net10.0/Temper.Cuda.Tests \
    -class "*CudaDecodeGraphChecks" -method "*Generate_gives*" -method "*Graph_generator*" -method "*Profiled*"
  TEMPER_CUDA_DRIVER="$emu" run_suite "Temper.Cli.Tests (CUDA emulator)" 60 tests/Temper.Cli.Tests/bin/Release/net10.0/Temper.Cli.Tests -trait "Kernels=cuda"
  TEMPER_CUDA_DRIVER="$emu" run_suite "Temper.Native.Tests (CUDA emulator)" 60 tests/Temper.Native.Tests/bin/Release/net10.0/Temper.Native.Tests -trait "Kernels=cuda"
else
  echo "CUDA emulator: g++ missing or the build failed; the CUDA kernel (three run orders), PTX route (plain and with the opt-ins), graph decoder, bench gemm and native CUDA checks on the CPU skipped"; skipped=$((skipped+8))
fi
# The native library and its C/C++ hosts (ctest), where cmake and a C compiler exist.
if command -v cmake >/dev/null && command -v cc >/dev/null && [ "${TEMPER_SKIP_NATIVE:-0}" != 1 ]; then
  log=$(mktemp)
  timeout 600 bash bindings/build-native.sh 2>&1 | tee "$log"
  line=$(grep -E "tests passed, [0-9]+ tests failed out of [0-9]+" "$log" | tail -1)
  if [ -z "$line" ]; then
    echo "native: no ctest summary"; failed=$((failed+1)); status=1
  else
    nf=$(sed -E 's/.* ([0-9]+) tests failed out of ([0-9]+).*/\1/' <<<"$line"); nt=$(sed -E 's/.* tests failed out of ([0-9]+).*/\1/' <<<"$line")
    ns=$(grep -cE "\*\*\*Skipped|Not Run" "$log" || true)
    passed=$((passed + nt - nf - ns)); failed=$((failed + nf)); skipped=$((skipped + ns))
    [ "$nf" -eq 0 ] || status=1
  fi
  rm -f "$log"
else
  echo "native: cmake or a C compiler missing (or TEMPER_SKIP_NATIVE=1); ctest hosts skipped"; skipped=$((skipped+1))
fi
echo "tests: $passed passed, $failed failed, $skipped skipped"
exit $status
