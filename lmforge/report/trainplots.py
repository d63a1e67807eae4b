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


def stage_marks(ax, stages: list[StageFolder], names=None) -> float:
    """Dashed lines where training stages start (offsets over all `stages`), named above the
    axes; only the stages in `names` (default: all), the x axis starting at 0. Stages that
    start at the same step (branches from one checkpoint) share one label; labels that would
    overlap go on rows above each other. Returns the title padding (points) they need."""
    offsets = plots.stage_offsets(stages)
    ax.set_xlim(left=0)
    marks: dict[float, list[str]] = {}
    for st in stages:
        if st.name in offsets and (names is None or st.name in names):
            x = offsets[st.name]
            marks.setdefault(x, []).append(st.name)
            if x > 0:
                ax.axvline(x, color="grey", lw=0.8, ls="--", zorder=0)
            subs = [s for s in ((st.config or {}).get("stages") or []) if isinstance(s, dict)]
            end = 0
            for sub, nxt in zip(subs, subs[1:]):          # a curriculum's mixture stages (WSD: decay)
                if not isinstance(sub.get("steps"), int):
                    break
                end += sub["steps"]
                marks.setdefault(x + end, []).append(f"{st.name}/{nxt.get('name', '')}")
                ax.axvline(x + end, color="grey", lw=0.8, ls=":", zorder=0)
    return _mark_labels(ax, {x: ", ".join(v) for x, v in sorted(marks.items())})


def _mark_labels(ax, labels: dict[float, str], fontsize: float = 7.5) -> float:
    """Place labels at their x above the axes, each on the lowest row where it overlaps no
    other (widths estimated from the character count); returns the padding they need."""
    fig = ax.figure
    lo, hi = ax.get_xlim()
    width_in = ax.get_position().width * fig.get_figwidth()
    per_char = 0.56 * fontsize / 72 / width_in * (hi - lo)      # data units per character
    rows: list[float] = []                                      # right end of the last label per row
    trans = ax.get_xaxis_transform()
    for x, text in labels.items():
        right = x + (len(text) + 1) * per_char
        row = next((i for i, end in enumerate(rows) if x > end), len(rows))
        if row == len(rows):
            rows.append(right)
        rows[row] = right
        ax.annotate(text, (x, 1.0), xycoords=trans, xytext=(0, 2 + row * (fontsize + 3)),
                    textcoords="offset points", fontsize=fontsize, color="#555", ha="left", va="bottom",
                    annotation_clip=False)
    return 6 + max(1, len(rows)) * (fontsize + 3)


def stage_colours(stages: list[StageFolder]) -> dict[str, str]:
    """One colour per training stage, the same in every training plot."""
    return palette.colours_for([st.name for st in stages if st.train_records])


def _draw(ax, pts, label, colour=None, smooth=False, ls="-", **kw):
    pts = sorted(pts)
    xs, ys = zip(*pts)
    if smooth and len(ys) > 10:
        line, = ax.plot(xs, ys, lw=0.8, alpha=0.35, color=colour, ls=ls)
        ax.plot(xs, plots.smooth(xs, ys), lw=1.8, color=line.get_color(), label=label, ls=ls)
    else:
        ax.plot(xs, ys, lw=1.4, color=colour, label=label, marker="o" if len(ys) <= 12 else None, ms=3, ls=ls)


def coincide(a: list, b: list, tol: float, log: bool = False) -> bool:
    """Would series a and b draw as one line: the same x values and every y within `tol`
    (in log10 units on a log axis)?"""
    if len(a) != len(b):
        return False
    for (xa, ya), (xb, yb) in zip(sorted(a), sorted(b)):
        if xa != xb:
            return False
        if log:
            if ya <= 0 or yb <= 0:
                return False
            ya, yb = math.log10(ya), math.log10(yb)
        if abs(ya - yb) > tol:
            return False
    return True


def coincident_groups(series: dict[str, list], log: bool = False, share: float = 0.01) -> list[list[str]]:
    """Labels of the series that would draw as one line (every y within `share` of the axis's
    y range at the same x), grouped, in order."""
    ys = [math.log10(y) if log else y for pts in series.values() for _, y in pts if not log or y > 0]
    tol = share * ((max(ys) - min(ys)) if ys else 0.0) or 1e-12
    groups: list[list[str]] = []
    for label, pts in series.items():
        for names in groups:
            if coincide(series[names[0]], pts, tol, log):
                names.append(label)
                break
        else:
            groups.append([label])
    return groups


_DASHES = ("-", "--", ":", "-.")


