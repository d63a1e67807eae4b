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
    """Global step where each training stage starts (stages run one after another)."""
    off, out = 0, {}
    for st in stages:
        if st.metrics:
            out[st.name] = off
            off += int(max(r["step"] for r in st.metrics))
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
