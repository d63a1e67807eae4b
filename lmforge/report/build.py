"""Assemble the report: sections of text, plots and tables -> report.html + report.md."""
from __future__ import annotations

import base64
import html
import re
import time
from pathlib import Path

from lmforge.io.atomic import write_text
from lmforge.report import fonts, plots
from lmforge.report.collect import StageFolder, discover, recipe_meta
from lmforge.report.datasections import data_section, mixture_section
from lmforge.report.effects import effects_section
from lmforge.report.findingsection import findings_section
from lmforge.report.evalsection import eval_section, final_eval_column, grow_section
from lmforge.report.needleplot import checkpoint_label
from lmforge.report.reference import by_stage, find_reference, load_reference
from lmforge.report.section import Section, last as _last, slug as _slug
from lmforge.report.tables import Table, to_html, to_markdown
from lmforge.report.trainplots import stage_objective
from lmforge.report.summary import Bullets, headlines
from lmforge.report.training import training_section, val_baselines
from lmforge.report.units import Bytes, Count, Share, human_bytes

__all__ = ["Section", "build_report", "overview"]


def overview(stages: list[StageFolder]) -> Table:
    t = Table("Stages", ["stage", "kind", "reads", "status", "seconds", "steps", "final loss", "final val loss",
                         "tokens seen", "folder"],
              note="final loss: the stage's own objective (LM loss in nats/token; DPO's preference loss and "
                   "C-RLFT's weighted loss are marked); final val loss: mean held-out LM loss over domains. "
                   "'-': the stage does not train.")
    for st in stages:
        recs = st.train_records
        reads = ", ".join(st.deps) if st.kind != "report" else "all"
        loss = _last(recs, "loss")
        obj = stage_objective(st) if recs else "lm"
        if loss is not None and obj != "lm":
            loss = f"{loss:.4g} ({'DPO' if obj == 'dpo' else 'weighted'})"
        seen = _last(recs, "tokens_seen")
        t.rows.append([st.name, st.kind or "-", reads or "-", st.status or "-", st.seconds, _last(recs, "step"),
                       loss, _last(st.metrics, "val/mean"), Count(int(seen)) if seen is not None else None,
                       str(st.dir)])
    return t


def smoke_note(meta: dict) -> str:
    f = meta.get("smoke") or {}
    return ("SMOKE RUN: every stage of the recipe ran shrunk by common factors (lengths x{length:.4g}, steps "
            "x{steps:.4g}, depth x{depth:.3g}, width {width}, vocabulary {vocab}, SFT/DPO at most {max_steps_cap} "
            "steps) to prove the pipeline end to end; its losses and scores say nothing about the model the "
            "recipe trains.").format(**{"length": 1, "steps": 1, "depth": 1, "width": "-", "vocab": "-",
                                         "max_steps_cap": "-", **f})


def _removed(step: dict) -> str:
    return ", ".join(f"{k} {v['docs']}" for k, v in step.get("removed", {}).items()) or "-"


def _added(step: dict) -> str:
    parts = [f"{k} {v['docs']}" if v.get("docs") else f"{k} (+{human_bytes(v.get('bytes', 0))})"
             for k, v in step.get("added", {}).items()]
    return ", ".join(parts) or "-"


def _distribution_plots(st: StageFolder, steps: list[dict], out: Path) -> list:
    """Before/after plots of what the balancing steps balance: tasks, clusters, system prompts."""
    blocks = []
    by_name = {s.get("step"): s for s in steps}
    wanted = (("task_mix", "task_before", "task_after", "Conversations per task (task weights / caps)"),
              ("source_mix", "source_before", "source_after", "Conversations per source (source weights / caps)"),
              ("diversity", "cluster_sizes_before", "cluster_sizes_after",
               "Conversations per prompt cluster (diversity sampling)"),
              ("system_assign", "system_before", "system_after", "System prompts (designed ones assigned)"),
              ("system_balance", "system_before", "system_after", "System prompts (no one dominates)"))
    for name, b, a, title in wanted:
        d = by_name.get(name, {}).get("details", {})
        if isinstance(d.get(b), dict) and d[b]:
            p = plots.before_after(d[b], d.get(a) or {}, out / f"sft_{_slug(st.name)}_{name}.png", title)
            if p:
                blocks.append(p)
        if name == "diversity" and isinstance(d.get("cluster_terms"), dict):
            blocks.append(_cluster_table(st.name, d, b, a))
    return blocks


