#!/usr/bin/env bash
# Render a report in headless Chromium at a 1400 px window: check the browser decoded every
# image, that no figure is shrunk below 90% of its size (its text would be unreadable), that
# neither the page nor any table is wider than the window, and that the embedded CJK font
# loaded (where the page has CJK text); save a screenshot to look at.
#   usage: scripts/check_report.sh REPORT.html [SHOT.png [HEIGHT]]
# Chromium comes from Debian: apt-get install -y chromium (or chromium-headless-shell).
set -euo pipefail
html="${1:?usage: $0 REPORT.html [SHOT.png [HEIGHT]]}"
shot="${2:-${html%.html}.png}"
height="${3:-3000}"
width="${REPORT_WIDTH:-1400}"
[ -f "$html" ] || { echo "check_report: $html not found" >&2; exit 2; }
browser=""
for b in chromium-headless-shell chromium chromium-browser google-chrome; do
  if command -v "$b" >/dev/null 2>&1; then browser="$b"; break; fi
done
[ -n "$browser" ] || { echo "check_report: no chromium on PATH (apt-get install chromium)" >&2; exit 3; }
url="file://$(cd "$(dirname "$html")" && pwd)/$(basename "$html")"
flags=(--no-sandbox --disable-gpu --hide-scrollbars --allow-file-access-from-files --virtual-time-budget=5000
       --window-size="$width","$height")
[ "$browser" = chromium-headless-shell ] || flags+=(--headless=new)
dom="$("$browser" "${flags[@]}" --dump-dom "$url" 2>/dev/null)"
attr() { printf '%s' "$dom" | grep -o "$1=\"[^\"]*\"" | head -1 | sed 's/.*="\(.*\)"/\1/'; }
ok="$(attr data-images-ok)"
[ -n "$ok" ] || { echo "check_report: the page did not finish loading in $browser" >&2; exit 1; }
if [ "${ok%/*}" != "${ok#*/}" ]; then echo "check_report: only $ok images decoded" >&2; exit 1; fi
scale="$(attr data-min-image-scale)"
if awk "BEGIN{exit !($scale < 0.9)}"; then echo "check_report: a figure is shown at ${scale} of its size" >&2; exit 1; fi
[ "$(attr data-overflow)" = no ] || { echo "check_report: the page is wider than the window" >&2; exit 1; }
tables="$(attr data-tables-overflow)"
[ "$tables" = 0 ] || { echo "check_report: $tables table(s) wider than the page" >&2; exit 1; }
cjk="$(attr data-cjk-font)"
case "$cjk" in none|loaded) ;; *) echo "check_report: the embedded CJK font is '$cjk', not loaded" >&2; exit 1;; esac
"$browser" "${flags[@]}" --screenshot="$shot" "$url" >/dev/null 2>&1
[ -s "$shot" ] || { echo "check_report: no screenshot written" >&2; exit 1; }
echo "check_report: $ok images decoded by $browser at ${width} px, smallest figure scale $scale, no overflow," \
     "CJK font $cjk; screenshot $shot"
