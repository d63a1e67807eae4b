"""The report's Evaluation section (perplexity against untrained / unigram baselines, MCQ
against chance, contamination, the needle heatmap) and Depth up-scaling section."""
from __future__ import annotations

import json
from pathlib import Path

from lmforge.io.atomic import copy_file
from lmforge.report import needleplot, plots
from lmforge.report.baselines import token_baselines
from lmforge.report.collect import StageFolder
from lmforge.report.section import Section, slug
from lmforge.report.tables import Table, eval_table_list


def eval_baselines(result: dict) -> dict | None:
    """Unigram / uniform scores on the documents this eval.json's perplexity scored."""
    ppl = result.get("perplexity") or {}
    cfg = ((result.get("config") or {}).get("perplexity") or {})
    data = ppl.get("data") or cfg.get("data")
    if not data:
        return None
    split = ppl.get("split") or cfg.get("split") or "val"
    return token_baselines(data, split, int(cfg.get("max_docs_per_domain") or 0))


def final_eval_column(stages: list[StageFolder]) -> tuple[str, dict] | None:
    """('eval (<checkpoint>)', {domain: loss}) of the last eval stage, for the progress table."""
    for st in reversed(stages):
        ppl = (st.eval or {}).get("perplexity") or {}
        doms = {("mean" if d == "all" else d): r.get("loss") for d, r in (ppl.get("domains") or {}).items()}
        if doms:
            doms.pop("mean", None)   # the eval's "all" is token-weighted, the trainer's mean is per domain
            return f"{st.name}: {needleplot.checkpoint_label(st.eval.get('checkpoint', '?'))}", doms
    return None


def _needle_summary(st: StageFolder) -> Table:
    s = st.needle.get("summary") or {}
    c = needleplot.chance(st.needle)
    g = needleplot.guess_logprob(st.needle)
    rows = [["cells", s.get("cells"), "-"], ["exact greedy retrieval", s.get("exact"), 0.0],
            ["value ranked first", s.get("rank_acc"), c], ["mean log p(value), nats", s.get("mean_logprob"), g],
            ["haystack tokens", st.needle.get("haystack_tokens"), "-"]]
    return Table(f"{st.name}: needle summary ({needleplot.checkpoint_label(st.needle.get('checkpoint', '?'))})",
                 ["measure", "value", "chance / guessing"], rows)


def eval_section(stages: list[StageFolder], out: Path) -> Section | None:
    ev = [s for s in stages if s.eval or s.needle or (s.needle_png and not s.longstudy)]
    if not ev:
        return None
    sec = Section("eval", "Evaluation",
                  "Held-out perplexity and bits per byte by domain beside an untrained and a unigram model, "
                  "multiple-choice accuracy beside chance, contamination checks and long-context retrieval.")
    for st in ev:
        if st.eval:
            sec.blocks.append(f"{st.name}: checkpoint {needleplot.checkpoint_label(st.eval.get('checkpoint', '?'))}.")
            data = ((st.eval.get("perplexity") or {}).get("data")
                    or ((st.eval.get("config") or {}).get("perplexity") or {}).get("data"))
            sec.blocks.extend(eval_table_list(st.eval, eval_baselines(st.eval),
                                              f"the eval's token data ({data}) was not found" if data else
                                              "eval.json does not name its token data"))
        if st.needle:
            p = needleplot.plot(st.needle, st.name, out / f"needle_{slug(st.name)}.png")
            if p:
                sec.blocks.append(needleplot.caption(st.name, st.needle))
                sec.blocks.append(p)
            sec.blocks.append(_needle_summary(st))
        elif st.needle_png and not st.longstudy:     # an older needle stage: only its picture
            dst = out / f"needle_{slug(st.name)}.png"
            copy_file(st.needle_png, dst)
            sec.blocks.append(f"{st.name}: needle in a haystack (picture of the needle stage; no needle.json).")
            sec.blocks.append(dst)
    return sec


def grow_section(stages: list[StageFolder], out: Path) -> Section | None:
    grown = [s for s in stages if s.grow]
    if not grown:
        return None
    sec = Section("grow", "Depth up-scaling",
                  "Cosine similarity between each layer's input and output: the layers closest to 1 change the "
                  "hidden state least, and the block of consecutive layers with the highest mean is duplicated "
                  "(Yi-9B). The axis is zoomed to the values; the chosen block is marked.")
    for st in grown:
        p = plots.similarity(st, out / f"grow_{slug(st.name)}.png")
        if p:
            sec.blocks.append(p)
        raw = st.grow.get("raw") if isinstance(st.grow.get("raw"), dict) else {}
        flat = {k: v for k, v in raw.items() if isinstance(v, (int, float, str, bool))
                or (isinstance(v, list) and len(v) <= 64 and not any(isinstance(x, dict) for x in v))}
        if flat:
            sec.blocks.append(Table(f"{st.name}: {st.grow['file']}", ["key", "value"],
                                    [[k, v if not isinstance(v, dict) else json.dumps(v)] for k, v in flat.items()]))
    return sec
