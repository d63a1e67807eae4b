"""A report section: a title, an intro line and blocks (paragraphs, images, tables)."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field


@dataclass
class Section:
    id: str
    title: str
    intro: str = ""
    blocks: list = field(default_factory=list)   # str (paragraph), Path (image), Table


def slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", s).strip("_") or "x"


def last(records: list[dict], key: str):
    for r in reversed(records):
        v = r.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            return v
    return None
