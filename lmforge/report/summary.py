"""The report's headlines: one line per part of the run, each number beside what it is read
against (unigram / untrained loss, chance, sampling noise), at the top of the page."""
from __future__ import annotations

from lmforge.report import mixstats, needleplot
from lmforge.report.collect import StageFolder
from lmforge.report.evalsection import eval_baselines
from lmforge.report.trainplots import stage_objective
from lmforge.report.units import human_bytes, human_count


class Bullets(list):
    """A block of short lines, rendered as a list."""


def _data_line(st: StageFolder) -> str | None:
    steps = st.data_steps
    if not steps:
        return None
    first, last = steps[0]["in"], steps[-1]["kept"]
    worst = max(steps, key=lambda s: s["in"]["docs"] - s["kept"]["docs"])
    lost = worst["in"]["docs"] - worst["kept"]["docs"]
    share = lambda a, b: f"{a / b:.0%}" if b else "-"   # noqa: E731
    return (f"Data ({st.name}): {first['docs']:,} documents ({human_bytes(first['bytes'])}) read, "
            f"{last['docs']:,} ({human_bytes(last['bytes'])}) kept: {share(last['docs'], first['docs'])} of the "
            f"documents, {share(last['bytes'], first['bytes'])} of the bytes; the step that removed most: "
            f"{worst.get('step', worst['dir'])} ({lost:,} documents).")


def _training_line(stages: list[StageFolder], base: dict | None) -> str | None:
    train = [s for s in stages if s.train_records]
    if not train:
        return None
    steps = sum(int(max(r["step"] for r in s.train_records)) for s in train)
    tokens = sum(int(next((r["tokens_seen"] for r in reversed(s.train_records) if "tokens_seen" in r), 0))
                 for s in train)
    vals = [(s.name, r["val/mean"]) for s in train for r in s.metrics if isinstance(r.get("val/mean"), float)]
    line = f"Training: {len(train)} stages, {steps:,} steps, {human_count(tokens)} tokens."
    if vals:
        line += (f" Mean held-out loss {vals[0][1]:.3f} at the first validation ({vals[0][0]}) -> "
                 f"{vals[-1][1]:.3f} at the last ({vals[-1][0]}) nats/token")
        if base and base.get("domains"):
            uni = sum(v["loss"] for v in base["domains"].values()) / len(base["domains"])
            line += f"; unigram model {uni:.3f}, untrained {base['uniform']:.3f}"
        line += "."
    for s in train:
        if stage_objective(s) == "dpo":
            acc = [r["accuracy_sum"] for r in s.train_records if isinstance(r.get("accuracy_sum"), (int, float))]
            mar = [r["margin_sum"] for r in s.train_records if isinstance(r.get("margin_sum"), (int, float))]
            if acc and mar:
                k = max(1, len(acc) // 4)
                line += (f" DPO ({s.name}): preference accuracy {sum(acc[-k:]) / k:.2f} over the last {k} steps "
                         f"(0.5 = coin flip), reward margin {sum(mar[-k:]) / k:+.3f}.")
    return line


def _eval_line(st: StageFolder) -> str | None:
    ev = st.eval or {}
    parts = []
    ppl = ((ev.get("perplexity") or {}).get("domains") or {}).get("all")
    if ppl:
        base = eval_baselines(ev)
        txt = f"held-out loss {ppl['loss']:.3f} nats/token"
        if base and base.get("all") and base["all"]["tokens"] == ppl["tokens"]:
            txt += (f" (unigram {base['all']['loss']:.3f}: {ppl['loss'] - base['all']['loss']:+.3f}; "
                    f"untrained {base['uniform']:.3f})")
        parts.append(txt)
    above, total = [], 0
    for name, s in (ev.get("mcq") or {}).items():
        for k, r in (s.get("results") or {}).items():
            total += 1
            se, ch = r.get("acc_norm_stderr"), r.get("chance")
            if ch is not None and se and r.get("acc_norm") is not None and r["acc_norm"] - ch > 2 * se:
                above.append(f"{name} {k}-shot {r['acc_norm']:.2f} vs {ch:.2f}")
    if total:
        parts.append(f"multiple choice above chance by more than 2 se in {len(above)} of {total} "
                     f"set/shot rows" + (f" ({'; '.join(above)})" if above else ""))
    if not parts:
        return None
    return f"Eval ({st.name}, {needleplot.checkpoint_label(ev.get('checkpoint', '?'))}): " + "; ".join(parts) + "."


def _needle_line(st: StageFolder) -> str | None:
    s = (st.needle or {}).get("summary")
    if not s:
        return None
    c = needleplot.chance(st.needle)
    return (f"Needle ({st.name}, {needleplot.checkpoint_label(st.needle.get('checkpoint', '?'))}): exact retrieval "
            f"{s.get('exact', 0):.0%}, value ranked first {s.get('rank_acc', 0):.0%}"
            + (f" (chance {c:.0%})" if c else "") + ".")


def _mixture_line(stages: list[StageFolder]) -> str | None:
    flagged, compared = [], 0
    for st in stages:
        if not st.mixture:
            continue
        for c in mixstats.compare(st.dir, st.mixture):
            for r in c["rows"]:
                if r["sd"] is not None and r["target"] is not None:
                    compared += 1
                    if (r["verdict"] or "").startswith(("beyond", "unusual")):
                        flagged.append(f"{st.name}/{c['stage']} {r['domain']} {r['realised']:.1%} vs "
                                       f"{r['target']:.1%} ({r['verdict']})")
    if not compared:
        return None
    if not flagged:
        return f"Mixture: all {compared} realised domain shares are within sampling noise of their targets."
    return f"Mixture: {len(flagged)} of {compared} shares outside 2 sd of the target: " + "; ".join(flagged) + "."


def headlines(stages: list[StageFolder], problems: list[str], base: dict | None = None) -> Bullets:
    lines = Bullets()
    for st in stages:
        if st.data_steps:
            lines.append(_data_line(st))
    lines.append(_training_line(stages, base))
    lines.append(_mixture_line(stages))
    for st in stages:
        if st.eval:
            lines.append(_eval_line(st))
        if st.needle:
            lines.append(_needle_line(st))
    missing = [st.name for st in stages if st.status in ("missing", "pending", "failed")]
    if missing:
        lines.append(f"Not run or without output: {', '.join(missing)}.")
    if problems:
        lines.append(f"{len(problems)} problem(s) reading the run folder: listed at the end.")
    return Bullets(x for x in lines if x)