def _cluster_table(name: str, d: dict, b: str, a: str) -> Table:
    """Each prompt cluster named two ways: its members' top TF-IDF terms and its most central
    prompt (in the space the clustering used: TF-IDF or sentence embeddings)."""
    terms, central = d["cluster_terms"], d.get("cluster_central") or {}
    before, after = d.get(b) or {}, d.get(a) or {}
    return Table(f"{name}: prompt clusters ({d.get('backend', 'tfidf')})",
                 ["cluster", "before", "after", "top terms", "most central prompt"],
                 [[c, before.get(c), after.get(c), " ".join(terms.get(c, [])), central.get(c)]
                  for c in (before or terms)],
                 why={"most central prompt": "this sftdata.json predates the column, or the prompts had no terms"})


def sftdata_section(stages: list[StageFolder], out: Path) -> Section | None:
    cur = [s for s in stages if isinstance(s.sftdata, dict) and isinstance(s.sftdata.get("steps"), list)]
    if not cur:
        return None
    sec = Section("sftdata", "SFT data funnel",
                  "What each SFT curation step kept, added and removed, by reason (each step reads what the "
                  "previous one kept; in + added = kept + removed): prompt dedup, scoring by a reward model or "
                  "the model as judge, source/task weights, diversity sampling over prompt clusters (Index) "
                  "and system-prompt balance (Yi).")
    for st in cur:
        steps = [s for s in st.sftdata["steps"] if isinstance(s, dict) and "in" in s and "kept" in s]
        p = plots.sft_funnel(steps, out / f"sft_funnel_{_slug(st.name)}.png", f"SFT data funnel ({st.name})")
        if p:
            sec.blocks.append(p)
        t = Table(f"{st.name}: per step", ["step", "conversations in", "added", "kept", "kept %", "bytes in",
                                            "bytes kept", "removed by reason"])
        for s in steps:
            din, dk = s["in"]["docs"], s["kept"]["docs"]
            t.rows.append([s.get("step"), din, _added(s), dk, Share(dk / din) if din else None,
                           Bytes(s["in"]["bytes"]), Bytes(s["kept"]["bytes"]), _removed(s)])
        sec.blocks.append(t)
        score = next((s for s in steps if s.get("step") == "score"), None)
        if score and score.get("details", {}).get("score_quantiles"):
            q = score["details"]["score_quantiles"]
            scorer = re.sub(r"[\w./-]*/checkpoints/step-\d+", lambda m: checkpoint_label(m.group(0)),
                            str(score["details"].get("scorer", "?")))
            sec.blocks.append(Table(f"{st.name}: scores ({scorer})",
                                    ["quantile", *q.keys()], [["score", *q.values()]]))
        sec.blocks.extend(_distribution_plots(st, steps, out))
        final = st.sftdata.get("final", {})
        if isinstance(final.get("task"), dict):
            sec.blocks.append(Table(f"{st.name}: curated set by task", ["task", "conversations"],
                                    [[k, v] for k, v in final["task"].items()]))
    return sec


def sftgrid_section(stages: list[StageFolder], out: Path) -> Section | None:
    grids = [s for s in stages if isinstance(s.sftgrid, dict) and isinstance(s.sftgrid.get("points"), list)]
    if not grids:
        return None
    sec = Section("sftgrid", "SFT task-mix grid search",
                  "One short SFT per task mix from the same checkpoint, each scored on held-out conversations "
                  "of every task (reply loss, nats per reply token; MCQ accuracy where given); the best mix is "
                  "chosen by the stated rule (Yi chose its SFT task-mix ratios by grid search).")
    for st in grids:
        g = st.sftgrid
        tasks = g.get("tasks", [])
        mcq_tasks = sorted({t for p in g["points"] for t in (p.get("mcq") or {})})
        sec.blocks.append(f"{st.name}: rule {g.get('rule')}: {g.get('rule_text', '')}. Chosen: point "
                          f"{g.get('best')} ({g.get('best_label')}), {g.get('size')} conversations per point, "
                          f"{g.get('heldout_per_task')} held out per task.")
        p = plots.grid_heatmap(g, out / f"sftgrid_{_slug(st.name)}.png")
        if p:
            sec.blocks.append(p)
        t = Table(f"{st.name}: grid", ["point", "mix", *[f"loss {x}" for x in tasks],
                                        *[f"acc_norm {x}" for x in mcq_tasks], "rule score", "chosen"])
        for i, pt in enumerate(g["points"]):
            t.rows.append([i, pt.get("label"), *[pt["heldout"].get(x, {}).get("loss") for x in tasks],
                           *[(pt.get("mcq") or {}).get(x, {}).get("acc_norm") for x in mcq_tasks],
                           (pt.get("score") or [None])[0], i == g.get("best")])
        sec.blocks.append(t)
    return sec


