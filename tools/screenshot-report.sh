#!/usr/bin/env bash
# Opens a demo report.html in headless Debian chromium (installed with apt-get when missing), fails when
# the page logs a console error, and saves a PNG screenshot.
#   usage: tools/screenshot-report.sh [REPORT.html] [OUT.png]   (defaults: demo-out/report.html, docs/demo-report.png)
set -euo pipefail
report=$(realpath "${1:-demo-out/report.html}")
out=$(realpath -m "${2:-docs/demo-report.png}")
[ -f "$report" ] || { echo "screenshot-report: $report not found (run 'temper demo' first)" >&2; exit 2; }
browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
  browser=$(command -v chromium)
fi
profile=$(mktemp -d)
log=$(mktemp)
trap 'rm -rf "$profile" "$log"' EXIT
mkdir -p "$(dirname "$out")"
"$browser" --headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update \
  --disable-sync --no-first-run --user-data-dir="$profile" --enable-logging=stderr --v=0 \
  --window-size=1200,1400 --hide-scrollbars --screenshot="$out" "file://$report" 2>"$log" || { cat "$log" >&2; exit 1; }
if grep -E "Uncaught|ERROR:CONSOLE|CONSOLE\([0-9]+\).*[Ee]rror" "$log" >&2; then
  echo "screenshot-report: console errors in $report" >&2; exit 1
fi
[ -s "$out" ] || { echo "screenshot-report: no screenshot written" >&2; cat "$log" >&2; exit 1; }
echo "wrote $out"
