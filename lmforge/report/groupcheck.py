"""Per-group threshold sanity check for the Data funnel (issue 35): each language/domain
group's share of the input beside the share of its documents that survived, flagged when a
group loses more than half of them.

A filter or classifier tuned on one kind of text silently removes another: the recipes' data
stage kept 1.7% of modern Chinese prose while keeping half of English prose, and no figure
showed it. The steps that report groups (stats.json `by_group`, else `by_lang` / `by_domain`:
quality, topics) give in/kept documents per group; the first of them is the input side, the
last the output, so the survival rate also counts what the steps between them removed."""
from __future__ import annotations

from lmforge.report.collect import StageFolder
from lmforge.report.tables import Table
from lmforge.report.units import Share

AXES = ("by_group", "by_lang", "by_domain")
MAX_LOSS = 0.5   # a group that keeps less than half of its documents is flagged


def _axis(steps: list[dict]) -> str | None:
    return next((a for a in AXES if any(isinstance(s.get(a), dict) and s[a] for s in steps)), None)


def group_rows(steps: list[dict], axis: str) -> list[dict]:
    """One dict per group: docs in (first reporting step), share of the input, kept through
    the reporting steps, each step's own kept share, and whether it is flagged."""
    reporting = [s for s in steps if isinstance(s.get(axis), dict) and s[axis]]
    first, last = reporting[0][axis], reporting[-1][axis]
    total = sum(v["in"]["docs"] for v in first.values()) or 1
    rows = []
    for g in sorted(first, key=lambda g: -first[g]["in"]["docs"]):
        n = first[g]["in"]["docs"]
        kept = (last.get(g) or {}).get("kept", {}).get("docs", 0)
        per_step = [(s.get("step", "?"), (s[axis].get(g) or {})) for s in reporting]
        step_shares = {name: c["kept"]["docs"] / c["in"]["docs"] for name, c in per_step
                       if c.get("in", {}).get("docs")}
        survived = kept / n if n else None
        rows.append({"group": g, "in": n, "share": n / total, "survived": survived,
                     "steps": step_shares,
                     "flag": survived is not None and survived < MAX_LOSS})
    return rows


def group_check_table(st: StageFolder) -> Table | None:
    axis = _axis(st.data_steps)
    if axis is None:
        return None
    rows = group_rows(st.data_steps, axis)
    names = list(dict.fromkeys(n for r in rows for n in r["steps"]))
    t = Table(f"{st.name}: kept rate per {axis[3:]} beside its share of the input",
              [axis[3:], "share of input", "docs in", "kept (all steps)", *[f"{n} kept" for n in names], "check"],
              note=f"share of input and docs in: at the first step that reports {axis[3:]}s; kept (all steps): "
                   "documents of the group left after the last such step / docs in (the steps between them "
                   f"count too). A group that keeps less than {MAX_LOSS:.0%} is flagged: a threshold tuned on "
                   "other text may be removing it.")
    for r in rows:
        lost = 1 - r["survived"] if r["survived"] is not None else None
        t.rows.append([r["group"], Share(r["share"]), r["in"],
                       Share(r["survived"]) if r["survived"] is not None else None,
                       *[Share(r["steps"][n]) if n in r["steps"] else None for n in names],
                       f"LOSES {lost:.0%} OF ITS DOCUMENTS" if r["flag"] else "ok"])
    return t
