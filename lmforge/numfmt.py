"""Numbers as a reader wants them, for every layer: bytes in kB/MB/GB, counts in k/M, floats to
a few significant digits (never 16). The report's typed table cells and axis formatters
(lmforge/report/units.py) and the command line's sizes (the fetch cache) print through these."""
from __future__ import annotations

import math

_BYTE_UNITS = ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB"))
_COUNT_UNITS = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def num(x, sig: int = 4) -> str:
    """A float to `sig` significant digits, no trailing zeros beyond them: 6.479, 0.7147,
    4087, 2e-05; a very large one with a thousands separator (1,234,568)."""
    if not _finite(x):
        return "-"
    if x == 0:
        return "0"
    mag = math.floor(math.log10(abs(x)))
    if mag < -3:
        return f"{x:.{sig - 1}g}"
    if mag >= sig - 1:
        return f"{round(x):,}"
    out = f"{x:.{sig - 1 - mag}f}"
    if abs(x) < 1:                     # 0.2500 -> 0.25 (a chance level, a threshold)
        out = out.rstrip("0").rstrip(".")
    return out


def _scaled(n, units, sig: int, sep: str) -> str | None:
    for scale, unit in units:
        if abs(n) >= scale:
            return f"{num(n / scale, sig)}{sep}{unit}"
    return None


def human_bytes(n, sig: int = 3) -> str:
    if not _finite(n):
        return "-"
    return _scaled(n, _BYTE_UNITS, sig, " ") or f"{int(n)} B"


def human_count(n, sig: int = 3) -> str:
    if not _finite(n):
        return "-"
    return _scaled(n, _COUNT_UNITS, sig, "") or (num(n, sig) if isinstance(n, float) else f"{int(n)}")
