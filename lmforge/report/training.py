"""The report's Training section: losses by kind, DPO rewards and pair filters, LR / gradient
norm / throughput, validation loss by domain against baselines, and the held-out loss at
the end of every stage (the change each stage bought)."""
from __future__ import annotations

from pathlib import Path

from lmforge.report import trainplots
from lmforge.report.baselines import token_baselines
from lmforge.report.collect import StageFolder
from lmforge.report.kinds import lm_loss_key
from lmforge.report.section import Section, last, slug
from lmforge.report.tables import Table
from lmforge.report.units import Count, Share

OBJECTIVE_LABEL = {"lm": "LM loss (nats/token)", "dpo": "DPO loss (per pair)",
                   "selfknow": "C-RLFT weighted loss"}


def val_baselines(stages: list[StageFolder]) -> dict | None:
    """Unigram / uniform losses on all validation documents of the first LM training stage's
    token data (the documents the trainer's validation draws from)."""
    for st in stages:
        data = (st.config or {}).get("data")
        if st.train_records and trainplots.stage_objective(st) == "lm" and isinstance(data, str) and data:
            b = token_baselines(data, "val", 0)
            if b:
                return b
    return None


def _mixture_bounds(st: StageFolder) -> list[tuple[str, int]]:
    """(mixture stage name, last step) of a pretraining curriculum (config.json stages)."""
    out, end = [], 0
    for i, s in enumerate((st.config or {}).get("stages") or []):
        if isinstance(s, dict) and isinstance(s.get("steps"), int):
            end += s["steps"]
            out.append((s.get("name") or f"stage{i}", end))
    return out if len(out) > 1 else []


def progress_points(stages: list[StageFolder]) -> list[tuple[str, dict]]:
    """(column label, {domain: held-out loss}) at the end of each training stage (and of each
    mixture stage of a curriculum), from the val/<domain> records of metrics.jsonl."""
    cols = []
    for st in stages:
        vals = [r for r in st.metrics if any(k.startswith("val/") for k in r)]
        if not vals or trainplots.stage_objective(st) != "lm":
            continue
        bounds = _mixture_bounds(st) or [("", int(max(r["step"] for r in st.metrics)))]
        start = 0
        for name, end in bounds:
            inside = [r for r in vals if start < r["step"] <= end]
            start = end
            if not inside:
                continue
            r = inside[-1]
            losses = {k[4:]: v for k, v in r.items() if k.startswith("val/") and not k.endswith("ppl")
                      and isinstance(v, (int, float))}
            cols.append((f"{st.name}{'/' + name if name else ''} (step {r['step']})", losses))
    return cols


def progress_table(stages: list[StageFolder], base: dict | None, final_eval: tuple[str, dict] | None) -> Table | None:
    cols = progress_points(stages)
    if final_eval:
        cols.append(final_eval)
    if not cols:
        return None
    domains = sorted({d for _, c in cols for d in c}, key=lambda d: (d == "mean", d))
    headers = ["held-out loss (nats/token)"]
    if base:
        headers += ["untrained (ln V)", "unigram"]
    headers += [label for label, _ in cols]
    t = Table("Progress by stage: held-out loss against baselines", headers,
              note="Each stage column: the loss at the stage's last validation (change against the previous "
                   "column in brackets; lower is better). Untrained: ln V, what a freshly initialised model "
                   "scores; unigram: each token predicted by its frequency in the training data, on the same "
                   "domain's validation documents. Below the unigram loss, the model has learned more than "
                   "token frequencies." + (" The eval column scores the eval stage's own documents and "
                                            "context length, so its change is indicative." if final_eval else ""),
              why={"unigram": "the token data of the training stages was not found"})
    unigram = {d: v["loss"] for d, v in (base or {}).get("domains", {}).items()}
    if base and unigram:
        unigram["mean"] = sum(unigram.values()) / len(unigram)
    names = {"sft_loss": "SFT replies", "mean": "mean of domains"}
    for d in domains:
        row: list = [names.get(d, d)]
        prev = None
        if base:
            row += [base["uniform"], unigram.get(d)]
            prev = unigram.get(d)
        for _, c in cols:
            v = c.get(d)
            row.append(None if v is None else (f"{v:.3f}" + (f" ({v - prev:+.3f})" if prev is not None else "")))
            prev = v if v is not None else prev
        t.rows.append(row)
    return t