def draw_series(ax, series: dict[str, list], colours: dict[str, str] | None = None, smooth: bool = False,
                log: bool = False) -> None:
    """Series on one axis, none hidden under another (a legend entry without a visible line
    reads as a bug: 7 training stages listed, 3 lines seen):
    - series that would draw as one line: of one colour (one stage's two names for a loss),
      drawn once and labelled "a = b"; of several colours (two branches on the same schedule),
      drawn as one line dashed in turn in each colour, so each stays visible;
    - a series whose steps overlap an earlier one's (two branches from one checkpoint) dashed."""
    def colour_of(label: str, k: int) -> str:
        first = label.split(" (")[0]
        return (colours or {}).get(label) or (colours or {}).get(first) or f"C{k % 10}"
    spans: list[tuple[float, float]] = []
    for k, names in enumerate(coincident_groups(series, log)):
        pts = series[names[0]]
        by_colour: dict[str, list[str]] = {}
        for n in names:
            by_colour.setdefault(colour_of(n, k), []).append(n)
        xs = [x for x, _ in pts]
        lo, hi = min(xs), max(xs)
        overlaps = sum(1 for a, b in spans if a < hi and lo < b)
        spans.append((lo, hi))
        m = len(by_colour)
        for i, (colour, ns) in enumerate(by_colour.items()):
            if m == 1:
                ls = _DASHES[overlaps % len(_DASHES)]
            else:                         # the first solid beneath, the others' dashes over it in turn
                ls = "-" if i == 0 else ((i - 1) * 4.0, (4.0, 4.0 * (m - 1)))
            _draw(ax, pts, " = ".join(ns), colour, smooth=smooth, ls=ls)


REF_STYLE = dict(color="black", alpha=0.6, lw=1.3, ls=(0, (5, 2, 1, 2)), zorder=1.5)   # dash-dot: not a stage mark, not a unigram line


def _reference_lines(ax, reference: dict[str, list] | None, names, offsets: dict, label: str, smooth: bool) -> None:
    """The reference run's curve of each stage in `names` (its own steps, on this run's stage
    offsets), one legend entry `label` for all of them."""
    first = True
    for name in names:
        pts = sorted((reference or {}).get(name) or [])
        if len(pts) < 2 or name not in offsets:
            continue
        xs = [x + offsets[name] for x, _ in pts]
        ys = [y for _, y in pts]
        ax.plot(xs, plots.smooth(xs, ys) if smooth and len(ys) > 10 else ys,
                label=label if first else "_" + label, **REF_STYLE)
        first = False


def training_loss(stages: list[StageFolder], path: Path, reference: dict[str, list] | None = None,
                  ref_name: str = "") -> Path | None:
    """The plain LM loss (nats/token) of every stage that has one: pretraining, SFT, and
    C-RLFT's unweighted cross-entropy; DPO's loss is another kind and drawn apart.
    reference: {stage: [[step, loss], ...]} of a clean run of the same recipe (reference/curves/
    `ref_name`), drawn under this run's lines (smoothed like them)."""
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
    draw_series(ax, {name if key == "loss" else f"{name} (plain CE)": p for name, (p, key) in pts.items()},
                colours, smooth=True)
    _reference_lines(ax, reference, [n for n, (_, key) in pts.items() if key == "loss"], offsets,
                     f"reference run ({ref_name}), smoothed", smooth=True)
    pad = stage_marks(ax, stages, set(pts))
    ax.set(xlabel="step (all training stages in order)", ylabel="nats / token")
    ax.set_title("Training loss (language modelling, nats/token): thin every step, thick smoothed", pad=pad)
    ax.grid(alpha=0.3)
    plots.legend_outside(ax)
    return plots.save(fig, path)


def dynamics(stages: list[StageFolder], path: Path) -> Path | None:
    """Learning rate, gradient norm and throughput side by side (one axis each)."""
    groups = series_by_kind(stages, keys={"lr", "grad_norm", "tokens_per_s"})
    kinds = [k for k in ("lr", "grad_norm", "tokens_per_s") if k in groups]
    if not kinds:
        return None
    fig, axes = plt.subplots(1, len(kinds), figsize=(min(plots.MAX_WIDTH_IN, 3.8 * len(kinds) + 1.6), 3.3), squeeze=False)
    colours = stage_colours(stages)
    for ax, kind in zip(axes[0], kinds):
        info = kind_info(kind)
        draw_series(ax, {stage: pts for (stage, _key), pts in groups[kind].items()}, colours,
                    smooth=kind != "lr", log=info.log)
        if info.log:
            ax.set_yscale("log")
        if kind == "tokens_per_s":
            ax.yaxis.set_major_formatter(count_formatter())
        ax.set(title=info.title, xlabel="step (all stages)", ylabel=info.ylabel)
        ax.grid(alpha=0.3)
    # one legend for the panels: each stage once, in its colour (a panel may draw two stages'
    # coincident lines as one line dashed in both colours)
    from matplotlib.lines import Line2D
    drawn = list(dict.fromkeys(n for ax in axes[0] for ln in ax.lines
                               for n in ln.get_label().split(" = ") if not n.startswith("_")))
    axes[0][-1].legend(handles=[Line2D([], [], color=colours.get(n), lw=1.8, label=n) for n in drawn], fontsize=8,
                       loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, frameon=False)
    return plots.save(fig, path)


