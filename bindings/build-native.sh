#!/usr/bin/env bash
# CI entry for the native library: configures and builds the root CMakeLists.txt (which publishes
# libtemper with NativeAOT, then builds the C and C++ sample hosts against it) and runs ctest, ending
# with ctest's summary. Usage: bindings/build-native.sh [BUILD_DIR] (default build/native-cmake).
# TEMPER_TRAINING=OFF leaves the trainer out of libtemper (its test is then reported as skipped).
set -uo pipefail
cd "$(dirname "$0")/.."
build="${1:-build/native-cmake}"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1

start=$(date +%s)
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DTEMPER_TRAINING="${TEMPER_TRAINING:-ON}" >/dev/null \
  || { echo "native: cmake configure failed"; exit 1; }
cmake --build "$build" -j 2 || { echo "native: build failed"; exit 1; }
built=$(date +%s)
echo "native: libtemper + hosts built in $((built - start)) s ($(stat -c %s "$build/native/libtemper.so" 2>/dev/null || echo '?') bytes)"
ctest --test-dir "$build" --output-on-failure --timeout 300
rc=$?
echo "native: ctest took $(( $(date +%s) - built )) s"
exit $rc