def longstudy_section(stages: list[StageFolder], out: Path) -> Section | None:
    from lmforge.report.longstudy import study_blocks

    studies = [s for s in stages if s.longstudy]
    if not studies:
        return None
    sec = Section("longstudy", "Long-context study",
                  "Index-1.9B-32K's comparison: validation perplexity by context length for each checkpoint and "
                  "RoPE setting (trained, naive extrapolation, Dynamic NTK, other bases), needle retrieval by "
                  "length and depth side by side, and what the long stages cost at short context (the seesaw).")
    for st in studies:
        sec.blocks.append(f"{st.name}: baseline {st.longstudy.get('baseline')}.")
        sec.blocks.extend(study_blocks(st.longstudy, out, _slug(st.name)))
    return sec


def refusals_section(stages: list[StageFolder], out: Path) -> Section | None:
    from lmforge.report.refusals import refusal_blocks

    found = [s for s in stages if s.refusals]
    if not found:
        return None
    sec = Section("refusals", "Model-written refusals",
                  "Index-1.9B builds its safety pairs from refusals the SFT model writes itself (prompted to "
                  "refuse), because human-written refusals have a much higher perplexity under the SFT model. "
                  "Perplexity of the refusal replies under the SFT model, per kind.")
    for st in found:
        sec.blocks.extend(refusal_blocks(st.refusals, out, _slug(st.name)))
    return sec


# ------------------------------------------------------------------ rendering

# the embedded CJK subset (fonts.CSS_FAMILY) comes first: its @font-face's unicode-range limits
# it to CJK characters, so Latin text keeps the families after it
CSS = """body{font-family:"CJK_FAMILY","DejaVu Sans",Helvetica,Arial,"Noto Sans CJK SC",sans-serif;max-width:1240px;margin:2em auto;padding:0 1em;
color:#222}h1{border-bottom:2px solid #444}h2{margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:0.8em 0;font-size:0.9em}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right}td{white-space:nowrap}td:last-child{white-space:normal}th{background:#f0f0f0}
td:first-child,th:first-child,td.t,th.t{text-align:left}
img{max-width:100%;display:block;margin:0.8em 0}.note{color:#666;font-size:0.85em}nav a{margin-right:1em}
.problems{color:#a33}.headlines li{margin:0.3em 0}.tw{overflow-x:auto}""".replace("CJK_FAMILY", fonts.CSS_FAMILY)