def stage_table(train: list[StageFolder]) -> Table:
    t = Table("Per stage", ["stage", "objective", "steps", "first loss", "final loss", "final lr",
                            "median tokens/s", "tokens seen", "skipped (non-finite) steps"],
              note="first/final loss: the stage's own objective (column 'objective'); LM losses in nats/token.")
    for st in train:
        recs = st.train_records
        tps = sorted(r["tokens_per_s"] for r in recs if isinstance(r.get("tokens_per_s"), (int, float)))
        obj = trainplots.stage_objective(st)
        seen = last(recs, "tokens_seen")
        t.rows.append([st.name, OBJECTIVE_LABEL[obj], last(recs, "step"), recs[0].get("loss"), last(recs, "loss"),
                       last(recs, "lr"), Count(int(tps[len(tps) // 2])) if tps else None,
                       Count(int(seen)) if seen is not None else None, sum(1 for r in recs if r.get("skipped"))])
    return t


def filter_table(st: StageFolder) -> Table | None:
    """What a training stage dropped from its data (stats.json `pairs` for DPO, `conversations`
    for SFT / C-RLFT): read, kept, and each reason."""
    stats = st.stats or {}
    for key, unit in (("pairs", "pairs"), ("conversations", "conversations")):
        c = stats.get(key)
        if isinstance(c, dict) and isinstance(c.get("records"), int) and "kept" in c:
            n = c["records"]
            t = Table(f"{st.name}: {unit} read, kept and dropped by reason", [unit, "count", "share of read"])
            t.rows.append(["read", n, Share(1.0) if n else None])
            t.rows.append(["kept", c["kept"], Share(c["kept"] / n) if n else None])
            zero = []
            for reason, v in c.items():
                if reason not in ("records", "kept") and isinstance(v, int):
                    if v:
                        t.rows.append([f"dropped: {reason}", v, Share(v / n) if n else None])
                    else:
                        zero.append(reason)
            extra = [f"{k.replace('_', ' ')} {stats[k]:,}" for k in (f"train_{key}", f"val_{key}", "planned_steps")
                     if isinstance(stats.get(k), int)]
            if zero:
                extra.append(f"none dropped as {', '.join(zero)}")
            step0 = stats.get("step0")
            if isinstance(step0, dict) and "max_abs_margin" in step0:
                extra.append(f"margin before the first update {step0['max_abs_margin']:.2g} (must be ~0: the "
                             f"policy starts as the reference)")
            t.note = "; ".join(extra)
            return t
    return None


def training_section(stages: list[StageFolder], out: Path, final_eval: tuple[str, dict] | None = None,
                     base: dict | None = None, reference: tuple[str, dict] | None = None) -> Section | None:
    """reference: (file name, {stage: curves}) of a clean run of the recipe (report.reference)."""
    train = [s for s in stages if s.train_records]
    if not train:
        return None
    sec = Section("training", "Training",
                  "Each quantity on its own axis: the language-model loss (nats/token) of pretraining, SFT and "
                  "C-RLFT; DPO's preference loss, rewards and accuracy apart; learning rate, gradient norm and "
                  "throughput; validation loss by domain against an untrained and a unigram model. The x axis "
                  "counts steps over all training stages in order; dashed lines mark where a stage starts.")
    ref_name, ref = reference or ("", {})
    if ref:
        sec.blocks.append(f"Black dash-dot: the reference run of this recipe ({ref_name}, kept in the repository and "
                          f"checked by scripts/reference_curves.py), on this run's stage offsets; a curve far from it "
                          f"means a setting, the data or a technique behaves differently.")
    if any(lm_loss_key(trainplots.stage_objective(s)) for s in train):
        p = trainplots.training_loss(stages, out / "train_loss.png",
                                     {k: c.get("train") for k, c in ref.items()}, ref_name)
        if p:
            sec.blocks.append(p)
    base = base or val_baselines(stages)
    unigram = {d: v["loss"] for d, v in (base or {}).get("domains", {}).items()}
    v = trainplots.validation(stages, out / "val_loss.png", unigram, (base or {}).get("uniform"),
                              {k: (c.get("val") or {}).get("val/mean") for k, c in ref.items()}, ref_name)
    if v:
        sec.blocks.append("Per-domain validation loss on held-out documents (Skywork monitors these to catch a "
                          "domain that stops improving, or a leak: a sudden drop on one domain). Dotted: the "
                          "unigram model on the same domain; below it, the model knows more than token "
                          "frequencies.")
        sec.blocks.append(v)
    t = progress_table(stages, base, final_eval)
    if t:
        sec.blocks.append(t)
    for st in train:
        if trainplots.stage_objective(st) == "dpo":
            p = trainplots.dpo(st, out / f"dpo_{slug(st.name)}.png")
            if p:
                sec.blocks.append(f"{st.name}: DPO loss (ln 2 = 0.693 where the policy equals the reference), the "
                                  f"implicit rewards beta x log(pi/pi_ref) of the chosen and rejected replies and "
                                  f"their margin, and the share of pairs whose chosen reply is preferred.")
                sec.blocks.append(p)
    for st in train:
        ft = filter_table(st)
        if ft:
            sec.blocks.append(ft)
    p = trainplots.other_objectives(stages, out / "train_other.png")
    if p:
        sec.blocks.append("Other objectives' own losses (C-RLFT weights each conversation by its class; its "
                          "plain cross-entropy is in the LM loss plot above).")
        sec.blocks.append(p)
    p = trainplots.dynamics(stages, out / "train_dynamics.png")
    if p:
        sec.blocks.append(p)
    sec.blocks.append(stage_table(train))
    return sec
