"""The long-context study (lmforge longstudy, Index-1.9B-32K) as plots and tables: perplexity
by context length per setting, a RoPE-base x length heatmap, needle heatmaps side by side,
the long/short seesaw, the retrieval tasks and LongBench. Used by the stage (its own
longstudy.md / PNGs) and by the run report (from longstudy.json)."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lmforge.io.atomic import save_figure  # noqa: E402
from lmforge.report import fonts  # noqa: E402
from lmforge.report.tables import Table, to_markdown  # noqa: E402

MAX_WIDTH_IN = 12.4        # the report page's width at 100 dpi (lmforge.report.plots.MAX_WIDTH_IN)
fonts.use_in_matplotlib()


def _label(s: dict) -> str:
    extra = f" x{s['factor']:g}" if s.get("factor") else ""
    return f"{s['name']} ({s['rope']}{extra}, base {s['rope_theta']:g})"


def _ppl(study: dict, name: str, L, key: str = "ppl"):
    r = (study["ppl"]["results"].get(name) or {}).get(str(L))
    return r.get(key) if r else None


def _save(fig, path: Path, layout: bool = True) -> Path:
    if layout:
        fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)
    return path


def plot_ppl_vs_length(study: dict, path: Path) -> Path | None:
    lengths = study["ppl"]["lengths"]
    if not study["ppl"]["results"] or not lengths:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), sharex=True)
    for ax, key, title in ((axes[0], "ppl", "all positions"), (axes[1], "tail_ppl", "last quarter of positions")):
        for s in study["settings"]:
            pts = [(L, _ppl(study, s["name"], L, key)) for L in lengths]
            pts = [(L, v) for L, v in pts if v is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=_label(s))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _p: f"{v:g}"))
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _p: f"{v:g}"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(lambda v, _p: f"{v:g}"))
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel("perplexity")
        ax.set_title(f"Validation perplexity by length: {title}", fontsize=9)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    return _save(fig, path)


def plot_rope_heatmap(study: dict, path: Path) -> Path | None:
    lengths, settings = study["ppl"]["lengths"], sorted(study["settings"], key=lambda s: s["rope_theta"])
    if not study["ppl"]["results"]:
        return None
    data = np.array([[np.nan if _ppl(study, s["name"], L) is None else math.log(_ppl(study, s["name"], L))
                      for L in lengths] for s in settings], dtype=float)
    fig, ax = plt.subplots(figsize=(min(MAX_WIDTH_IN, 3.5 + 1.0 * len(lengths)), 1.3 + 0.5 * len(settings)))
    im = ax.imshow(data, cmap="viridis_r", aspect="auto")
    ax.set_xticks(range(len(lengths)), [str(L) for L in lengths])
    ax.set_yticks(range(len(settings)), [_label(s) for s in settings], fontsize=8)
    ax.set_xlabel("context length (tokens)")
    lo, hi = np.nanmin(data), np.nanmax(data)
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            dark = not np.isnan(data[i, j]) and (data[i, j] - lo) > 0.5 * (hi - lo)   # viridis_r: high is dark
            ax.text(j, i, "n/a" if np.isnan(data[i, j]) else f"{math.exp(data[i, j]):.1f}", ha="center",
                    va="center", fontsize=9, color="w" if dark else "k")
    fig.colorbar(im, ax=ax, fraction=0.046, label="log perplexity")
    ax.set_title("Perplexity: RoPE base / extension (rows) x context length", fontsize=9)
    return _save(fig, path)


def plot_needles(study: dict, path: Path) -> Path | None:
    """One heatmap per setting, wrapped into rows so the figure fits the page at its own size
    (seven side by side were shrunk to 4-px text); one shared colour bar."""
    res = study["needle"]["results"]
    names = [s["name"] for s in study["settings"] if s["name"] in res]
    if not names:
        return None
    lengths, depths = study["needle"]["lengths"], study["needle"]["depths"]
    panel_w = 1.0 + 0.5 * len(depths)
    ncol = max(1, min(len(names), int((MAX_WIDTH_IN - 1.2) // panel_w)))
    nrow = -(-len(names) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(min(MAX_WIDTH_IN, 1.2 + panel_w * ncol),
                                                  0.9 + (1.2 + 0.4 * len(lengths)) * nrow), squeeze=False)
    im = None
    for k, name in enumerate(names):
        ax = axes[k // ncol][k % ncol]
        g = res[name]["grid"]
        data = np.array([[np.nan if v is None else v for v in row] for row in g["rank_acc"]], dtype=float)
        im = ax.imshow(data, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto", origin="lower")
        ax.set_xticks(range(len(depths)), [f"{d:g}%" for d in depths], fontsize=8)
        ax.set_yticks(range(len(lengths)), [str(L) for L in lengths], fontsize=8)
        ax.set_title(name, fontsize=9)
        if k // ncol == nrow - 1 or k + ncol >= len(names):
            ax.set_xlabel("needle depth", fontsize=8)
        if k % ncol == 0:
            ax.set_ylabel("prompt length (tokens)", fontsize=8)
        for i in range(data.shape[0]):
            for j in range(data.shape[1]):
                ax.text(j, i, "-" if np.isnan(data[i, j]) else f"{data[i, j]:.0%}", ha="center", va="center",
                        fontsize=8)
    for k in range(len(names), nrow * ncol):
        axes[k // ncol][k % ncol].axis("off")
    fig.suptitle("Needle retrieval: share of cells whose value is ranked first among the distractors\n"
                 "columns: needle depth (% of the prompt), rows: prompt length; '-' = beyond the setting's window",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.9, 1))
    cax = fig.add_axes((0.91, 0.15, 0.015, 0.65))
    fig.colorbar(im, cax=cax).set_label("ranked first", fontsize=8)
    return _save(fig, path, layout=False)


def seesaw_harm(metric: str, change: float) -> float:
    """A % change signed so that positive is worse: perplexity up, accuracy down."""
    return change if metric.startswith("ppl/") else -change


def plot_seesaw(study: dict, path: Path) -> Path | None:
    """The long/short seesaw as a heatmap (settings x short-context measures): each cell the %
    change against the baseline, coloured red where the measure got worse (perplexity up,
    accuracy down) and green where it got better, one scale for every measure."""
    saw = study["short"]["seesaw"]
    metrics = sorted({m for r in saw.values() for m in r})
    names = [n for n in saw if n != study["baseline"]]
    if not metrics or not names:
        return None
    change = np.array([[saw[n].get(m, np.nan) for m in metrics] for n in names], dtype=float)
    harm = np.array([[seesaw_harm(m, v) for m, v in zip(metrics, row)] for row in change])
    top = float(np.nanmax(np.abs(harm))) if np.isfinite(harm).any() else 1.0
    fig, ax = plt.subplots(figsize=(min(MAX_WIDTH_IN, 3.2 + 0.85 * len(metrics)), 1.9 + 0.38 * len(names)))
    im = ax.imshow(harm, cmap="RdYlGn_r", vmin=-(top or 1.0), vmax=top or 1.0, aspect="auto")
    for i in range(change.shape[0]):
        for j in range(change.shape[1]):
            ax.text(j, i, "-" if np.isnan(change[i, j]) else f"{change[i, j]:+.1f}%", ha="center", va="center",
                    fontsize=8)
    ax.set_xticks(range(len(metrics)), metrics, rotation=30, ha="right", fontsize=9)
    ax.set_yticks(range(len(names)), names, fontsize=9)
    ax.set_title(f"Short-context seesaw at {study['short']['seq_len']} tokens: % change vs {study['baseline']}\n"
                 f"(red: worse, i.e. perplexity up or accuracy down; green: better)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02).set_label("% worse (+) / better (-)", fontsize=8)
    return _save(fig, path)


def write_plots(study: dict, out: Path) -> list[Path]:
    out = Path(out)
    made = [plot_ppl_vs_length(study, out / "ppl_vs_length.png"), plot_rope_heatmap(study, out / "rope_heatmap.png"),
            plot_needles(study, out / "needle.png"), plot_seesaw(study, out / "seesaw.png")]
    return [p for p in made if p is not None]


def study_tables(study: dict) -> list[Table]:
    out = []
    s_info = Table("Settings", ["setting", "checkpoint", "rope", "factor", "RoPE base", "trained base",
                                "max_seq_len", "window"],
                   [[s["name"], s["checkpoint"], s["rope"], s.get("factor"), s["rope_theta"],
                     s.get("trained_rope_theta"), s["max_seq_len"],
                     s["window"] if s["rope"] == "model" else "none (extrapolates)"] for s in study["settings"]],
                   note="window: the longest prompt a setting is scored at; a trained RoPE is scored up to its "
                        "max_seq_len, the training-free extensions at every length")
    out.append(s_info)
    lengths = study["ppl"]["lengths"]
    if study["ppl"]["results"]:
        src = study["ppl"]["sources"]
        note = "; ".join(f"{L}: {v['sequences']} {v['source']} ({v['long_docs']} documents long enough)"
                         for L, v in src.items())
        for key, title in (("ppl", "Perplexity by context length"), ("tail_ppl", "Perplexity of the last quarter")):
            out.append(Table(title, ["setting", *map(str, lengths)],
                             [[s["name"], *[_ppl(study, s["name"], L, key) for L in lengths]]
                              for s in study["settings"]], note=f"sequences per length: {note}; '-' = beyond "
                                                                f"the setting's trained length (use rope: naive)"))
    short = study["short"]["results"]
    if short:
        out.append(seesaw_table(study))
    res = study["needle"]["results"]
    if res:
        out.append(Table("Needle in a haystack", ["setting", "cells", "exact", "rank accuracy", "skipped cells"],
                         [[n, r["summary"]["cells"], r["summary"]["exact"], r["summary"]["rank_acc"],
                           r.get("skipped_cells", 0)] for n, r in res.items()]))
    tasks = study.get("tasks") or {}
    if tasks:
        rows = []
        for n, r in tasks.items():
            for task, by_len in r.items():
                for L, v in by_len.items():
                    rows.append([n, task, int(L), v["n"], v["exact"], v["recall"], v["rank_acc"]])
        out.append(Table("Retrieval tasks", ["setting", "task", "length", "queries", "exact", "recall",
                                             "rank accuracy"], rows))
    lb = study.get("longbench") or {}
    if lb:
        rows = [[n, ds, v["metric"], v["n"], v["score"], v["max_length"]]
                for n, r in lb.items() for ds, v in r.items() if isinstance(v, dict) and "score" in v]
        out.append(Table("LongBench", ["setting", "dataset", "metric", "items", "score", "prompt tokens"], rows))
    return out


def seesaw_table(study: dict) -> Table:
    """Short-context measures (rows) by setting (columns), each cell the value and its % change
    against the baseline: a column per setting keeps the table as wide as the settings are
    many (a column per measure and another per change overflowed the page)."""
    short, saw = study["short"]["results"], study["short"]["seesaw"]
    metrics = sorted({f"ppl/{d}" for r in short.values() for d in (r.get("ppl") or {})} |
                     {f"mcq/{m}" for r in short.values() for m in (r.get("mcq") or {})})

    def cell(name: str, m: str):
        kind, k = m.split("/", 1)
        v = (short[name].get(kind) or {}).get(k)
        if v is None:
            return None
        pct = (saw.get(name) or {}).get(m)
        return f"{v:.4g}" + (f" ({pct:+.1f}%)" if pct is not None and name != study["baseline"] else "")
    return Table(f"Short context ({study['short']['seq_len']} tokens): the seesaw", ["measure", *short],
                 [[m, *[cell(n, m) for n in short]] for m in metrics],
                 note=f"each cell: the value (% change against {study['baseline']}); ppl: perplexity, lower is "
                      f"better; mcq: accuracy, higher is better (Index-32K: short-text ability fell ~25%)")


def study_markdown(study: dict, images: list[Path]) -> str:
    lines = ["# Long-context study", ""]
    for t in study_tables(study):
        lines += [f"## {t.title}", "", to_markdown(t), ""]
    lines += [f"![{p.stem}]({p.name})" for p in images]
    return "\n".join(lines) + "\n"


def study_blocks(study: dict, out: Path, prefix: str) -> list:
    """Report blocks (paragraphs, images, tables) for a longstudy.json, plots drawn into `out`."""
    blocks: list = []
    for name, fn in (("ppl_vs_length", plot_ppl_vs_length), ("rope_heatmap", plot_rope_heatmap),
                     ("needle", plot_needles), ("seesaw", plot_seesaw)):
        p = fn(study, out / f"{prefix}_{name}.png")
        if p:
            blocks.append(p)
    return blocks + study_tables(study)
