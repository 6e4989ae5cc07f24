#!/usr/bin/env bash
# Builds the solution (Release, warnings as errors) and runs every xunit v3 test project (each is its
# own runner) under its time budget, then prints one line: `tests: N passed, N failed, N skipped`.
# Budgets (seconds) are listed in README.md's testing section; CI=true sizes heavy tests down.
set -uo pipefail
cd "$(dirname "$0")"
declare -A budget=( [Temper.Core.Tests]=120 [Temper.Kernels.Tests]=240 [Temper.Models.Tests]=300 [Temper.Cli.Tests]=240 [Temper.Training.Tests]=300 [Temper.Kernels.Ilgpu.Tests]=180 [Temper.Native.Tests]=120 [Temper.Serving.Tests]=180 [Temper.Cuda.Tests]=60 )
dotnet build Engine.sln -c Release -warnaserror -nologo -v q || { echo "tests: 0 passed, 1 failed, 0 skipped"; exit 1; }
passed=0; failed=0; skipped=0; status=0
for proj in "${!budget[@]}"; do
  exe="tests/$proj/bin/Release/net10.0/$proj"
  log=$(mktemp)
  timeout "${budget[$proj]}" "$exe" -noColor -parallel collections 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  line=$(grep -E "^\s*$proj\s+Total:" "$log" | tail -1)
  if [ -z "$line" ]; then
    echo "$proj: no summary (exit $rc; 124 means it ran past its ${budget[$proj]} s budget)"; failed=$((failed+1)); status=1; continue
  fi
  t=$(sed -E 's/.*Total: ([0-9]+).*/\1/' <<<"$line"); f=$(sed -E 's/.*Failed: ([0-9]+).*/\1/' <<<"$line")
  e=$(sed -E 's/.*Errors: ([0-9]+).*/\1/' <<<"$line"); s=$(sed -E 's/.*Skipped: ([0-9]+).*/\1/' <<<"$line")
  n=$(sed -E 's/.*Not Run: ([0-9]+).*/\1/' <<<"$line")
  passed=$((passed + t - f - s - n)); failed=$((failed + f + e)); skipped=$((skipped + s + n))
  [ "$rc" -eq 0 ] && [ "$f" -eq 0 ] && [ "$e" -eq 0 ] || status=1
  rm -f "$log"
done
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
