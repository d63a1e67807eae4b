"""Language / domain groups of documents, and kept shares per group for a step's stats.

A document's language is meta["lang"] (the langid step writes it), else detected with
py3langid; its domain is meta["domain"] (the corpus builder and most readers set it),
else "?" (unknown). Steps that judge documents relative to their kind (quality, topics)
report, in their stats.json:

    "by_lang":   {"en": {"in": {"docs", "bytes"}, "kept": {"docs", "bytes"}, "kept_share": f}, ...}
    "by_domain": {"code": {...}, "prose": {...}, "?": {...}}

`kept_share` is kept docs / in docs. Each step writes one JSON file of counts per shard
under work/ (so resumed and parallel shards add up) and sums them when it finishes.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from lmforge.io.atomic import write_json

UNKNOWN = "?"


def doc_lang(doc: dict) -> str:
    lang = (doc.get("meta") or {}).get("lang")
    if lang:
        return str(lang)
    from .langid import detect

    return detect(doc["text"])[0] if doc["text"].strip() else UNKNOWN


def doc_domain(doc: dict) -> str:
    return str((doc.get("meta") or {}).get("domain") or UNKNOWN)


class GroupCounts:
    """in/kept docs and bytes per value of several keys (e.g. lang, domain, group)."""

    def __init__(self):
        self.counts: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0, 0, 0]))

    def add(self, keys: dict[str, str], nbytes: int, kept: bool) -> None:
        for axis, value in keys.items():
            c = self.counts[axis][value]
            c[0] += 1
            c[1] += nbytes
            c[2] += int(kept)
            c[3] += nbytes if kept else 0

    def merge(self, other: "GroupCounts") -> None:
        for axis, vals in other.counts.items():
            for v, c in vals.items():
                mine = self.counts[axis][v]
                for i in range(4):
                    mine[i] += c[i]

    def to_dict(self) -> dict:
        return {axis: {v: {"in": {"docs": c[0], "bytes": c[1]}, "kept": {"docs": c[2], "bytes": c[3]},
                           "kept_share": round(c[2] / c[0], 4) if c[0] else None}
                       for v, c in sorted(vals.items())}
                for axis, vals in sorted(self.counts.items())}

    def save(self, path: Path) -> None:
        write_json(path, {a: dict(v) for a, v in self.counts.items()}, indent=None)

    @classmethod
    def load(cls, path: Path) -> "GroupCounts":
        g = cls()
        for axis, vals in json.loads(Path(path).read_text()).items():
            for v, c in vals.items():
                g.counts[axis][v] = list(c)
        return g


def sum_counts(folder: Path, pattern: str) -> dict:
    """Sum the per-shard count files matching `pattern` under `folder` -> {axis: {...}}."""
    total = GroupCounts()
    for p in sorted(Path(folder).glob(pattern)):
        total.merge(GroupCounts.load(p))
    return total.to_dict()
