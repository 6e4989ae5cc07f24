#!/usr/bin/env bash
# Runs the GEMM benchmarks (Temper Linear vs OpenBLAS sgemm) with OpenBLAS free to pick its own kernel:
# OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are unset for this process only. Extra arguments go to
# BenchmarkDotNet (default: --job short).
set -euo pipefail
cd "$(dirname "$0")/.."
args=("$@")
[ ${#args[@]} -eq 0 ] && args=(--job short)
exec env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
  dotnet run -c Release --project bench/Temper.Bench -- --filter '*Gemm*' "${args[@]}"
