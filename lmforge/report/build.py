"""Assemble the report: sections of text, plots and tables -> report.html + report.md."""
from __future__ import annotations

import html
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.io.atomic import copy_file, write_text
from lmforge.report import plots
from lmforge.report.collect import Stage, discover
from lmforge.report.tables import Table, eval_table_list, to_html, to_markdown


@dataclass
class Section:
    id: str
    title: str
    intro: str = ""
    blocks: list = field(default_factory=list)   # str (paragraph), Path (image), Table


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", s).strip("_") or "x"


def _last(records: list[dict], key: str):
    for r in reversed(records):
        v = r.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            return v
    return None


def overview(stages: list[Stage]) -> Table:
    t = Table("Stages", ["stage", "kind", "status", "steps", "final loss", "final val loss", "tokens seen", "folder"])
    for st in stages:
        recs = st.train_records
        t.rows.append([st.name, st.kind or "-", st.status or "-", _last(recs, "step"), _last(recs, "loss"),
                       _last(st.metrics, "val/mean"), _last(recs, "tokens_seen"), str(st.dir)])
    return t


def training_section(stages: list[Stage], out: Path) -> Section | None:
    train = [s for s in stages if s.train_records]
    if not train:
        return None
    sec = Section("training", "Training",
                  "Training loss (thin: every step; thick: smoothed), learning rate, gradient norm before "
                  "clipping and throughput, against the step counted over all training stages in order; "
                  "dashed lines mark where a stage starts.")
    for key, title, ylabel, log, smooth in (
            ("loss", "Training loss", "nats / token", False, True),
            ("lr", "Learning rate", "lr", False, False),
            ("grad_norm", "Gradient norm (before clipping)", "L2 norm", True, True),
            ("tokens_per_s", "Throughput", "tokens / s", False, True)):
        p = plots.curve(train, key, out / f"train_{key}.png", title, ylabel, log, smooth)
        if p:
            sec.blocks.append(p)
    v = plots.val_curves(train, out / "val_loss.png")
    if v:
        sec.blocks.append("Per-domain validation loss on held-out documents (Skywork monitors these to catch "
                          "a domain that stops improving or a leak: a sudden drop on one domain).")
        sec.blocks.append(v)
    t = Table("Per stage", ["stage", "steps", "first loss", "final loss", "final lr", "median tokens/s",
                            "skipped (non-finite) steps"])
    for st in train:
        recs = st.train_records
        tps = sorted(r["tokens_per_s"] for r in recs if isinstance(r.get("tokens_per_s"), (int, float)))
        t.rows.append([st.name, _last(recs, "step"), recs[0].get("loss"), _last(recs, "loss"), _last(recs, "lr"),
                       tps[len(tps) // 2] if tps else None, sum(1 for r in recs if r.get("skipped"))])
    sec.blocks.append(t)
    return sec


def data_section(stages: list[Stage], out: Path) -> Section | None:
    data = [s for s in stages if s.data_steps]
    if not data:
        return None
    sec = Section("data", "Data funnel",
                  "What each cleaning step kept and removed, by reason, in documents and in UTF-8 bytes "
                  "(each step reads what the previous one kept; in = kept + removed).")
    for st in data:
        p = plots.funnel(st, out / f"funnel_{_slug(st.name)}.png")
        if p:
            sec.blocks.append(p)
        t = Table(f"{st.name}: per step", ["step", "docs in", "docs kept", "kept %", "bytes in", "bytes kept",
                                            "removed (docs) by reason"])
        for s in st.data_steps:
            din, dk = s["in"]["docs"], s["kept"]["docs"]
            rem = ", ".join(f"{k} {v['docs']}" for k, v in s.get("removed", {}).items()) or "-"
            t.rows.append([s.get("step", s["dir"]), din, dk, f"{100 * dk / din:.1f}%" if din else "-",
                           s["in"]["bytes"], s["kept"]["bytes"], rem])
        sec.blocks.append(t)
    return sec


def mixture_section(stages: list[Stage], out: Path) -> Section | None:
    mixed = [s for s in stages if s.mixture]
    if not mixed:
        return None
    sec = Section("mixture", "Data mixture", "Share of each domain among the tokens actually trained on, "
                                             "per mixture stage (mixture.json).")
    for st in mixed:
        p = plots.mixture(st, out / f"mixture_{_slug(st.name)}.png")
        if p:
            sec.blocks.append(p)
        domains = sorted({d for r in st.mixture for d in r.get("tokens", {})})
        t = Table(f"{st.name}: tokens by domain", ["mixture stage", *domains])
        for r in st.mixture:
            t.rows.append([r.get("stage"), *[r.get("tokens", {}).get(d, 0) for d in domains]])
        sec.blocks.append(t)
    return sec


def eval_section(stages: list[Stage], out: Path) -> Section | None:
    ev = [s for s in stages if s.eval or s.needle or s.needle_png]
    if not ev:
        return None
    sec = Section("eval", "Evaluation", "Held-out perplexity and bits per byte by domain, multiple choice "
                                        "accuracy, contamination checks and long-context retrieval.")
    for st in ev:
        if st.eval:
            sec.blocks.append(f"{st.name}: checkpoint {st.eval.get('checkpoint', '?')} "
                              f"(step {st.eval.get('step', '?')}).")
            sec.blocks.extend(eval_table_list(st.eval))
        if st.needle_png:
            dst = out / f"needle_{_slug(st.name)}.png"
            copy_file(st.needle_png, dst)
            sec.blocks.append(f"{st.name}: needle in a haystack: retrieval accuracy by context length (x) "
                              f"and needle depth (y).")
            sec.blocks.append(dst)
        if st.needle:
            flat = {k: v for k, v in st.needle.items() if isinstance(v, (int, float, str, bool))}
            if flat:
                sec.blocks.append(Table(f"{st.name}: needle summary", ["key", "value"], [[k, v] for k, v in flat.items()]))
    return sec


def grow_section(stages: list[Stage], out: Path) -> Section | None:
    grown = [s for s in stages if s.grow]
    if not grown:
        return None
    sec = Section("grow", "Depth up-scaling", "Cosine similarity between each layer's input and output; "
                                              "the layers closest to 1 change the least and are duplicated.")
    for st in grown:
        p = plots.similarity(st, out / f"grow_{_slug(st.name)}.png")
        if p:
            sec.blocks.append(p)
        raw = st.grow.get("raw") if isinstance(st.grow.get("raw"), dict) else {}
        flat = {k: v for k, v in raw.items() if isinstance(v, (int, float, str, bool))
                or (isinstance(v, list) and len(v) <= 64 and "sim" not in k
                    and not any(isinstance(x, dict) for x in v))}
        if flat:
            sec.blocks.append(Table(f"{st.name}: {st.grow['file']}", ["key", "value"],
                                    [[k, json.dumps(v) if isinstance(v, list) else v] for k, v in flat.items()]))
    return sec


# ------------------------------------------------------------------ rendering

CSS = """body{font-family:DejaVu Sans,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222}h1{border-bottom:2px solid #444}h2{margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:0.8em 0;font-size:0.9em}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right}th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
img{max-width:100%;display:block;margin:0.8em 0}.note{color:#666;font-size:0.85em}nav a{margin-right:1em}
.problems{color:#a33}"""


def render_html(title: str, sections: list[Section], out: Path, problems: list[str]) -> str:
    nav = " ".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in sections)
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>",
             f"<p class='note'>generated {time.strftime('%Y-%m-%d %H:%M')} by lmforge report</p><nav>{nav}</nav>"]
    for s in sections:
        parts.append(f'<section id="{s.id}"><h2>{html.escape(s.title)}</h2>')
        if s.intro:
            parts.append(f"<p>{html.escape(s.intro)}</p>")
        for b in s.blocks:
            if isinstance(b, Path):
                rel = b.relative_to(out).as_posix()
                parts.append(f'<img src="{html.escape(rel)}" alt="{html.escape(b.stem)}">')
            elif isinstance(b, Table):
                parts.append(f"<h3>{html.escape(b.title)}</h3>{to_html(b)}")
            else:
                parts.append(f"<p>{html.escape(str(b))}</p>")
        parts.append("</section>")
    if problems:
        items = "".join(f"<li>{html.escape(p)}</li>" for p in problems)
        parts.append(f'<section id="problems"><h2>Problems</h2><ul class="problems">{items}</ul></section>')
    # lets a headless browser check (scripts/check_report.sh) that it decoded every image
    parts.append("<script>window.addEventListener('load',function(){var i=document.images,n=0;"
                 "for(var k=0;k<i.length;k++){if(i[k].complete&&i[k].naturalWidth>0)n++;}"
                 "document.body.setAttribute('data-images-ok',n+'/'+i.length);});</script>")
    parts.append("</body></html>")
    return "\n".join(parts)


def render_md(title: str, sections: list[Section], out: Path, problems: list[str]) -> str:
    lines = [f"# {title}", ""]
    for s in sections:
        lines += [f"## {s.title}", ""] + ([s.intro, ""] if s.intro else [])
        for b in s.blocks:
            if isinstance(b, Path):
                lines += [f"![{b.stem}]({b.relative_to(out).as_posix()})", ""]
            elif isinstance(b, Table):
                lines += [f"### {b.title}", "", to_markdown(b), ""]
            else:
                lines += [str(b), ""]
    if problems:
        lines += ["## Problems", ""] + [f"- {p}" for p in problems] + [""]
    return "\n".join(lines)


def build_report(run_dir: str | Path, out: str | Path) -> dict:
    run_dir, out = Path(run_dir), Path(out)
    name, stages, problems = discover(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):  # plots of a previous report that may no longer apply
        old.unlink()
    problems += [p for st in stages for p in st.problems]
    ov = Section("overview", "Overview", f"Run folder {run_dir}. Stages in pipeline order; a stage without "
                                         f"output is listed as missing and left out below.", [overview(stages)])
    sections = [ov] + [s for s in (training_section(stages, out), data_section(stages, out),
                                   mixture_section(stages, out), eval_section(stages, out),
                                   grow_section(stages, out)) if s]
    title = f"lmforge run report: {name}"
    write_text(out / "report.html", render_html(title, sections, out, problems))
    write_text(out / "report.md", render_md(title, sections, out, problems))
    images = sorted(p.name for s in sections for p in s.blocks if isinstance(p, Path))
    return {"html": str(out / "report.html"), "markdown": str(out / "report.md"),
            "sections": [s.id for s in sections], "images": images, "stages": [s.name for s in stages],
            "problems": problems}
