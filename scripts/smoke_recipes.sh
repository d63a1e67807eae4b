#!/usr/bin/env bash
# Run every shipped recipe end to end in smoke mode (`lmforge run R --smoke`), one after another, and
# print a table: recipe, wall seconds, peak RSS, exit code. Exits non-zero if any recipe failed or
# its loss curves left the band around reference/curves/NAME-smoke.json (scripts/reference_curves.py).
#   bash scripts/smoke_recipes.sh                   # all of recipes/*.yaml
#   bash scripts/smoke_recipes.sh recipes/tiny.yaml # some
set -uo pipefail
cd "$(dirname "$0")/.."
LMFORGE="${LMFORGE:-.venv/bin/lmforge}"
OUT="${SMOKE_OUT:-runs/smoke-logs}"
mkdir -p "$OUT"
recipes=("$@")
[ ${#recipes[@]} -eq 0 ] && recipes=(recipes/*.yaml)
status=0
rows=()
for r in "${recipes[@]}"; do
  name=$(basename "$r" .yaml)
  log="$OUT/$name.log"
  start=$(date +%s)
  if [ -x /usr/bin/time ]; then
    /usr/bin/time -f "%M" -o "$OUT/$name.rss" "$LMFORGE" run "$r" --smoke --quiet > "$log" 2>&1
  else
    "$LMFORGE" run "$r" --smoke --quiet > "$log" 2>&1
  fi
  rc=$?
  secs=$(( $(date +%s) - start ))
  rss_kb=$(tail -1 "$OUT/$name.rss" 2>/dev/null || echo 0)
  rows+=("$(printf '%-22s %6ss %7s MB  rc=%s' "$name" "$secs" "$(( ${rss_kb:-0} / 1024 ))" "$rc")")
  if [ "$rc" -ne 0 ]; then
    status=1
    echo "smoke: $r failed (rc=$rc); last lines of $log:" >&2
    tail -20 "$log" >&2
  fi
  # the clean run's curves, kept in reference/curves/: a silent change in any technique moves them
  ref="reference/curves/$name-smoke.json"
  if [ "$rc" -eq 0 ] && [ -f "$ref" ]; then
    if ! "$(dirname "$LMFORGE")/python" scripts/reference_curves.py check "runs/$name-smoke" "$ref" > "$OUT/$name.curves" 2>&1; then
      status=1
      echo "smoke: $r ran but its curves left the reference band:" >&2
      cat "$OUT/$name.curves" >&2
    fi
  fi
done
echo "smoke runs (wall time, peak RSS of the lmforge process tree's largest process):"
printf '  %s\n' "${rows[@]}"
exit $status
