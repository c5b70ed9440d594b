#!/usr/bin/env bash
# Render a report.html headless and save a PNG, to check by eye that tables and figures show offline.
#
#   reports/screenshot.sh REPORT_DIR/report.html OUT.png [WIDTH,HEIGHT]
#
# Needs Debian's chromium (apt-get install -y chromium). Network, sync and updates are switched off
# so the screenshot proves the file is self-contained; a throwaway profile keeps runs independent.
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: $0 REPORT.html OUT.png [WIDTH,HEIGHT]" >&2
  exit 2
fi
html=$(realpath "$1")
out=$(realpath -m "$2")
size=${3:-1400,3000}
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
chromium --headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update \
  --disable-sync --no-first-run --hide-scrollbars --user-data-dir="$profile" \
  --screenshot="$out" --window-size="$size" "file://$html" 2>/dev/null
echo "screenshot written to $out"