def data_uri(path: Path) -> str:
    """The PNG itself inside the page (base64), so report.html alone keeps every plot."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def render_html(title: str, sections: list[Section], out: Path, problems: list[str]) -> str:
    nav = " ".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in sections)
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p class='note'>generated {time.strftime('%Y-%m-%d %H:%M')} by lmforge report</p><nav>{nav}</nav>"]
    for s in sections:
        parts.append(f'<section id="{s.id}"><h2>{html.escape(s.title)}</h2>')
        if s.intro:
            parts.append(f"<p>{html.escape(s.intro)}</p>")
        for b in s.blocks:
            if isinstance(b, Path):
                parts.append(f'<img src="{data_uri(b)}" alt="{html.escape(b.stem)}">')
            elif isinstance(b, Table):
                parts.append(f"<h3>{html.escape(b.title)}</h3><div class='tw'>{to_html(b)}</div>")
            elif isinstance(b, Bullets):
                items = "".join(f"<li>{html.escape(x)}</li>" for x in b)
                parts.append(f"<ul class='headlines'>{items}</ul>")
            else:
                parts.append(f"<p>{html.escape(str(b))}</p>")
        parts.append("</section>")
    if problems:
        items = "".join(f"<li>{html.escape(p)}</li>" for p in problems)
        parts.append(f'<section id="problems"><h2>Problems</h2><ul class="problems">{items}</ul></section>')
    # lets a headless browser check (scripts/check_report.sh) that it decoded every image, that
    # no figure is shrunk so far that its text is unreadable, that neither the page nor a table
    # is wider than the window, and that the embedded CJK font loaded
    parts.append("<script>window.addEventListener('load',function(){var i=document.images,n=0,s=1;"
                 "for(var k=0;k<i.length;k++){if(i[k].complete&&i[k].naturalWidth>0){n++;"
                 "s=Math.min(s,i[k].width/i[k].naturalWidth);}}"
                 "var b=document.body;b.setAttribute('data-images-ok',n+'/'+i.length);"
                 "b.setAttribute('data-min-image-scale',s.toFixed(2));"
                 "b.setAttribute('data-overflow',document.documentElement.scrollWidth>window.innerWidth+1?'yes':'no');"
                 "var w=document.querySelectorAll('.tw'),o=0;for(var k=0;k<w.length;k++){"
                 "if(w[k].scrollWidth>w[k].clientWidth+1)o++;}b.setAttribute('data-tables-overflow',o);"
                 "var f=[];document.fonts.forEach(function(x){if(x.family.replace(/[\"']/g,'')=="
                 f"'{fonts.CSS_FAMILY}')f.push(x.status);}});b.setAttribute('data-cjk-font',f.join(',')||'none');"
                 "});</script>")
    body = "\n".join(parts)
    head = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}{fonts.font_face_css(title + body)}</style></head><body>")
    return head + body + "\n</body></html>"


def render_md(title: str, sections: list[Section], out: Path, problems: list[str]) -> str:
    lines = [f"# {title}", ""]
    for s in sections:
        lines += [f"## {s.title}", ""] + ([s.intro, ""] if s.intro else [])
        for b in s.blocks:
            if isinstance(b, Path):
                lines += [f"![{b.stem}]({b.relative_to(out).as_posix()})", ""]
            elif isinstance(b, Table):
                lines += [f"### {b.title}", "", to_markdown(b), ""]
            elif isinstance(b, Bullets):
                lines += [f"- {x}" for x in b] + [""]
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
    if fonts.missing_note():
        problems.append(fonts.missing_note())
    meta = recipe_meta(run_dir)
    blocks: list = [smoke_note(meta)] if meta.get("smoke") else []
    base = val_baselines(stages)
    blocks.append(headlines(stages, problems, base))
    graph = plots.recipe_graph(stages, out / "recipe_graph.png")
    blocks += ([graph] if graph else []) + [overview(stages)]
    ov = Section("overview", "Overview", f"Run folder {run_dir}. Headlines first, each number beside what it "
                                         f"is read against; then the stages in recipe order (a stage without "
                                         f"output is listed as missing and left out below).", blocks)
    ref_path = find_reference(meta)
    ref = load_reference(ref_path)
    reference = (ref_path.name, by_stage(ref, stages, run_dir)) if ref else None
    sections = [ov] + [s for s in (effects_section(stages), findings_section(stages, out),
                                   training_section(stages, out, final_eval_column(stages), base, reference),
                                   data_section(stages, out),
                                   mixture_section(stages, out), sftdata_section(stages, out),
                                   sftgrid_section(stages, out), eval_section(stages, out),
                                   longstudy_section(stages, out), refusals_section(stages, out),
                                   grow_section(stages, out)) if s]
    title = f"lmforge run report: {name}" + (" (SMOKE RUN)" if meta.get("smoke") else "")
    write_text(out / "report.html", render_html(title, sections, out, problems))
    write_text(out / "report.md", render_md(title, sections, out, problems))
    images = sorted(p.name for s in sections for p in s.blocks if isinstance(p, Path))
    return {"html": str(out / "report.html"), "markdown": str(out / "report.md"),
            "sections": [s.id for s in sections], "images": images, "stages": [s.name for s in stages],
            "problems": problems}
