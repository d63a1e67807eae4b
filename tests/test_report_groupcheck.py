"""The data report's per-group sanity check (issue 35): kept rate per language/domain group
beside its share of the input, a group that loses more than half its documents flagged."""
from __future__ import annotations

from pathlib import Path

from lmforge.report.collect import StageFolder
from lmforge.report.datasections import data_section
from lmforge.report.groupcheck import group_check_table, group_rows
from lmforge.report.tables import fmt


def counts(**groups):
    return {g: {"in": {"docs": a, "bytes": a * 100}, "kept": {"docs": b, "bytes": b * 100}}
            for g, (a, b) in groups.items()}


def steps():
    """The issue's figures: quality kept zh 8 of 484, English prose 454 of 846, code 192 of 253;
    then minhash (no groups) and topics (removes nothing)."""
    q = counts(**{"zh/prose": (484, 8), "en/prose": (846, 454), "en/code": (253, 192)})
    t = counts(**{"zh/prose": (8, 8), "en/prose": (430, 430), "en/code": (190, 190)})
    mk = lambda name, by, i, k: {"dir": name, "step": name, "in": {"docs": i, "bytes": i}, "kept": {"docs": k, "bytes": k},
                                 "removed": {}, **({"by_group": by} if by else {})}
    return [mk("filters", None, 2000, 1583), mk("quality", q, 1583, 654), mk("minhash", None, 654, 628),
            mk("topics", t, 628, 628)]


def test_group_rows_share_survival_and_flag():
    rows = {r["group"]: r for r in group_rows(steps(), "by_group")}
    assert abs(rows["zh/prose"]["share"] - 484 / 1583) < 1e-9
    assert abs(rows["zh/prose"]["survived"] - 8 / 484) < 1e-9 and rows["zh/prose"]["flag"]
    assert abs(rows["en/prose"]["survived"] - 430 / 846) < 1e-9 and not rows["en/prose"]["flag"]
    assert abs(rows["en/code"]["survived"] - 190 / 253) < 1e-9 and not rows["en/code"]["flag"]
    assert rows["en/code"]["steps"] == {"quality": 192 / 253, "topics": 1.0}


def test_table_in_the_data_section(tmp_path):
    st = StageFolder("data", Path("data"), "data", "done", data_steps=steps())
    t = group_check_table(st)
    cells = {r[0]: [fmt(c) for c in r] for r in t.rows}
    assert cells["zh/prose"][-1].startswith("LOSES 98%") and cells["en/prose"][-1] == "ok"
    assert t.headers[:4] == ["group", "share of input", "docs in", "kept (all steps)"]
    sec = data_section([st], tmp_path)
    assert any(getattr(b, "title", "") == t.title for b in sec.blocks)
    plain = StageFolder("data", Path("data"), "data", "done", data_steps=steps()[:1])
    assert group_check_table(plain) is None              # no step reports groups: no table
