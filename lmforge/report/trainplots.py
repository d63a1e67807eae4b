"""Training and validation curves, one axis per quantity kind (lmforge.report.kinds).

Every series is (stage, metric key) -> points against the global step (all training
stages in order, lmforge.report.plots.stage_offsets); `series_by_kind` groups them by kind,
and each figure draws one kind per axis, so a perplexity (~300) never squashes a loss
(~6) and the DPO loss (~0.69) never reads as a cliff in the LM loss. Legends sit outside
the axes, to the right."""
from __future__ import annotations

import math
from pathlib import Path

from lmforge.report import palette, plots
from lmforge.report.collect import StageFolder
from lmforge.report.kinds import kind_info, lm_loss_key, metric_kind, objective
from lmforge.report.units import count_formatter

plt = plots.plt


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def stage_objective(st: StageFolder) -> str:
    return objective(st.objective, {k for r in st.metrics[:50] for k in r})


def series_by_kind(stages: list[StageFolder], keys=None, val: bool = False) -> dict[str, dict[tuple[str, str], list]]:
    """{kind: {(stage, key): [(global step, value), ...]}} of the training records (val=False:
    records with a training `loss`) or of the held-out evaluations (val=True: `val/` keys).
    `keys` limits the metric names (None: all)."""
    offsets = plots.stage_offsets(stages)
    out: dict[str, dict[tuple[str, str], list]] = {}
    for st in stages:
        if st.name not in offsets:
            continue
        obj = stage_objective(st)
        recs = st.metrics if val else st.train_records
        for r in recs:
            for k, v in r.items():
                if not _finite(v) or (keys is not None and k not in keys) or k.startswith("val") != val:
                    continue
                kind = metric_kind(k, obj)
                if kind is None:
                    continue
                out.setdefault(kind, {}).setdefault((st.name, k), []).append((r["step"] + offsets[st.name], v))
    return out


def stage_marks(ax, stages: list[StageFolder], names=None) -> None:
    """Dashed lines where training stages start (offsets over all `stages`), named at the top
    of the axes; only the stages in `names` (default: all), the x axis starting at 0."""
    offsets = plots.stage_offsets(stages)
    trans = ax.get_xaxis_transform()
    ax.set_xlim(left=0)
    for st in stages:
        if st.name in offsets and (names is None or st.name in names):
            x = offsets[st.name]
            if x > 0:
                ax.axvline(x, color="grey", lw=0.8, ls="--", zorder=0)
            ax.text(x, 1.01, st.name, transform=trans, fontsize=7, color="#555", rotation=30,
                    ha="left", va="bottom", clip_on=False)
            subs = [s for s in ((st.config or {}).get("stages") or []) if isinstance(s, dict)]
            end = 0
            for sub, nxt in zip(subs, subs[1:]):          # a curriculum's mixture stages (WSD: decay)
                if not isinstance(sub.get("steps"), int):
                    break
                end += sub["steps"]
                ax.axvline(x + end, color="grey", lw=0.8, ls=":", zorder=0)
                ax.text(x + end, 1.01, f"{st.name}/{nxt.get('name', '')}", transform=trans, fontsize=7,
                        color="#555", rotation=30, ha="left", va="bottom", clip_on=False)


def stage_colours(stages: list[StageFolder]) -> dict[str, str]:
    """One colour per training stage, the same in every training plot."""
    return palette.colours_for([st.name for st in stages if st.train_records])


def _draw(ax, pts, label, colour=None, smooth=False, **kw):
    pts = sorted(pts)
    xs, ys = zip(*pts)
    if smooth and len(ys) > 10:
        line, = ax.plot(xs, ys, lw=0.8, alpha=0.35, color=colour)
        ax.plot(xs, plots.ema(list(ys)), lw=1.8, color=line.get_color(), label=label)
    else:
        ax.plot(xs, ys, lw=1.4, color=colour, label=label, marker="o" if len(ys) <= 12 else None, ms=3)


