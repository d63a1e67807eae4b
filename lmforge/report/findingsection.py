"""The "Findings" section: each finding of the reports rerun here (lmforge findings, result.json):
the claim, the arms' numbers over seeds, the paired comparison with its verdict, the plot,
and what the miniature cannot show. One summary table first: claim -> measured -> verdict."""
from __future__ import annotations

import shutil
from pathlib import Path

from lmforge.report.collect import StageFolder
from lmforge.report.section import Section, slug
from lmforge.report.tables import Table, fmt

VERDICT_RULE = ("Each variant is compared with the baseline (or the reference arm its comparison names) seed by "
                "seed (the seed sets the initialisation and "
                "the data order in both arms): difference = mean of the per-seed differences ± 2 standard errors. "
                "Expected 'better' / 'worse': agrees when the difference exceeds 2 standard errors in that "
                "direction, disagrees when it does in the other, else inconclusive. Expected 'equal': agrees when "
                "the whole ± 2 SE interval lies inside the stated tolerance, disagrees when it lies outside, "
                "else inconclusive.")


def measured(c: dict) -> str:
    d, se = c.get("diff"), c.get("stderr")
    if not isinstance(d, (int, float)):
        return "-"
    return f"{d:+.4f} ± {2 * se:.4f}" if isinstance(se, (int, float)) else f"{d:+.4f}"


def expected(c: dict) -> str:
    e = c.get("expect", "")
    return f"equal (±{c.get('tolerance'):g})" if e == "equal" else e


def comparison(r: dict, arm: str, c: dict) -> str:
    """"variant vs its reference", and the metric when it is not the finding's primary one."""
    key = c.get("key", r.get("key"))
    return f"{arm} vs {c.get('against', r.get('baseline'))}" + (f" ({key})" if key != r.get("key") else "")


def summary_rows(findings: list[StageFolder]) -> list[list]:
    rows = []
    for st in findings:
        r = st.finding
        for i, (arm, c) in enumerate(r.get("comparisons", {}).items()):
            rows.append([r.get("finding") if i == 0 else "", comparison(r, arm, c), expected(c),
                         measured(c), c.get("verdict"), c.get("n"),
                         r.get("claim") if i == 0 else ""])
    return rows


def finding_blocks(st: StageFolder, out: Path) -> list:
    r = st.finding
    blocks: list = [f"{r.get('finding')} ({r.get('source')}): \"{r.get('claim')}\". Metric: {r.get('metric')} "
                    f"({'higher' if r.get('higher_is_better') else 'lower'} is better). Scale: {r.get('scale')}, "
                    f"{r.get('steps')} steps per pretraining arm, seeds {r.get('seeds')}; "
                    f"{fmt(r.get('cpu_s'))} CPU seconds in the arms."]
    if r.get("scale_note"):
        blocks.append(f"What this scale can show: {r['scale_note']}.")
    if r.get("deviations"):
        blocks.append(f"Deviations from the report: {r['deviations']}.")
    for a in r.get("amendments") or []:
        blocks.append(f"Plan amended after results were recorded ({', '.join(a.get('changed', []))}): "
                      f"{a.get('reason')}.")
    if (st.dir / "finding.png").is_file():     # drawn by lmforge findings; the report keeps its own copy
        copy = out / f"finding_{slug(st.name)}.png"
        shutil.copyfile(st.dir / "finding.png", copy)
        blocks.append(copy)
    key = r.get("key")
    arms = r.get("arms", {})
    firsts = [key, *[k for k in dict.fromkeys((r.get("keys") or {}).values()) if k != key]]
    second = sorted({k for a in arms.values() for k in a if k not in (*firsts, "wall_s", "cpu_s")})
    t = Table(f"{r.get('finding')}: arms (mean ± std over seeds)", ["arm", *firsts, *second, "n"])
    for arm, stats in arms.items():
        cells = [_mean_std(stats.get(k)) for k in (*firsts, *second)]
        t.rows.append([arm + (" (baseline)" if arm == r.get("baseline") else ""), *cells,
                       (stats.get(key) or {}).get("n")])
    blocks.append(t)
    return blocks


def _mean_std(s: dict | None) -> str:
    if not s or s.get("mean") is None:
        return "-"
    return fmt(s["mean"]) if s.get("std") is None else f"{fmt(s['mean'])} ± {fmt(s['std'], 2)}"


def findings_section(stages: list[StageFolder], out: Path) -> Section | None:
    findings = [s for s in stages if isinstance(s.finding, dict) and s.finding.get("comparisons") is not None]
    if not findings:
        return None
    sec = Section("findings", "Findings of the reports, rerun", VERDICT_RULE)
    t = Table("Report claim -> measured here -> verdict",
              ["finding", "comparison", "expected", "difference ± 2 se", "verdict", "seeds", "claim"])
    t.rows = summary_rows(findings)
    sec.blocks.append(t)
    for st in findings:
        sec.blocks.extend(finding_blocks(st, out))
    return sec
