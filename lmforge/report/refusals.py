"""Model-written refusals (Index-1.9B) in the report: perplexity under the SFT model of the
human-written refusals against the refusals the SFT model wrote itself (refusals.json)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lmforge.io.atomic import save_figure  # noqa: E402
from lmforge.report import fonts  # noqa: E402
from lmforge.report.tables import Table  # noqa: E402

fonts.use_in_matplotlib()


def plot_refusal_ppl(ref: dict, path: Path) -> Path | None:
    kinds = [k for k in ("human", "model") if ref.get("per_pair") and any(k in p for p in ref["per_pair"])]
    if not kinds:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.2))
    data = [[p[k] for p in ref["per_pair"] if p.get(k) is not None] for k in kinds]
    ax.boxplot(data, tick_labels=[f"{k}-written" for k in kinds])
    ax.set_yscale("log")
    ax.set_ylabel("perplexity under the SFT model")
    ax.set_title("Refusal replies", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)
    return path


def refusal_blocks(ref: dict, out: Path, prefix: str) -> list:
    rows = [[k, v.get("n"), v.get("mean_ppl"), v.get("median_ppl"), v.get("mean_tokens")]
            for k, v in (ref.get("summary") or {}).items()]
    blocks: list = [Table("Refusal perplexity under the SFT model", ["refusals", "n", "mean ppl", "median ppl",
                                                                      "mean tokens"], rows,
                          note=f"pairs built: {ref.get('pairs', 0)}; chosen = model-written refusal")]
    p = plot_refusal_ppl(ref, out / f"{prefix}_refusal_ppl.png")
    return ([p] if p else []) + blocks
