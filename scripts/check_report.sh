#!/usr/bin/env bash
# Render a report in headless Chromium: check the browser decoded every image, and save a
# screenshot to look at.   usage: scripts/check_report.sh REPORT.html [SHOT.png]
# Chromium comes from Debian: apt-get install -y chromium-headless-shell (or chromium).
set -euo pipefail
html="${1:?usage: $0 REPORT.html [SHOT.png]}"
shot="${2:-${html%.html}.png}"
[ -f "$html" ] || { echo "check_report: $html not found" >&2; exit 2; }
browser=""
for b in chromium-headless-shell chromium chromium-browser google-chrome; do
  if command -v "$b" >/dev/null 2>&1; then browser="$b"; break; fi
done
[ -n "$browser" ] || { echo "check_report: no chromium on PATH (apt-get install chromium-headless-shell)" >&2; exit 3; }
url="file://$(cd "$(dirname "$html")" && pwd)/$(basename "$html")"
flags=(--no-sandbox --disable-gpu --hide-scrollbars --allow-file-access-from-files --virtual-time-budget=5000)
[ "$browser" = chromium-headless-shell ] || flags+=(--headless=new)
dom="$("$browser" "${flags[@]}" --dump-dom "$url" 2>/dev/null)"
ok="$(printf '%s' "$dom" | grep -o 'data-images-ok="[0-9]*/[0-9]*"' | head -1 | sed 's/.*="\(.*\)"/\1/')"
[ -n "$ok" ] || { echo "check_report: the page did not finish loading in $browser" >&2; exit 1; }
if [ "${ok%/*}" != "${ok#*/}" ]; then echo "check_report: only $ok images decoded" >&2; exit 1; fi
"$browser" "${flags[@]}" --window-size=1200,3000 --screenshot="$shot" "$url" >/dev/null 2>&1
[ -s "$shot" ] || { echo "check_report: no screenshot written" >&2; exit 1; }
echo "check_report: $ok images decoded by $browser; screenshot $shot"
