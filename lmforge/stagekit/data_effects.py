"""The data stage's effect: its dedup and junk filters scored against planted truth.

The corpus stage's `plant:` writes documents with meta.planted = "duplicate" (an edited copy
of a corpus document, meta.planted_of its original) or "junk" (lmforge.corpus.planted). The
pipeline keeps each step's surviving documents (OUT/NN-step/kept/), so which step removed
which planted document is read back from them. Four rates, each a lmforge.eval.effect
rate_effect against what removing the same number of documents at random would score:

- dedup recall: planted copies removed by the dedup steps (minhash, substring), of the copies
  that reached the first dedup step with their original (a copy without its original is no
  longer a duplicate); chance = the dedup steps' removal rate;
- dedup precision: planted copies among all documents the dedup steps removed; chance = the
  copies' share of the dedup input. The sample's own duplicates count against it (they are
  not planted), so it is a lower bound;
- junk recall: planted junk removed by the cleaning steps before dedup (extract, filters,
  langid, quality); chance = those steps' removal rate;
- junk precision: planted junk among all documents the cleaning steps removed; chance = the
  junk's share of the input. The cleaning steps also remove short poems, lists and the like
  from the sample, which count against it: a lower bound again.
"""
from __future__ import annotations

from pathlib import Path

from lmforge.eval.effect import rate_effect

DEDUP = ("minhash", "substring")
CLEANING = ("extract", "filters", "langid", "quality")
RANDOM = "; before: as many documents removed at random"


def step_ids(step_dir: Path) -> tuple[set[str], dict[str, dict]]:
    """(ids of the documents a step kept, {id: meta} of the planted ones among them)."""
    from lmforge.data.pipeline import iter_shard, kept_shards

    ids, planted = set(), {}
    for shard in kept_shards(step_dir):
        for doc in iter_shard(shard):
            ids.add(doc["id"])
            if (doc.get("meta") or {}).get("planted"):
                planted[doc["id"]] = doc["meta"]
    return ids, planted


def _removed(kept: list[set[str]], names: list[str], which: tuple[str, ...]) -> tuple[set[str], int]:
    """(ids removed by the steps in `which`, index of the first such step's input), from the kept
    sets of "read" and each step in order (kept[i] = after names[i])."""
    gone, first = set(), None
    for i, name in enumerate(names):
        if name in which and i > 0:
            first = i - 1 if first is None else first
            gone |= kept[i - 1] - kept[i]
    return gone, first


def planted_effect(out: Path, summary: dict) -> dict | None:
    """The data stage's effect dict (dedup recall headline; precision and junk in `more`) and a
    per-step account of the planted documents under "planted"; None when nothing was planted."""
    names = [s["step"] for s in summary["steps"]]
    kept, planted = [], {}
    for i, name in enumerate(names):
        ids, p = step_ids(out / f"{i:02d}-{name}")
        kept.append(ids)
        planted.update(p)
    if not planted:
        return None
    dups = {k for k, m in planted.items() if m["planted"] == "duplicate"}
    junk = {k for k, m in planted.items() if m["planted"] == "junk"}
    rows, by_edit = [], {}
    gone, first = _removed(kept, names, DEDUP)
    if first is not None:
        pool = kept[first]
        live = {k for k in dups & pool if planted[k].get("planted_of") in pool}
        for k in live:   # recall by edit rate: MinHash's threshold is a Jaccard, which edits lower fast
            b = by_edit.setdefault("edit <= 3%" if planted[k].get("edit", 0) <= 0.03 else "edit > 3%", [0, 0])
            b[0] += k in gone
            b[1] += 1
        rows.append(rate_effect("dedup recall: planted near-duplicates removed by " + "+".join(
            n for n in names if n in DEDUP) + RANDOM, len(live & gone), len(live), len(gone) / max(len(pool), 1)))
        rows.append(rate_effect("dedup precision (lower bound): planted duplicates among the dedup removals" + RANDOM,
                                len(dups & gone), len(gone), len(dups & pool) / max(len(pool), 1)))
    gone, first = _removed(kept, names, CLEANING)
    if first is not None:
        pool = kept[first]
        rows.append(rate_effect("junk recall: planted junk pages removed by " + "+".join(
            n for n in names if n in CLEANING) + RANDOM, len(junk & pool & gone), len(junk & pool),
            len(gone) / max(len(pool), 1)))
        rows.append(rate_effect("junk precision (lower bound): planted junk among the cleaning removals" + RANDOM,
                                len(junk & gone), len(gone), len(junk & pool) / max(len(pool), 1)))
    if not rows:
        return None
    account = {"duplicates": len(dups), "junk": len(junk), "dedup_recall_by_edit": by_edit, "kept_after": {
        name: {"duplicates": len(dups & kept[i]), "junk": len(junk & kept[i])} for i, name in enumerate(names)}}
    return {**rows[0], "more": rows[1:], "planted": account}