def training_loss(stages: list[StageFolder], path: Path) -> Path | None:
    """The plain LM loss (nats/token) of every stage that has one: pretraining, SFT, and
    C-RLFT's unweighted cross-entropy; DPO's loss is another kind and drawn apart."""
    pts = {}
    offsets = plots.stage_offsets(stages)
    for st in stages:
        key = lm_loss_key(stage_objective(st))
        if not key or st.name not in offsets:
            continue
        p = [(r["step"] + offsets[st.name], r[key]) for r in st.train_records if _finite(r.get(key))]
        if p:
            pts[st.name] = (p, key)
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(10, 3.9))
    colours = stage_colours(stages)
    for name, (p, key) in pts.items():
        _draw(ax, p, name if key == "loss" else f"{name} (plain CE)", colours.get(name), smooth=True)
    stage_marks(ax, stages, set(pts))
    ax.set(xlabel="step (all training stages in order)", ylabel="nats / token")
    ax.set_title("Training loss (language modelling, nats/token): thin every step, thick smoothed", pad=36)
    ax.grid(alpha=0.3)
    plots.legend_outside(ax)
    return plots.save(fig, path)


def dynamics(stages: list[StageFolder], path: Path) -> Path | None:
    """Learning rate, gradient norm and throughput side by side (one axis each)."""
    groups = series_by_kind(stages, keys={"lr", "grad_norm", "tokens_per_s"})
    kinds = [k for k in ("lr", "grad_norm", "tokens_per_s") if k in groups]
    if not kinds:
        return None
    fig, axes = plt.subplots(1, len(kinds), figsize=(3.8 * len(kinds) + 1.6, 3.3), squeeze=False)
    colours = stage_colours(stages)
    for ax, kind in zip(axes[0], kinds):
        info = kind_info(kind)
        for (stage, _key), pts in groups[kind].items():
            _draw(ax, pts, stage, colours.get(stage), smooth=kind != "lr")
        if info.log:
            ax.set_yscale("log")
        if kind == "tokens_per_s":
            ax.yaxis.set_major_formatter(count_formatter())
        ax.set(title=info.title, xlabel="step (all stages)", ylabel=info.ylabel)
        ax.grid(alpha=0.3)
    plots.legend_outside(axes[0][-1])
    return plots.save(fig, path)


def validation(stages: list[StageFolder], path: Path, unigram: dict[str, float] | None = None,
               uniform: float | None = None) -> Path | None:
    """Held-out LM loss per domain (and on SFT replies) against the step; dotted lines: the
    unigram model's loss on each domain's validation documents; grey dashed: an untrained
    model (ln V). Perplexities (`val/ppl`, `val/sft_ppl`) are exp of drawn losses: another
    kind, so not on this axis."""
    groups = series_by_kind(stages, val=True).get("lm_loss", {})
    if not groups:
        return None
    by_label: dict[str, list] = {}
    for (_stage, key), pts in groups.items():
        label = "SFT replies (held out)" if key == "val/sft_loss" else key[4:]
        by_label.setdefault(label, []).extend(pts)
    fig, ax = plt.subplots(figsize=(10, 3.8))
    for i, (label, pts) in enumerate(sorted(by_label.items(), key=lambda kv: (kv[0] == "mean", kv[0]))):
        colour = "black" if label == "mean" else f"C{i % 10}"
        pts = sorted(pts)
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="o", ms=3, lw=2.2 if label == "mean" else 1.3, ls="--" if label == "mean" else "-",
                color=colour, label="mean of domains" if label == "mean" else label)
        if unigram and label in unigram:
            ax.axhline(unigram[label], color=colour, lw=1, ls=":")
    if unigram:
        ax.plot([], [], color="grey", ls=":", label="unigram model\n(per domain, dotted)")
    if uniform:
        ax.axhline(uniform, color="grey", lw=1, ls="--")
        ax.plot([], [], color="grey", ls="--", label=f"untrained (ln V = {uniform:.2f})")
    stage_marks(ax, stages, {st for st, _ in groups})
    ax.set(xlabel="step (all training stages in order)", ylabel="nats / token")
    ax.set_title("Validation loss by domain (held-out documents)", pad=36)
    ax.grid(alpha=0.3)
    plots.legend_outside(ax)
    return plots.save(fig, path)


