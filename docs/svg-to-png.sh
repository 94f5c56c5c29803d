#!/usr/bin/env bash
# Render an SVG saved by `qkv compute … --svg FILE` to a PNG of the same size,
# with headless Chromium (Debian: apt-get install -y chromium). Used once to
# make docs/heatmap.png:
#   qkv compute samples/worked_example.json --heatmap --svg /tmp/report.svg
#   bash docs/svg-to-png.sh /tmp/report.svg docs/heatmap.png
set -euo pipefail
svg=$(realpath "$1")
png=$(realpath -m "$2")
# The window is the SVG's viewBox, so the picture has no margins.
read -r w h < <(python3 -c 'import re,sys; v=re.search(r"viewBox=\"0 0 ([0-9.]+) ([0-9.]+)\"", open(sys.argv[1]).read()); print(round(float(v[1])), round(float(v[2])))' "$svg")
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --hide-scrollbars --force-device-scale-factor=2 --user-data-dir="$profile" \
  --window-size="$w,$h" --screenshot="$png" "file://$svg" 2>/dev/null
echo "$png: ${w}×${h} (×2)"
