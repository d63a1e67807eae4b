"""Print (or write into README.md between its markers) the findings table of a findings run:
report claim -> measured here -> verdict, one row per comparison.

    python scripts/findings_table.py runs/findings                 # print the markdown table
    python scripts/findings_table.py runs/findings --readme README.md   # replace the table in README
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lmforge.io.atomic import write_text  # noqa: E402
from lmforge.report.collect import discover  # noqa: E402
from lmforge.report.findingsection import summary_rows  # noqa: E402

BEGIN, END = "<!-- findings-table:begin -->", "<!-- findings-table:end -->"


def short_source(source: str) -> str:
    """The report's name without its section: "Index-1.9B, section 3 (Norm-Head)" -> "Index-1.9B"."""
    return re.sub(r", section.*", "", source.split(" (")[0])


def table(run_dir: Path) -> str:
    """The markdown table; FileNotFoundError when run_dir is missing or holds no finished finding
    (an empty table would wipe README's with --readme)."""
    _, stages, _ = discover(run_dir)
    found = [s for s in stages if isinstance(s.finding, dict) and s.finding.get("comparisons") is not None]
    if not found:
        raise FileNotFoundError(f"{run_dir}: no finished finding (run `lmforge run recipes/findings.yaml` first)")
    lines = ["| finding | report | claim | comparison | expected | measured (diff ± 2 se) | verdict | seeds |",
             "|---|---|---|---|---|---|---|---|"]
    for st in found:
        r = st.finding
        for row in summary_rows([st]):
            name, comp, exp, meas, verdict, n, claim = row
            lines.append(f"| {name} | {short_source(r.get('source', '')) if name else ''} | {claim} | {comp} | "
                         f"{exp} | {meas} | **{verdict}** | {n} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--readme", type=Path, help="replace the table between the findings-table markers")
    a = ap.parse_args(argv)
    try:
        text = table(a.run_dir)
    except FileNotFoundError as e:   # one line, not a traceback
        print(f"findings_table.py: {e}", file=sys.stderr)
        return 2
    if not a.readme:
        print(text)
        return 0
    readme = a.readme.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if not pattern.search(readme):
        print(f"{a.readme}: no {BEGIN} ... {END} markers", file=sys.stderr)
        return 2
    write_text(a.readme, pattern.sub(lambda _: f"{BEGIN}\n{text}\n{END}", readme))
    print(f"wrote the findings table into {a.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
