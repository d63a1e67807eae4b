"""Heuristic filters step: boilerplate line removal, then length / shape / repetition rules.

Each rule has a named reason (see heuristics.py, repetition.py, boilerplate.py) and
thresholds in FilterConfig; a null threshold disables a rule.
"""
from __future__ import annotations

from ..pipeline import Step
from .boilerplate import Boilerplate
from .heuristics import RULES, View
from .repetition import repetition

ALL_RULES = [*RULES, repetition]


def check_text(text: str, cfg, boilerplate: Boilerplate | None = None) -> tuple[str, str | None]:
    """Apply all filters to one text: (possibly cleaned text, reason to drop or None)."""
    boilerplate = boilerplate or Boilerplate(cfg)
    text, reason = boilerplate(text)
    if reason:
        return text, reason
    v = View(text)
    for rule in ALL_RULES:
        reason = rule(v, cfg)
        if reason:
            return text, reason
    return text, None


class FilterStep(Step):
    modified_reason = "boilerplate_lines"

    def open_shard(self, ctx, index):
        bp = Boilerplate(self.cfg)

        def apply(i, doc):
            text, reason = check_text(doc["text"], self.cfg, bp)
            if reason:
                return None, reason
            doc["text"] = text
            return doc, None
        return apply