def dpo(st: StageFolder, path: Path) -> Path | None:
    """A DPO stage: its loss (ln 2 where the policy equals the reference), the implicit rewards
    of chosen and rejected replies and their margin, and preference accuracy, per step."""
    recs = st.train_records
    get = {k: [(r["step"], r[k]) for r in recs if _finite(r.get(k))] for k in
           ("dpo_loss_sum", "loss", "reward_chosen_sum", "reward_rejected_sum", "margin_sum", "accuracy_sum")}
    val = {k: [(r["step"], r[k]) for r in st.metrics if _finite(r.get(k))] for k in
           ("val/dpo_loss_sum", "val/margin_sum", "val/accuracy_sum")}
    loss = get["dpo_loss_sum"] or get["loss"]
    if not loss:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    _draw(axes[0], loss, "train", smooth=True)
    if val["val/dpo_loss_sum"]:
        _draw(axes[0], val["val/dpo_loss_sum"], "held-out pairs", colour="black")
    axes[0].axhline(math.log(2), color="grey", ls="--", lw=1, label="ln 2 (policy = reference)")
    axes[0].set(title="DPO loss", xlabel=f"{st.name} step", ylabel=kind_info("pref_loss").ylabel)
    for key, label, c in (("reward_chosen_sum", "chosen", "C2"), ("reward_rejected_sum", "rejected", "C3"),
                          ("margin_sum", "margin (chosen - rejected)", "C0")):
        if get[key]:
            _draw(axes[1], get[key], label, colour=c, smooth=True)
    if val["val/margin_sum"]:
        _draw(axes[1], val["val/margin_sum"], "held-out margin", colour="black")
    axes[1].axhline(0, color="grey", lw=0.8)
    axes[1].set(title="Implicit rewards", xlabel=f"{st.name} step", ylabel=kind_info("reward").ylabel)
    if get["accuracy_sum"]:
        _draw(axes[2], get["accuracy_sum"], "train", smooth=True)
    if val["val/accuracy_sum"]:
        _draw(axes[2], val["val/accuracy_sum"], "held-out pairs", colour="black")
    axes[2].axhline(0.5, color="grey", ls="--", lw=1, label="0.5 (coin flip)")
    axes[2].set(title="Preference accuracy", xlabel=f"{st.name} step", ylabel="share of pairs", ylim=(-0.03, 1.03))
    for ax in axes:
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            ax.legend(handles, labels, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False,
                      ncol=2)
    fig.suptitle(f"DPO ({st.name})", fontsize=10)
    return plots.save(fig, path)


def other_objectives(stages: list[StageFolder], path: Path) -> Path | None:
    """Losses of other objectives (C-RLFT's class-weighted loss, KL), one axis per kind."""
    groups = series_by_kind(stages)
    kinds = [k for k in groups if k in ("weighted_loss", "kl") or k.startswith("other:")]
    for k in kinds:       # C-RLFT logs its loss twice (loss, weighted_ce_sum): draw one
        seen: dict = {}
        for name, pts in list(groups[k].items()):
            key = (name[0], tuple(pts))
            if key in seen:
                del groups[k][name]
            seen[key] = name
    kinds = [k for k in kinds if any(len(p) > 1 for p in groups[k].values())]
    if not kinds:
        return None
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.2 * len(kinds) + 1.6, 3.3), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        info = kind_info(kind)
        for (stage, key), pts in groups[kind].items():
            _draw(ax, pts, f"{stage} ({key})", smooth=True)
        ax.set(title=info.title, xlabel="step (all stages)", ylabel=info.ylabel)
        ax.grid(alpha=0.3)
        plots.legend_outside(ax)
    return plots.save(fig, path)
