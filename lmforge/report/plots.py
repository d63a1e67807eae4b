"""PNG plots of a run (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lmforge.report.collect import Stage  # noqa: E402
from lmforge.io.atomic import save_figure  # noqa: E402

DPI = 100


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    save_figure(fig, path, dpi=DPI)
    plt.close(fig)
    return path


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def stage_offsets(stages: list[Stage]) -> dict[str, int]:
    """Global step where each training stage starts: where the training stage it reads ended
    (two branches from one checkpoint start at the same step); without a recipe graph, the
    stages run one after another."""
    ends: dict[str, int] = {}
    out: dict[str, int] = {}
    last_end = 0
    graph = any(st.deps for st in stages)
    for st in stages:
        if st.metrics:
            if graph:
                start = max((ends[d] for d in st.deps if d in ends), default=0)
            else:
                start = last_end
            out[st.name] = start
            ends[st.name] = start + int(max(r["step"] for r in st.metrics))
            last_end = ends[st.name]
        elif st.deps and graph:        # a stage without training (grow) passes its source's end on
            prior = [ends[d] for d in st.deps if d in ends]
            if prior:
                ends[st.name] = max(prior)
    return out


def ema(values: list[float], alpha: float = 0.1) -> list[float]:
    out, m = [], None
    for v in values:
        m = v if m is None else alpha * v + (1 - alpha) * m
        out.append(m)
    return out


def _boundaries(ax, stages, offsets):
    for st in stages:
        if st.name in offsets and offsets[st.name] > 0:
            ax.axvline(offsets[st.name], color="grey", lw=0.8, ls="--")


def curve(stages: list[Stage], key: str, path: Path, title: str, ylabel: str, log: bool = False,
          smooth: bool = False) -> Path | None:
    """One metric against the global step, a colour per stage, dashed lines at stage starts."""
    offsets = stage_offsets(stages)
    fig, ax = plt.subplots(figsize=(8, 3.6))
    drawn = False
    for st in stages:
        pts = [(r["step"] + offsets[st.name], r[key]) for r in st.train_records if _finite(r.get(key))]
        if not pts:
            continue
        xs, ys = zip(*pts)
        line, = ax.plot(xs, ys, lw=1, alpha=0.45 if smooth and len(ys) > 10 else 1, label=st.name)
        if smooth and len(ys) > 10:
            ax.plot(xs, ema(list(ys)), lw=1.8, color=line.get_color())
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    _boundaries(ax, stages, offsets)
    if log:
        ax.set_yscale("log")
    ax.set(title=title, xlabel="step (all stages)", ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def val_curves(stages: list[Stage], path: Path) -> Path | None:
    """Per-domain validation loss (val/<domain>) against the global step."""
    offsets = stage_offsets(stages)
    series: dict[str, list] = {}
    for st in stages:
        for r in st.metrics:
            for k, v in r.items():
                if k.startswith("val/") and k not in ("val/ppl",) and _finite(v):
                    series.setdefault(k[4:], []).append((r["step"] + offsets[st.name], v))
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for dom, pts in sorted(series.items()):
        pts.sort()
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="o", ms=3, lw=2.2 if dom == "mean" else 1.2,
                ls="--" if dom == "mean" else "-", label=dom)
    _boundaries(ax, stages, offsets)
    ax.set(title="Validation loss by domain", xlabel="step (all stages)", ylabel="nats / token")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    return _save(fig, path)


def funnel(st: Stage, path: Path) -> Path | None:
    """Documents and bytes per data step: kept and removed by reason (stacked bars)."""
    steps = st.data_steps
    if not steps:
        return None
    reasons = sorted({k for s in steps for k in s.get("removed", {})})
    tab = plt.get_cmap("tab20").colors
    palette = [c for i, c in enumerate(tab) if i not in (4, 5)]  # greens are for "kept"
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.55 * len(steps) + 2.2))
    labels = [s.get("step", s["dir"]) for s in steps]
    for ax, unit in zip(axes, ("docs", "bytes")):
        left = [s["kept"][unit] for s in steps]
        ax.barh(labels, left, color="#4c9a5b", label="kept")
        for i, reason in enumerate(reasons):
            vals = [s.get("removed", {}).get(reason, {}).get(unit, 0) for s in steps]
            ax.barh(labels, vals, left=left, color=palette[i % len(palette)], label=reason)
            left = [a + b for a, b in zip(left, vals)]
        ax.invert_yaxis()
        ax.set(title=f"{unit}: kept and removed per step", xlabel=unit)
        ax.grid(axis="x", alpha=0.3)
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return _save(fig, path)


def mixture(st: Stage, path: Path) -> Path | None:
    """Realised domain shares per mixture stage (mixture.json)."""
    rows = [r for r in (st.mixture or []) if isinstance(r, dict) and r.get("share")]
    if not rows:
        return None
    domains = sorted({d for r in rows for d in r["share"]})
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(rows) + 1.8))
    labels = [str(r.get("stage", i)) for i, r in enumerate(rows)]
    left = [0.0] * len(rows)
    cmap = plt.get_cmap("tab10")
    for i, d in enumerate(domains):
        vals = [r["share"].get(d, 0.0) for r in rows]
        ax.barh(labels, vals, left=left, color=cmap(i % 10), label=d)
        for y, (l0, v) in enumerate(zip(left, vals)):
            if v > 0.06:
                ax.text(l0 + v / 2, y, f"{v:.0%}", ha="center", va="center", fontsize=8, color="white")
        left = [a + b for a, b in zip(left, vals)]
    ax.invert_yaxis()
    ax.set(title=f"Realised data mixture ({st.name})", xlabel="share of trained tokens", xlim=(0, 1))
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return _save(fig, path)


def similarity(st: Stage, path: Path) -> Path | None:
    sim = (st.grow or {}).get("similarity")
    if not sim:
        return None
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.bar(range(len(sim)), sim, color="#5470c6")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set(title="Layer input/output cosine similarity (depth up-scaling picks the most similar layers)",
           xlabel="layer", ylabel="cosine similarity", ylim=(min(0.0, min(sim)), 1.0))
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def recipe_graph(stages: list[Stage], path: Path) -> Path | None:
    """The recipe as a graph: a column per depth (longest chain of inputs), an arrow per input."""
    if not any(st.deps for st in stages):
        return None
    depth: dict[str, int] = {}
    for st in stages:
        depth[st.name] = 1 + max((depth[d] for d in st.deps if d in depth), default=-1)
    cols: dict[int, list[str]] = {}
    for st in stages:
        cols.setdefault(depth[st.name], []).append(st.name)
    pos = {n: (d, -i) for d, names in cols.items() for i, n in enumerate(names)}
    height = max(len(v) for v in cols.values())
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(cols)), max(2.5, 0.7 * height + 1)))
    colours = {"done": "#cfe8cf", "failed": "#f3c4c4", "running": "#fde6b0", "this report": "#dde6f5"}
    for st in stages:
        x1, y1 = pos[st.name]
        for d in st.deps:
            if d in pos and d != st.name and not (st.kind == "report"):
                x0, y0 = pos[d]
                ax.annotate("", xy=(x1 - 0.32, y1), xytext=(x0 + 0.32, y0),
                            arrowprops=dict(arrowstyle="->", color="#777", lw=0.8))
    for st in stages:
        x, y = pos[st.name]
        ax.text(x, y, st.name, ha="center", va="center", fontsize=8,
                bbox=dict(boxstyle="round,pad=0.3", fc=colours.get(st.status, "#eeeeee"), ec="#555"))
    ax.set_xlim(-0.6, max(cols) + 0.6)
    ax.set_ylim(-height + 0.4, 0.6)
    ax.axis("off")
    ax.set_title("Recipe graph (arrows: which stage's output a stage reads; colour: status)", fontsize=9)
    return _save(fig, path)


# ------------------------------------------------------------------ SFT data curation and task-mix grid


def _short(label: str, n: int = 38) -> str:
    label = " ".join(str(label).split())
    return label if len(label) <= n else label[:n - 1] + "…"


def sft_funnel(steps: list[dict], path: Path, title: str) -> Path | None:
    """Conversations per curation step: kept, added (hatched) and removed by reason, stacked."""
    if not steps:
        return None
    reasons = sorted({k for s in steps for k in s.get("removed", {})})
    tab = plt.get_cmap("tab20").colors
    palette = [c for i, c in enumerate(tab) if i not in (4, 5)]
    labels = [str(s.get("step", i)) for i, s in enumerate(steps)]
    fig, ax = plt.subplots(figsize=(10, 0.5 * len(steps) + 2.0))
    added = [sum(v.get("docs", 0) for v in s.get("added", {}).values()) for s in steps]
    kept = [s["kept"]["docs"] - a for s, a in zip(steps, added)]
    ax.barh(labels, kept, color="#4c9a5b", label="kept")
    ax.barh(labels, added, left=kept, color="#9fd3a8", hatch="//", label="kept (added by the step)")
    left = [k + a for k, a in zip(kept, added)]
    for i, reason in enumerate(reasons):
        vals = [s.get("removed", {}).get(reason, {}).get("docs", 0) for s in steps]
        ax.barh(labels, vals, left=left, color=palette[i % len(palette)], label=reason)
        left = [a + b for a, b in zip(left, vals)]
    ax.invert_yaxis()
    ax.set(title=title, xlabel="conversations")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return _save(fig, path)


def before_after(before: dict, after: dict, path: Path, title: str, xlabel: str = "conversations",
                 top: int = 24) -> Path | None:
    """Paired horizontal bars of one distribution before and after a step (largest `top` groups;
    a group may exist only after, e.g. an assigned system prompt)."""
    if not before and not after:
        return None
    allk = set(before) | set(after)
    keys = sorted(allk, key=lambda k: (-max(before.get(k, 0), after.get(k, 0)), str(k)))[:top]
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(keys) + 1.8))
    y = list(range(len(keys)))
    ax.barh([v - 0.2 for v in y], [before.get(k, 0) for k in keys], height=0.4, color="#9aa5b1", label="before")
    ax.barh([v + 0.2 for v in y], [after.get(k, 0) for k in keys], height=0.4, color="#5470c6", label="after")
    ax.set_yticks(y, [_short(k) for k in keys], fontsize=8)
    ax.invert_yaxis()
    more = f" (largest {top} of {len(allk)})" if len(allk) > top else ""
    ax.set(title=title + more, xlabel=xlabel)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def grid_heatmap(grid: dict, path: Path) -> Path | None:
    """Task-mix grid: held-out reply loss per point and task (lower is better; the chosen point
    boxed), and, for a two-axis weight grid, the rule's score over the two axes."""
    import numpy as np

    points, tasks = grid.get("points") or [], grid.get("tasks") or []
    if not points or not tasks:
        return None
    loss = np.array([[p["heldout"].get(t, {}).get("loss", np.nan) for t in tasks] for p in points], float)
    mean = np.nanmean(loss, axis=1, keepdims=True)
    cols = [*tasks, "mean"]
    mat = np.hstack([loss, mean])
    axes2 = grid.get("axes") or {}
    two = len(axes2) == 2
    fig, axs = plt.subplots(1, 2 if two else 1, figsize=(12 if two else 7.5, 0.45 * len(points) + 2.2),
                            squeeze=False)
    ax = axs[0][0]
    # colour per column (tasks differ in scale): each column scaled to its own range
    lo, hi = np.nanmin(mat, axis=0), np.nanmax(mat, axis=0)
    scaled = (mat - lo) / np.where(hi > lo, hi - lo, 1.0)
    ax.imshow(scaled, cmap="viridis_r", aspect="auto", vmin=0, vmax=1)
    for i in range(mat.shape[0]):
        for j in range(mat.shape[1]):
            ax.text(j, i, f"{mat[i, j]:.3f}", ha="center", va="center", fontsize=8,
                    color="white" if scaled[i, j] > 0.5 else "black")
    best = int(grid.get("best", -1))
    if 0 <= best < len(points):
        ax.add_patch(plt.Rectangle((-0.5, best - 0.5), len(cols), 1, fill=False, ec="red", lw=2))
    ax.set_xticks(range(len(cols)), cols, fontsize=8)
    ax.set_yticks(range(len(points)), [_short(p.get("label", i), 44) for i, p in enumerate(points)], fontsize=8)
    ax.set(title=f"Held-out reply loss (nats/token) per task; rule {grid.get('rule')}, chosen boxed")
    if two:
        (ta, va), (tb, vb), score = _axes_score(grid, points, tasks)
        ax2 = axs[0][1]
        im = ax2.imshow(score, cmap="viridis_r", aspect="auto", origin="lower")
        for i in range(score.shape[0]):
            for j in range(score.shape[1]):
                if np.isfinite(score[i, j]):
                    ax2.text(j, i, f"{score[i, j]:.3f}", ha="center", va="center", fontsize=8, color="white")
        ax2.set_xticks(range(len(va)), [str(v) for v in va])
        ax2.set_yticks(range(len(vb)), [str(v) for v in vb])
        ax2.set(xlabel=f"weight of {ta}", ylabel=f"weight of {tb}",
                title=f"rule score ({grid.get('rule')}; lower is better)")
        fig.colorbar(im, ax=ax2, fraction=0.046)
    return _save(fig, path)


def _axes_score(grid: dict, points: list[dict], tasks: list[str]):
    """((task a, its weights), (task b, its weights), score[b, a]) for a grid whose weights vary
    on two tasks (the others fixed): each cell is the point with that cell's shares."""
    import numpy as np

    (ta, va), (tb, vb) = sorted(grid["axes"].items())
    weights = (grid.get("config") or {}).get("weights") or {}
    fixed = {t: float((weights.get(t) or [1.0])[0]) for t in tasks}
    score = np.full((len(vb), len(va)), np.nan)
    for i, b in enumerate(vb):
        for j, a in enumerate(va):
            w = {**fixed, ta: float(a), tb: float(b)}
            total = sum(w.values())
            if total <= 0:
                continue
            for p in points:
                if all(abs(p["shares"].get(t, 0.0) - w[t] / total) < 1e-9 for t in tasks):
                    score[i, j] = (p.get("score") or [np.nan])[0]
    return (ta, va), (tb, vb), score