def branch_styles(stages: list[StageFolder], names: set[str]) -> dict[str, object]:
    """A line style per training stage: solid, or dashed / dotted for a stage whose steps
    overlap an earlier stage's (a second branch from one checkpoint), so branches drawn in one
    colour per domain stay apart."""
    offsets = plots.stage_offsets(stages)
    spans: list[tuple[float, float]] = []
    out: dict[str, object] = {}
    for st in stages:
        if st.name not in offsets or st.name not in names or not st.metrics:
            continue
        lo = offsets[st.name]
        hi = lo + max(r["step"] for r in st.metrics)
        out[st.name] = _DASHES[sum(1 for a, b in spans if a < hi and lo < b) % len(_DASHES)]
        spans.append((lo, hi))
    return out


def validation(stages: list[StageFolder], path: Path, unigram: dict[str, float] | None = None,
               uniform: float | None = None, reference: dict[str, list] | None = None,
               ref_name: str = "") -> Path | None:
    """Held-out LM loss per domain (and on SFT replies) against the step; dotted lines: the
    unigram model's loss on each domain's validation documents; grey dashed: an untrained
    model (ln V). Perplexities (`val/ppl`, `val/sft_ppl`) are exp of drawn losses: another
    kind, so not on this axis."""
    groups = series_by_kind(stages, val=True).get("lm_loss", {})
    if not groups:
        return None
    label_of = {k: "SFT replies (held out)" if k[1] == "val/sft_loss" else k[1][4:] for k in groups}
    labels = sorted(set(label_of.values()), key=lambda lab: (lab == "mean", lab))
    colour = {lab: "black" if lab == "mean" else f"C{i % 10}" for i, lab in enumerate(labels)}
    style = branch_styles(stages, {st for st, _ in groups})
    deps = {st.name: st.deps for st in stages}
    fig, ax = plt.subplots(figsize=(10, 3.8))
    shown: set[str] = set()
    for (stage, key), pts in groups.items():
        lab = label_of[(stage, key)]
        pts = sorted(pts)
        # continue the line from where the stage's input left off, so each branch is one path
        parent = [groups[(d, key)] for d in deps.get(stage, []) if (d, key) in groups]
        if parent:
            pts = [max(parent[0])] + pts
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="o", ms=3, lw=2.2 if lab == "mean" else 1.3, ls=style.get(stage, "-"),
                color=colour[lab], label=("_" if lab in shown else "") + ("mean of domains" if lab == "mean" else lab))
        shown.add(lab)
    for lab in labels:
        if unigram and lab in unigram:
            ax.axhline(unigram[lab], color=colour[lab], lw=1, ls=":")
    _reference_lines(ax, reference, sorted({st for st, key in groups if key == "val/mean"}),
                     plots.stage_offsets(stages), f"reference run ({ref_name}): mean of domains", smooth=False)
    for st, ls in style.items():
        if ls != "-":
            ax.plot([], [], color="grey", ls=ls, label=f"{st} (a branch)")
    if unigram:
        ax.plot([], [], color="grey", ls=":", label="unigram model\n(per domain, dotted)")
    if uniform:
        ax.axhline(uniform, color="grey", lw=1, ls="--")
        ax.plot([], [], color="grey", ls="--", label=f"untrained (ln V = {uniform:.2f})")
    pad = stage_marks(ax, stages, {st for st, _ in groups})
    ax.set(xlabel="step (all training stages in order)", ylabel="nats / token")
    ax.set_title("Validation loss by domain (held-out documents)", pad=pad)
    ax.grid(alpha=0.3)
    handles, names = ax.get_legend_handles_labels()
    rank = {("mean of domains" if lab == "mean" else lab): i for i, lab in enumerate(labels)}
    order = sorted(range(len(names)), key=lambda i: (rank.get(names[i], len(rank)), i))
    ax.legend([handles[i] for i in order], [names[i] for i in order], fontsize=8, loc="upper left",
              bbox_to_anchor=(1.01, 1.0), borderaxespad=0, frameon=False)
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
    fig, axes = plt.subplots(1, 3, figsize=(plots.MAX_WIDTH_IN - 0.2, 4.2))
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
    fig, axes = plt.subplots(1, len(kinds), figsize=(min(plots.MAX_WIDTH_IN, 5.2 * len(kinds) + 1.6), 3.3), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        info = kind_info(kind)
        draw_series(ax, {f"{stage} ({key})": pts for (stage, key), pts in groups[kind].items()},
                    stage_colours(stages), smooth=True)
        ax.set(title=info.title, xlabel="step (all stages)", ylabel=info.ylabel)
        ax.grid(alpha=0.3)
        plots.legend_outside(ax)
    return plots.save(fig, path)
