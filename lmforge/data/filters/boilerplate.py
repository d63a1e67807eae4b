"""Boilerplate lines (cookie banners, "all rights reserved", navigation words).

Matching lines are removed from the document (C4-style line cleaning); a document
whose lines are mostly boilerplate is dropped as a whole ("boilerplate").
"""
from __future__ import annotations

import re


class Boilerplate:
    def __init__(self, cfg):
        self.cfg = cfg
        self.patterns = [re.compile(p) for p in cfg.boilerplate_patterns]

    def __call__(self, text: str) -> tuple[str, str | None]:
        """(cleaned text, reason or None)."""
        if not self.patterns:
            return text, None
        lines = text.split("\n")
        nonempty = [l for l in lines if l.strip()]
        bad = [any(p.search(l) for p in self.patterns) for l in lines]
        n_bad = sum(bad)
        if not n_bad:
            return text, None
        limit = self.cfg.max_boilerplate_line_ratio
        if limit is not None and nonempty and n_bad / len(nonempty) > limit:
            return text, "boilerplate"
        if self.cfg.remove_boilerplate_lines:
            text = "\n".join(l for l, b in zip(lines, bad) if not b)
        return text, None
