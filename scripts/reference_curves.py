"""Capture or check a run's loss curves against the reference kept in reference/curves/.

    python scripts/reference_curves.py capture runs/tiny-smoke reference/curves/tiny-smoke.json
    python scripts/reference_curves.py check runs/tiny-smoke reference/curves/tiny-smoke.json

check exits 1 and prints one line per end point outside the band (lmforge/report/reference.py
states the band); CI checks every smoke run this way (scripts/smoke_recipes.sh).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lmforge.io.atomic import write_text
from lmforge.report.reference import ABS_TOL, REL_TOL, compare, curves


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["capture", "check"])
    ap.add_argument("run_dir")
    ap.add_argument("reference")
    a = ap.parse_args()
    run = curves(a.run_dir)
    if not run:
        print(f"{a.run_dir}: no metrics.jsonl under it", file=sys.stderr)
        return 2
    if a.action == "capture":
        write_text(Path(a.reference), json.dumps(run, indent=1, sort_keys=True) + "\n")
        print(f"wrote {a.reference}: {len(run)} stages")
        return 0
    ref = json.loads(Path(a.reference).read_text(encoding="utf-8"))
    bad = compare(run, ref)
    for line in bad:
        print(f"{a.run_dir} vs {a.reference}: {line}")
    print(f"{a.run_dir}: {len(run)} stages, {len(bad)} end points outside max({ABS_TOL}, {REL_TOL:.0%}) "
          f"of {a.reference}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
