"""The report's Data funnel (what each cleaning step kept, by reason and by domain) and Data
mixture (target vs realised shares, with the spread sampling alone would give)."""
from __future__ import annotations

from pathlib import Path

from lmforge.report import groupcheck, mixstats, plots
from lmforge.report.collect import StageFolder
from lmforge.report.section import Section, slug
from lmforge.report.tables import Table
from lmforge.report.units import Bytes, Count, Share, human_bytes

GROUP_AXES = (("by_domain", "domain"), ("by_lang", "language"), ("by_group", "group"))


def keep_rate_table(st: StageFolder) -> Table | None:
    """Kept share per domain, language and language/domain group of the steps that report them
    (stats.json by_domain / by_lang / by_group: quality, topics), one row per group."""
    steps = [s for s in st.data_steps if any(isinstance(s.get(a), dict) and s[a] for a, _ in GROUP_AXES)]
    if not steps:
        return None
    names = [str(s.get("step", s["dir"])) for s in steps]
    t = Table(f"{st.name}: documents kept per domain, language and group", ["group", *[f"{n} kept" for n in names],
                                                                            *[f"{n} in" for n in names]],
              note="kept = kept / in documents of that group in the step (quality: a classifier per language/"
                   "domain group; topics: down-sampled clusters); '-' = the step does not report that group. A "
                   "group kept far less than the others is worth a look at the step's thresholds.")
    for axis, label in GROUP_AXES:
        groups = sorted({g for s in steps for g in (s.get(axis) or {})})
        for g in groups:
            cells = [(s.get(axis) or {}).get(g) or {} for s in steps]
            t.rows.append([f"{label}: {g}",
                           *[Share(c["kept"]["docs"] / c["in"]["docs"]) if c.get("in", {}).get("docs") else None
                             for c in cells], *[c.get("in", {}).get("docs") for c in cells]])
    return t


def data_section(stages: list[StageFolder], out: Path) -> Section | None:
    data = [s for s in stages if s.data_steps]
    if not data:
        return None
    sec = Section("data", "Data funnel",
                  "What each cleaning step kept and removed, by reason, in documents and in UTF-8 bytes (each step "
                  "reads what the previous one kept; in = kept + removed). Removal reasons are listed under the "
                  "step that removes them, each in its own colour.")
    for st in data:
        p = plots.funnel(st, out / f"funnel_{slug(st.name)}.png")
        if p:
            sec.blocks.append(p)
        t = Table(f"{st.name}: per step", ["step", "docs in", "docs kept", "kept %", "bytes in", "bytes kept",
                                            "removed (docs) by reason"])
        for s in st.data_steps:
            din, dk = s["in"]["docs"], s["kept"]["docs"]
            rem = ", ".join(f"{k} {v['docs']:,}" + ("" if v.get("docs") else f" ({human_bytes(v['bytes'])})")
                            for k, v in s.get("removed", {}).items() if v.get("docs") or v.get("bytes")) or "-"
            t.rows.append([s.get("step", s["dir"]), din, dk, Share(dk / din) if din else None,
                           Bytes(s["in"]["bytes"]), Bytes(s["kept"]["bytes"]), rem])
        t.note = ("A reason that removed nothing is left out of the last column ('-': the step removed nothing); "
                  "a reason that removed no document but bytes (markup stripped) shows the bytes.")
        sec.blocks.append(t)
        p = plots.keep_rates(st.data_steps, out / f"keep_{slug(st.name)}.png", "by_domain")
        if p:
            sec.blocks.append(p)
        kt = keep_rate_table(st)
        if kt:
            sec.blocks.append(kt)
        sec.blocks += [t for t in [groupcheck.group_check_table(st)] if t]   # issue 35: per-group loss flag
    return sec


def mixture_table(title: str, comps: list[tuple[str, dict]]) -> Table:
    t = Table(title, ["stage", "domain", "target", "realised", "expected sd", "tokens", "reading"],
              note="expected sd: the spread of the realised share from sampling documents alone (delta method "
                   "over document lengths of the token data; the binomial sd when all documents are equally "
                   "long). Within 2 sd is noise; beyond 3 sd the sampler or the data deserve a look. A stage "
                   "without a configured mixture draws documents in shuffled passes (target '-').",
              why={"target": "no mixture is configured: documents are drawn in shuffled passes, so the shares "
                             "are the data's own",
                   "expected sd": "the stages' token data (config.json `data`) was not found, or no target is set",
                   "reading": "no target to compare with"})
    if comps and all(c["sft"] for _, c in comps):
        t.why["expected sd"] = "SFT's pretraining share is not sampled: the loader holds it (see 'reading')"
    for label, c in comps:
        for r in c["rows"]:
            t.rows.append([label, r["domain"], Share(r["target"]) if r["target"] is not None else None,
                           Share(r["realised"]), Share(r["sd"]) if r["sd"] is not None else None,
                           Count(r["tokens"]), r["verdict"]])
    return t


def mixture_section(stages: list[StageFolder], out: Path) -> Section | None:
    mixed = [s for s in stages if s.mixture]
    if not mixed:
        return None
    sec = Section("mixture", "Data mixture",
                  "Target share of each domain (from the stage's config) beside the share of the tokens actually "
                  "trained on (mixture.json), per training stage and mixture stage; the whisker is the target "
                  "+-2 sd that sampling documents alone gives, so a gap reads as noise (inside) or as a problem "
                  "(outside). Small runs draw few, long documents: their shares swing widely.")
    pre, sft = [], []
    for st in mixed:
        for c in mixstats.compare(st.dir, st.mixture):
            label = st.name if c["stage"] in (st.name, "main", "all") else f"{st.name}/{c['stage']}"
            (sft if c["sft"] else pre).append((label, c))
    for comps, name, title in ((pre, "mixture_pretraining.png", "Pretraining data mixture by domain"),
                               (sft, "mixture_sft.png", "SFT: replies vs pretraining text mixed in")):
        if not comps:
            continue
        p = plots.mixture(comps, out / name, f"{title}: target (grey) vs realised (colour)")
        if p:
            sec.blocks.append(p)
        sec.blocks.append(mixture_table(title, comps))
    return sec
