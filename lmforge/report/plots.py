"""PNG plots of a run (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lmforge.io.atomic import save_figure  # noqa: E402
from lmforge.report import fonts, palette, units  # noqa: E402
from lmforge.report.collect import StageFolder  # noqa: E402

DPI = 100
# the page is at most 1240 px wide (build.CSS): a figure up to this wide is shown at its own
# size, so its 8-pt text stays 11 px tall; wider ones are shrunk and their text with them
MAX_WIDTH_IN = 12.4
fonts.use_in_matplotlib()      # Chinese labels (cluster terms, system prompts) drawn, not boxes


def save(fig, path: Path, rect=None) -> Path:
    fig.tight_layout(rect=rect)
    save_figure(fig, path, dpi=DPI)
    plt.close(fig)
    return path


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def stage_offsets(stages: list[StageFolder]) -> dict[str, int]:
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


def smooth(xs, ys, frac: float = 0.1) -> list[float]:
    """Local linear smoothing: each point is replaced by the value at its x of a straight line
    fitted (least squares) to the 2h+1 points around it, h = frac/2 of the series (at least 2);
    at the ends the window stays whole and shifts inwards. A constant series stays constant and
    a straight line stays itself, so the smoothed line starts and ends where the data does
    (an EMA started at the first value lags a trend and, from a first value of 0, draws an
    accuracy of 0.75 as 0.4 for many steps). Clipped to the raw range."""
    import numpy as np

    y = np.asarray(ys, dtype=float)
    n = len(y)
    h = max(2, round(frac * n / 2))
    if n < 2 * h + 1:
        return [float(v) for v in y]
    x = np.asarray(xs, dtype=float)
    x = (x - x[0]) / ((x[-1] - x[0]) or 1.0)      # [0, 1]: the sums below stay well conditioned
    c = [np.concatenate([[0.0], np.cumsum(v)]) for v in (np.ones(n), x, y, x * x, x * y)]
    lo = np.clip(np.arange(n) - h, 0, n - (2 * h + 1))
    hi = lo + 2 * h + 1
    s0, sx, sy, sxx, sxy = (v[hi] - v[lo] for v in c)
    den = s0 * sxx - sx * sx
    slope = np.where(den > 1e-12, (s0 * sxy - sx * sy) / np.where(den > 1e-12, den, 1.0), 0.0)
    out = (sy - slope * sx) / s0 + slope * x
    return np.clip(out, y.min(), y.max()).tolist()


def legend_outside(ax, **kw) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0,
                  frameon=False, **kw)


def reason_order(steps: list[dict]) -> list[tuple[str, str]]:
    """(step, reason) for every removal reason, grouped by the step that removes it (its
    family), in step order; a reason two steps share is listed under the first."""
    seen, out = set(), []
    for s in steps:
        for reason in s.get("removed", {}):
            if reason not in seen:
                seen.add(reason)
                out.append((str(s.get("step", s.get("dir", "?"))), reason))
    return out


def funnel(st: StageFolder, path: Path) -> Path | None:
    """Documents and bytes per data step: kept and removed by reason (stacked bars); a distinct
    colour per reason (lmforge.report.palette), the legend grouped by the step that removes it."""
    steps = st.data_steps
    if not steps:
        return None
    order = reason_order(steps)
    colours = palette.colours_for([r for _, r in order])
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.42 * len(steps) + 1.8))
    labels = [s.get("step", s["dir"]) for s in steps]
    for ax, unit in zip(axes, ("docs", "bytes")):
        left = [s["kept"][unit] for s in steps]
        ax.barh(labels, left, color=palette.KEPT, label="kept")
        for step_name, reason in order:
            vals = [s.get("removed", {}).get(reason, {}).get(unit, 0) for s in steps]
            ax.barh(labels, vals, left=left, color=colours[reason], label=f"{step_name}: {reason}")
            left = [a + b for a, b in zip(left, vals)]
        ax.invert_yaxis()
        ax.xaxis.set_major_formatter(units.bytes_formatter() if unit == "bytes" else units.count_formatter())
        ax.set(title=f"{'documents' if unit == 'docs' else 'UTF-8 bytes'}: kept and removed per step",
               xlabel="documents" if unit == "docs" else "bytes")
        ax.grid(axis="x", alpha=0.3)
    legend_outside(axes[1], ncol=1 if len(order) <= 16 else 2)
    return save(fig, path)


def keep_rates(steps: list[dict], path: Path, axis: str = "by_domain") -> Path | None:
    """Share of documents each step kept, per domain (or language / group): rows = groups,
    columns = the steps that report them (quality, topics), a cell = kept / in."""
    import numpy as np

    cols = [s for s in steps if isinstance(s.get(axis), dict) and s[axis]]
    if not cols:
        return None
    groups = sorted({g for s in cols for g in s[axis]})
    data = np.full((len(groups), len(cols)), np.nan)
    for j, s in enumerate(cols):
        for i, g in enumerate(groups):
            r = s[axis].get(g)
            if isinstance(r, dict) and r.get("in", {}).get("docs"):
                data[i, j] = r["kept"]["docs"] / r["in"]["docs"]
    fig, ax = plt.subplots(figsize=(min(MAX_WIDTH_IN, 2.4 + 1.5 * len(cols)), 0.45 * len(groups) + 1.5))
    ax.imshow(data, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    for i in range(len(groups)):
        for j in range(len(cols)):
            r = cols[j][axis].get(groups[i]) or {}
            txt = "-" if np.isnan(data[i, j]) else f"{data[i, j]:.0%}\n({r['kept']['docs']}/{r['in']['docs']})"
            ax.text(j, i, txt, ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(cols)), [str(s.get("step", s.get("dir"))) for s in cols])
    ax.set_yticks(range(len(groups)), groups)
    ax.set_title(f"Documents kept per {axis[3:]} (kept / in)", fontsize=10)
    return save(fig, path)


def mixture(comparison: list[tuple[str, dict]], path: Path, title: str) -> Path | None:
    """Target vs realised token share per domain, one panel per (stage label, mixture stage
    comparison of lmforge.report.mixstats): grey bar the target with its expected sampling
    range (+-2 sd whisker), coloured bar the realised share."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    rows = [(label, c) for label, c in comparison if c["rows"]]
    if not rows:
        return None
    domains = sorted({r["domain"] for _, c in rows for r in c["rows"]})
    colours = palette.colours_for(domains)
    ncol = min(len(rows), 3)
    nrow = (len(rows) + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.0 * ncol + 2.4, (0.45 * len(domains) + 1.4) * nrow + 0.6),
                             squeeze=False, sharey=True)
    y = list(range(len(domains)))
    for k, (label, c) in enumerate(rows):
        ax = axes[k // ncol][k % ncol]
        by = {r["domain"]: r for r in c["rows"]}
        for v, d in zip(y, domains):
            r = by.get(d, {})
            t = r.get("target")
            if t is not None:
                ax.barh(v - 0.2, t, height=0.38, color="#c8c8c8")
                if r.get("sd"):
                    lo, hi = max(0.0, t - 2 * r["sd"]), min(1.0, t + 2 * r["sd"])
                    ax.errorbar(t, v - 0.2, xerr=[[t - lo], [hi - t]], color="#444", lw=1, capsize=3)
            real = r.get("realised", 0.0)
            ax.barh(v + 0.2, real, height=0.38, color=colours[d])
            ax.text(min(real, 0.78) + 0.015, v + 0.2, f"{real:.0%}" if real >= 0.1 or real == 0 else f"{real:.1%}",
                    va="center", fontsize=9)
        ax.xaxis.set_major_formatter(units.percent_formatter())
        ax.set_xlim(0, 1)
        ax.set_xticks([0, 0.5, 1])
        ax.set_title(f"{label}\n{units.human_count(c['tokens'])} tokens" +
                     (f", ~{c['n_docs']:.0f} docs" if c.get("n_docs") else ""), fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    for k in range(len(rows), nrow * ncol):
        axes[k // ncol][k % ncol].axis("off")
    axes[0][0].set_yticks(y, domains)
    axes[0][0].set_ylim(len(domains) - 0.5, -0.5)       # shared: first domain on top, target above realised
    for row in axes:
        row[0].set_ylabel("")
    handles = [Patch(color="#c8c8c8", label="target"), Line2D([], [], color="#444", lw=1, label="target +-2 sd"),
               Patch(color="#888", label="realised\n(colour per domain)")]
    axes[0][-1].legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.supxlabel("share of trained tokens", fontsize=9)
    return save(fig, path)


def similarity(st: StageFolder, path: Path) -> Path | None:
    """Depth up-scaling: each layer's input/output cosine similarity and, where recorded, the
    mean over each candidate block; the axis zoomed to the values (0.977 vs 0.988 must read
    as different) with every bar labelled, and the chosen block marked."""
    sim = (st.grow or {}).get("similarity")
    if not sim:
        return None
    raw = (st.grow or {}).get("raw") or {}
    chosen = chosen_layers(raw, len(sim))
    scores = raw.get("block_scores") if isinstance(raw.get("block_scores"), list) else None
    size = int(raw.get("block_size") or (len(chosen) or 1))
    panels = 2 if scores else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.2 * panels, 3.4), squeeze=False)
    _zoomed_bars(axes[0][0], list(range(len(sim))), sim, set(chosen), [str(i) for i in range(len(sim))])
    axes[0][0].set(title="Cosine similarity of each layer's input and output", xlabel="layer",
                   ylabel="cosine similarity")
    if scores:
        best = max(range(len(scores)), key=lambda i: scores[i])
        start = chosen[0] if chosen else best
        labels = [f"{i}-{i + size - 1}" for i in range(len(scores))]
        _zoomed_bars(axes[0][1], list(range(len(scores))), scores, {start}, labels)
        axes[0][1].set(title=f"Mean over each block of {size} layers", xlabel="block (layers)",
                       ylabel="mean cosine similarity")
    from matplotlib.patches import Patch

    fig.legend(handles=[Patch(color="#e4572e", label="duplicated (the chosen block)"),
                        Patch(color="#5470c6", label="other layers")],
               loc="upper center", ncol=2, fontsize=9, frameon=False, bbox_to_anchor=(0.5, 1.0))
    return save(fig, path, rect=(0, 0, 1, 0.92))


def chosen_layers(raw: dict, n: int) -> list[int]:
    """The duplicated layers: `chosen_block` / `block` [start, end), else a `duplicated` list."""
    for key in ("chosen_block", "block"):
        b = raw.get(key)
        if isinstance(b, list) and len(b) == 2 and all(isinstance(x, int) for x in b):
            return list(range(b[0], min(b[1], n)))
    d = raw.get("duplicated")
    if isinstance(d, list) and all(isinstance(x, int) for x in d):
        return [x for x in d if 0 <= x < n]
    return []


def _zoomed_bars(ax, xs, vals, marked: set, labels) -> None:
    lo, hi = min(vals), max(vals)
    span = (hi - lo) or max(abs(hi), 1e-3) * 0.05
    bottom = lo - 0.25 * span
    ax.bar(xs, [v - bottom for v in vals], bottom=bottom, color=["#e4572e" if x in marked else "#5470c6" for x in xs])
    for x, v in zip(xs, vals):
        ax.text(x, v + 0.02 * span, f"{v:.3f}", ha="center", va="bottom", fontsize=8)
    ax.set_ylim(bottom, hi + 0.15 * span)
    ax.set_xticks(xs, labels)
    ax.grid(axis="y", alpha=0.3)
    ax.text(0.0, -0.2, f"axis starts at {bottom:.3f}, not 0", transform=ax.transAxes, fontsize=7, color="#777")


STATUS_COLOURS = {"done": "#cfe8cf", "failed": "#f3c4c4", "running": "#fde6b0", "this report": "#dde6f5",
                  "pending": "#eeeeee", "missing": "#ffffff", "partial": "#fde6b0"}


def text_width_in(text: str, fontsize: float) -> float:
    """Width of `text` drawn at `fontsize` points, in inches (from the glyph outlines)."""
    from matplotlib.textpath import TextPath

    return TextPath((0, 0), text, size=fontsize).get_extents().width / 72


def order_levels(levels: dict[int, list[str]], deps: dict[str, list[str]]) -> dict[int, list[str]]:
    """Each level's stages sorted by the mean place of their inputs in the levels before
    (the barycentre heuristic): fewer arrows cross, branches stay under their source."""
    place: dict[str, float] = {}
    out = {}
    for d in sorted(levels):
        def key(n: str) -> tuple:
            ins = [place[x] for x in deps.get(n, []) if x in place]
            return (sum(ins) / len(ins) if ins else -1.0, levels[d].index(n))
        row = sorted(levels[d], key=key)
        for i, n in enumerate(row):
            place[n] = (i + 0.5) / len(row)
        out[d] = row
    return out


def graph_layout(names: list[str], depth: dict[str, int], fontsize: float,
                 deps: dict[str, list[str]] | None = None) -> tuple[dict, float, float, bool]:
    """Box centres in inches for a recipe graph: a column per depth, each as wide as its widest
    label; when that is wider than the page, a row per depth instead (top to bottom).
    Returns (centres, width, height, vertical)."""
    widths = {n: text_width_in(n, fontsize) + 0.3 for n in names}
    levels: dict[int, list[str]] = {}
    for n in names:
        levels.setdefault(depth[n], []).append(n)
    levels = order_levels(levels, deps or {})
    gap, row_h, margin = 0.35, 0.42, 0.15
    col_w = [max(widths[n] for n in levels[d]) for d in sorted(levels)]
    wide = sum(col_w) + gap * (len(col_w) - 1) + 2 * margin
    pos = {}
    if wide <= MAX_WIDTH_IN:
        height = max(len(v) for v in levels.values()) * row_h + 2 * margin
        x = margin
        for d, cw in zip(sorted(levels), col_w):
            for i, n in enumerate(levels[d]):
                pos[n] = (x + cw / 2, height - margin - row_h * (i + 0.5))
            x += cw + gap
        return pos, wide, height, False
    row_w = [sum(widths[n] for n in levels[d]) + gap * (len(levels[d]) - 1) for d in sorted(levels)]
    width = max(row_w) + 2 * margin
    height = len(levels) * (row_h + 0.18) + 2 * margin
    for k, (d, rw) in enumerate(zip(sorted(levels), row_w)):
        x = (width - rw) / 2
        for n in levels[d]:
            pos[n] = (x + widths[n] / 2, height - margin - (row_h + 0.18) * (k + 0.5))
            x += widths[n] + gap
    return pos, width, height, True


def recipe_graph(stages: list[StageFolder], path: Path) -> Path | None:
    """The recipe as a graph: a column per depth (longest chain of inputs), an arrow per input,
    each box coloured by the stage's status (legend above); labels never overlap: columns are
    as wide as their labels, and a graph too wide for the page is drawn top to bottom."""
    from matplotlib.patches import Patch

    if not any(st.deps for st in stages):
        return None
    depth: dict[str, int] = {}
    for st in stages:
        depth[st.name] = 1 + max((depth[d] for d in st.deps if d in depth), default=-1)
    fontsize = 8.5
    names = [st.name for st in stages]
    deps = {st.name: st.deps for st in stages}
    pos, width, height, vertical = graph_layout(names, depth, fontsize, deps)
    if width > MAX_WIDTH_IN:                      # very many branches: smaller type, never below 7 pt
        fontsize = max(7.0, fontsize * MAX_WIDTH_IN / width)
        pos, width, height, vertical = graph_layout(names, depth, fontsize, deps)
    top = 0.75                                     # title and legend
    title = "Recipe graph: arrows show which stage's output a stage reads; box colour: the stage's status"
    fig_w = max(width, min(MAX_WIDTH_IN, text_width_in(title, 9) + 0.4))
    fig = plt.figure(figsize=(fig_w, height + top))
    ax = fig.add_axes((0, 0, 1, height / (height + top)))
    boxes = {}
    for st in stages:
        x, y = pos[st.name]
        boxes[st.name] = ax.text(x, y, st.name, ha="center", va="center", fontsize=fontsize, zorder=3,
                                 bbox=dict(boxstyle="round,pad=0.3", fc=STATUS_COLOURS.get(st.status, "#eeeeee"),
                                           ec="#555"))
    a_from, a_to = ((0.5, 0), (0.5, 1)) if vertical else ((1, 0.5), (0, 0.5))
    for st in stages:
        for d in st.deps:
            if d in boxes and d != st.name and st.kind != "report":
                ax.annotate("", xy=a_to, xycoords=boxes[st.name], xytext=a_from, textcoords=boxes[d],
                            arrowprops=dict(arrowstyle="->", color="#777", lw=0.8, shrinkA=4, shrinkB=4), zorder=2)
    ax.set_xlim(-(fig_w - width) / 2, width + (fig_w - width) / 2)      # the graph centred
    ax.set_ylim(0, height)
    ax.axis("off")
    present = list(dict.fromkeys(st.status or "-" for st in stages))
    fig.legend(handles=[Patch(fc=STATUS_COLOURS.get(s, "#eeeeee"), ec="#555", label=s) for s in present],
               loc="upper center", bbox_to_anchor=(0.5, 1 - 0.3 / (height + top)), ncol=len(present), fontsize=8,
               frameon=False, title=None)
    fig.suptitle(title, fontsize=9, y=1 - 0.05 / (height + top), va="top")
    save_figure(fig, path, dpi=DPI)
    plt.close(fig)
    return path


# ------------------------------------------------------------------ SFT data curation and task-mix grid


def _short(label: str, n: int = 38) -> str:
    label = " ".join(str(label).split())
    return label if len(label) <= n else label[:n - 1] + "…"


def sft_funnel(steps: list[dict], path: Path, title: str) -> Path | None:
    """Conversations per curation step: kept, added (hatched) and removed by reason, stacked."""
    if not steps:
        return None
    order = reason_order(steps)
    colours = palette.colours_for([r for _, r in order])
    labels = [str(s.get("step", i)) for i, s in enumerate(steps)]
    fig, ax = plt.subplots(figsize=(10, 0.5 * len(steps) + 2.0))
    added = [sum(v.get("docs", 0) for v in s.get("added", {}).values()) for s in steps]
    kept = [s["kept"]["docs"] - a for s, a in zip(steps, added)]
    ax.barh(labels, kept, color=palette.KEPT, label="kept")
    ax.barh(labels, added, left=kept, color=palette.ADDED, hatch="//", label="kept (added by the step)")
    left = [k + a for k, a in zip(kept, added)]
    for step_name, reason in order:
        vals = [s.get("removed", {}).get(reason, {}).get("docs", 0) for s in steps]
        ax.barh(labels, vals, left=left, color=colours[reason], label=f"{step_name}: {reason}")
        left = [a + b for a, b in zip(left, vals)]
    ax.invert_yaxis()
    ax.set(title=title, xlabel="conversations")
    ax.grid(axis="x", alpha=0.3)
    legend_outside(ax)
    return save(fig, path)


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
    legend_outside(ax)
    return save(fig, path)


def mix_key(shares: dict, tasks: list[str]) -> tuple:
    """A mix as its shares normalised to sum 1 (weights 1:1 and 2:2 are one mix)."""
    w = [max(0.0, float(shares.get(t, 0.0))) for t in tasks]
    total = sum(w) or 1.0
    return tuple(round(v / total, 6) for v in w)


def grid_mixes(grid: dict) -> list[tuple[str, list[int]]]:
    """(label, indices of the grid points with that mix) per distinct normalised mix, in grid
    order; a point without shares is its own mix."""
    tasks = grid.get("tasks") or []
    groups: dict = {}
    for i, p in enumerate(grid.get("points") or []):
        shares = p.get("shares") if isinstance(p.get("shares"), dict) else None
        key = mix_key(shares, tasks) if shares else ("point", i)
        if key not in groups:
            label = (" : ".join(f"{t} {v:.0%}" for t, v in zip(tasks, key)) if shares
                     else str(p.get("label", i)))
            groups[key] = (label, [])
        groups[key][1].append(i)
    return list(groups.values())


def grid_heatmap(grid: dict, path: Path) -> Path | None:
    """Task-mix grid: one row per distinct mix (shares normalised; repeated points averaged),
    held-out reply loss per task and their mean. One colour scale for every column, with its
    bar: nats above the best mix on that task (tasks differ in level, not in what a nat
    means). Beside it the rule's score per mix on a zoomed axis, so the winner's margin reads."""
    import numpy as np

    points, tasks = grid.get("points") or [], grid.get("tasks") or []
    mixes = grid_mixes(grid)
    if not points or not tasks or not mixes:
        return None
    loss = np.array([[np.nanmean([points[i]["heldout"].get(t, {}).get("loss", np.nan) for i in idx])
                      for t in tasks] for _, idx in mixes], float)
    mat = np.hstack([loss, np.nanmean(loss, axis=1, keepdims=True)])
    above = mat - np.nanmin(mat, axis=0)
    cols = [*tasks, "mean"]
    best = int(grid.get("best", -1))
    chosen = next((r for r, (_, idx) in enumerate(mixes) if best in idx), None)
    labels = [_short(lab, 40) + (f" (x{len(idx)})" if len(idx) > 1 else "") for lab, idx in mixes]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(min(MAX_WIDTH_IN, 6.5 + 0.9 * len(cols)),
                                                 0.45 * len(mixes) + 2.0),
                                  gridspec_kw={"width_ratios": [max(2, len(cols)), 2.2]})
    top = float(np.nanmax(above)) or 1e-3
    im = ax.imshow(above, cmap="viridis_r", aspect="auto", vmin=0, vmax=top)
    for i in range(mat.shape[0]):
        for j in range(mat.shape[1]):
            ax.text(j, i, "-" if np.isnan(mat[i, j]) else f"{mat[i, j]:.3f}", ha="center", va="center",
                    fontsize=8, color="white" if above[i, j] > 0.5 * top else "black")
    if chosen is not None:
        ax.add_patch(plt.Rectangle((-0.5, chosen - 0.5), len(cols), 1, fill=False, ec="red", lw=2))
    ax.set_xticks(range(len(cols)), cols, fontsize=8)
    ax.set_yticks(range(len(mixes)), labels, fontsize=8)
    ax.set_title("Held-out reply loss (nats/token); chosen boxed", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02).set_label("nats above the best mix on the task", fontsize=8)
    score = [np.nanmean([(points[i].get("score") or [np.nan])[0] for i in idx]) for _, idx in mixes]
    ys = list(range(len(mixes)))
    if np.all(np.isfinite(score)):
        lo, hi = min(score), max(score)
        span = (hi - lo) or max(abs(hi), 1e-3) * 0.05
        left = lo - 0.25 * span
        ax2.barh(ys, [v - left for v in score], left=left, height=0.6,
                 color=["#e4572e" if r == chosen else "#5470c6" for r in ys])
        for y, v in zip(ys, score):
            ax2.text(v, y, f" {v:.4f}", va="center", fontsize=8)
        ax2.set_xlim(left, hi + 0.45 * span)
        ax2.text(0.0, -0.16, f"axis starts at {left:.4g}, not 0", transform=ax2.transAxes, fontsize=7,
                 color="#777")
    ax2.set_ylim(len(mixes) - 0.5, -0.5)
    ax2.set_yticks(ys, [""] * len(ys))
    ax2.set_title(f"rule {grid.get('rule')} score (lower is better)", fontsize=9)
    ax2.grid(axis="x", alpha=0.3)
    return save(fig, path)
