"""One figure per finding: the arms' curves (mean over seeds, each seed faint) beside the
primary metric per arm (every seed a dot, the mean +- one standard deviation): one panel per
primary metric where a finding's variants are compared on several (Finding.keys)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lmforge.report import palette
from lmforge.report.plots import plt, save
from lmforge.findings.spec import Finding


def _mean_curve(curves: list[list[list[float]]]):
    curves = [c for c in curves if c]
    if not curves:
        return None, None
    n = min(len(c) for c in curves)
    xs = np.array([p[0] for p in curves[0][:n]])
    ys = np.array([[p[1] for p in c[:n]] for c in curves]).mean(0)
    return xs, ys


def key_groups(finding: Finding) -> dict[str, list[str]]:
    """Primary metric key -> the arms compared on it (each variant with its reference arm), in
    run order; a finding with one baseline and one key: every arm on that key."""
    groups: dict[str, set[str]] = {}
    for arm in finding.expect:
        groups.setdefault(finding.key_of(arm), set()).update((arm, finding.reference(arm)))
    if not groups:
        groups[finding.key] = set(finding.arms)
    groups.setdefault(finding.key, set()).add(finding.baseline)
    return {k: [a for a in finding.arms if a in arms] for k, arms in groups.items()}


def plot_finding(finding: Finding, result: dict, path: Path) -> Path | None:
    arms = list(finding.arms)
    colours = palette.colours_for(arms)
    groups = key_groups(finding)
    fig, axes = plt.subplots(1, 1 + len(groups), figsize=(11 + 3.5 * (len(groups) - 1), 3.6),
                             gridspec_kw={"width_ratios": [1.6] + [1] * len(groups)})
    left = axes[0]
    labels = sorted({label for by_seed in result["curves"].values() for c in by_seed.values() for label in c})
    label = finding.curve_label if finding.curve_label in labels else (labels[0] if labels else None)
    for arm in arms:
        seeds = result["curves"].get(arm, {})
        runs = [c.get(label, []) for c in seeds.values()] if label else []
        for c in runs:
            if c:
                left.plot([p[0] for p in c], [p[1] for p in c], color=colours[arm], alpha=0.2, lw=0.8)
        xs, ys = _mean_curve(runs)
        if xs is not None:
            left.plot(xs, ys, color=colours[arm], lw=1.8, label=arm)
    left.set_xlabel(finding.curve_x)
    left.set_ylabel(label or "")
    left.set_title(f"{finding.name}: {label or 'no curve'}", fontsize=10)
    if label:
        left.legend(fontsize=8, frameon=False)
    for right, (key, group) in zip(axes[1:], groups.items()):
        _metric_panel(right, key, group, result, colours)
        right.set_ylabel(finding.metric if len(groups) == 1 else key, fontsize=8)
    axes[1].set_title(f"verdict: {result['verdict']} ({len(result['seeds'])} seeds)", fontsize=10)
    return save(fig, path)


def _metric_panel(ax, key: str, arms: list[str], result: dict, colours: dict) -> None:
    """Every seed a dot, the mean +- one standard deviation, per arm."""
    for i, arm in enumerate(arms):
        st = result["arms"][arm][key]
        vals = st["values"]
        ax.scatter([i] * len(vals), vals, color=colours[arm], s=18, zorder=3)
        if st["mean"] is not None:
            ax.errorbar([i + 0.15], [st["mean"]], yerr=[st["std"] or 0.0], fmt="o", color="black", ms=4,
                        capsize=4, zorder=4)
    ax.set_xticks(range(len(arms)), [a if len(a) <= 14 else a[:13] + "…" for a in arms], rotation=20, fontsize=8)
    ax.margins(x=0.15)
