"""The "What each stage did" section: every stage's before/after effect (the `effect` its
DONE.json holds, written by lmforge.eval.effect.paired_effect: the stage's input model vs its
output model on held-out items, paired) as one table row per metric. A stage without an
effect is listed as such, so a missing measurement never reads as a silent pass."""
from __future__ import annotations

from lmforge.report.collect import StageFolder
from lmforge.report.section import Section
from lmforge.report.tables import Table, fmt

# stages that can show a gain: those that train, choose or filter something, and the scoring
# stages whose items have a chance level (eval's multiple choice, needle's ranking): the count's
# denominator. grow is measured but not counted: depth up-scaling should keep the model's loss
# ("within noise" is its success); its gain is the grown model's, after continued pretraining.
CAN_GAIN = ("data", "pretrain", "longctx", "sftgrid", "sft", "dpo", "selfknow", "longsft", "eval", "needle")
MEASURED = CAN_GAIN + ("grow",)


def effect_rows(name: str, effect: dict) -> list[list]:
    rows = []
    for i, e in enumerate([effect, *(effect.get("more") or [])]):
        d, se = e.get("delta"), e.get("stderr")
        change = f"{fmt(d)} ± {fmt(2 * se)}" if isinstance(d, float) and isinstance(se, float) else fmt(d)
        better = "higher" if e.get("higher_is_better") else "lower"
        # the long metric text last: the page's tables wrap only their last column
        rows.append([name if i == 0 else "", e.get("before"), e.get("after"), change, e.get("n"), e.get("verdict"),
                     f"{e.get('metric')} ({better} is better)"])
    return rows


def effects_section(stages: list[StageFolder]) -> Section | None:
    with_effect = [s for s in stages if isinstance((s.done or {}).get("effect"), dict)]
    missing = [s.name for s in stages if s not in with_effect and (s.kind or s.name) in MEASURED and s.done]
    counted = [s for s in stages if s.done and (s.kind or s.name) in CAN_GAIN]
    if not with_effect:   # a run from before effects were measured: no section (nothing to compare)
        return None
    sec = Section("effects", "What each stage did",
                  "Each stage's input model against its output model on held-out items it did not train on, "
                  "the same items scored by both (paired). change = after - before ± 2 standard errors of "
                  "the paired change; verdict: gain / loss when the change exceeds 2 standard errors in "
                  "that direction, else within noise.")
    gains = [s.name for s in counted if s in with_effect and s.done["effect"].get("verdict") == "gain"]
    t = Table(f"Before / after: {len(gains)} of {len(counted)} stages show a gain beyond noise",
              ["stage", "before", "after", "change ± 2 se", "n", "verdict", "metric"])
    for s in with_effect:
        t.rows += effect_rows(s.name, s.done["effect"])
    sec.blocks.append(t)
    sec.blocks.append(count_note(counted, gains, with_effect))
    if missing:
        sec.blocks.append("No before/after measurement recorded for: " + ", ".join(missing) + ".")
    return sec


def count_note(counted: list[StageFolder], gains: list[str], with_effect: list[StageFolder]) -> str:
    """What the header's count counts: each stage's headline (first) row only."""
    rest = [s.name for s in counted if s.name not in gains]
    aside = [s.name for s in with_effect if s not in counted]
    return (f"The count takes each stage's first row (its headline); {len(counted)} stages can show a gain: "
            f"those that train, choose or filter, and eval / needle against chance. "
            + (f"No gain beyond noise: {', '.join(rest)}. " if rest else "")
            + (f"Shown, not counted: {', '.join(aside)} (growth should keep the loss: within noise is its "
               f"success)." if aside else ""))
