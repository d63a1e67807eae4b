"""The needle-in-a-haystack heatmap of the run report, drawn from needle.json.

Columns are the needle's depth in the haystack (% of the prompt before it), rows the prompt
length in tokens (longest on top); the caption says so and the title names the stage and
checkpoint step, not a path. Three panels: exact greedy retrieval, the value ranked first
among the distractors (chance 1 / (1 + distractors)), and the mean log-probability of the
value, which moves before retrieval does: a tiny model that retrieves nothing still shows
whether it scores the needle above guessing digits."""
from __future__ import annotations

import math
import re
from pathlib import Path

from lmforge.report import plots

plt = plots.plt


def checkpoint_label(path: str) -> str:
    """'runs/tiny/longctx/checkpoints/step-2' -> 'longctx step 2'."""
    parts = Path(str(path)).parts
    m = re.match(r"step-(\d+)$", parts[-1]) if parts else None
    if m and len(parts) >= 3 and parts[-2] == "checkpoints":
        return f"{parts[-3]} step {int(m.group(1))}"
    return parts[-1] if parts else str(path)


def chance(needle: dict) -> float | None:
    k = (needle.get("config") or {}).get("distractors")
    return 1.0 / (1 + int(k)) if isinstance(k, int) and k > 0 else None


def guess_logprob(needle: dict) -> float | None:
    """Log-probability of a value guessed digit by digit (each of 10 digits equally likely)."""
    digits = (needle.get("config") or {}).get("value_digits")
    return -int(digits) * math.log(10) if isinstance(digits, int) and digits > 0 else None


def caption(stage: str, needle: dict) -> str:
    cfg = needle.get("config") or {}
    parts = [f"{stage}: needle in a haystack on {checkpoint_label(needle.get('checkpoint', '?'))}. Columns: needle "
             f"depth (% of the prompt before the needle); rows: prompt length in tokens; each cell the mean over "
             f"{cfg.get('trials', 1)} trial(s)."]
    c, g = chance(needle), guess_logprob(needle)
    if c:
        parts.append(f"'Ranked first' is against {cfg.get('distractors')} distractor values: chance {c:.0%}.")
    if g:
        parts.append(f"Log-probability of the {cfg.get('value_digits')}-digit value: guessing digits gives {g:.1f} "
                     f"nats; higher is better.")
    return " ".join(parts)


def plot(needle: dict, stage: str, path: Path) -> Path | None:
    import numpy as np

    g = needle.get("grid") or {}
    lengths, depths = g.get("lengths") or [], g.get("depths") or []
    panels = [(k, t) for k, t in (("exact", "exact greedy retrieval"), ("rank_acc", "value ranked first"),
                                  ("logprob", "log p(value), nats")) if g.get(k)]
    if not lengths or not depths or not panels:
        return None
    # as many panels a row as fit the page at their own size (three in a row of 5 depths were
    # 1700 px wide, shown shrunk to 70%)
    panel_w = 1.5 + 0.75 * len(depths)
    ncol = max(1, min(len(panels), int((plots.MAX_WIDTH_IN - 1.0) // panel_w)))
    nrow = -(-len(panels) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(min(plots.MAX_WIDTH_IN, 1.0 + panel_w * ncol),
                                                  (1.9 + 0.5 * len(lengths)) * nrow), squeeze=False)
    for k in range(len(panels), nrow * ncol):
        axes[k // ncol][k % ncol].axis("off")
    for k, (key, title) in enumerate(panels):
        ax = axes[k // ncol][k % ncol]
        data = np.array([[np.nan if v is None else v for v in row] for row in g[key]], dtype=float)
        if key == "logprob":
            lo, hi = np.nanmin(data), np.nanmax(data)
            ref = guess_logprob(needle)
            if ref is not None:
                lo, hi = min(lo, ref), max(hi, ref)
            im = ax.imshow(data, cmap="RdYlGn", vmin=lo, vmax=hi if hi > lo else lo + 1, aspect="auto",
                           origin="lower")
            text = [[f"{v:.1f}" for v in row] for row in data]
        else:
            im = ax.imshow(data, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto", origin="lower")
            text = [[f"{v:.0%}" for v in row] for row in data]
            c = chance(needle)
            if key == "rank_acc" and c:
                title += f" (chance {c:.0%})"
        for i in range(data.shape[0]):
            for j in range(data.shape[1]):
                ax.text(j, i, "-" if np.isnan(data[i, j]) else text[i][j], ha="center", va="center", fontsize=11)
        ax.set_xticks(range(len(depths)), [f"{d:g}%" for d in depths])
        ax.set_yticks(range(len(lengths)), [str(L) for L in lengths])
        ax.set_xlabel("needle depth (% of the prompt)")
        ax.set_ylabel("prompt length (tokens)")
        ax.set_title(title, fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.05)
    rope = (needle.get("rope") or {}).get("mode") or (needle.get("config") or {}).get("rope")
    fig.suptitle(f"Needle in a haystack ({stage}): {checkpoint_label(needle.get('checkpoint', '?'))}"
                 + (f", RoPE {rope}" if rope else ""), fontsize=11)
    return plots.save(fig, path)
