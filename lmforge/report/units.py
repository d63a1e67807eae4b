"""Numbers as a reader wants them: bytes in kB/MB/GB, counts in k/M, floats to a few
significant digits (never 16), and matplotlib tick formatters that do the same, so an axis
reads "1.5 MB" instead of "1.5" with a "1e6" offset in the corner.

Table cells carry their unit by type: `Bytes(1_681_255)` prints "1.68 MB", `Count(24_576)`
"24.6k", `Share(0.052)` "5.2%"; a plain float prints rounded (`num`)."""
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


def human_bytes(n, sig: int = 3) -> str:
    if not _finite(n):
        return "-"
    for scale, unit in _BYTE_UNITS:
        if abs(n) >= scale:
            return f"{num(n / scale, sig)} {unit}"
    return f"{int(n)} B"


def human_count(n, sig: int = 3) -> str:
    if not _finite(n):
        return "-"
    for scale, unit in _COUNT_UNITS:
        if abs(n) >= scale:
            return f"{num(n / scale, sig)}{unit}"
    return num(n, sig) if isinstance(n, float) else f"{int(n)}"


def percent(x, digits: int = 1) -> str:
    return "-" if not _finite(x) else f"{100 * x:.{digits}f}%"


class Bytes(int):
    """A table cell that prints as 1.68 MB."""

    def __str__(self) -> str:
        return human_bytes(int(self))


class Count(int):
    """A table cell that prints as 24.6k (tokens, steps seen)."""

    def __str__(self) -> str:
        return human_count(int(self))


class Share(float):
    """A table cell that prints as 5.2%."""

    def __str__(self) -> str:
        return percent(float(self))


def bytes_formatter():
    import matplotlib.ticker as mt

    return mt.FuncFormatter(lambda v, _pos: "0" if v == 0 else human_bytes(v, 2))


def count_formatter():
    import matplotlib.ticker as mt

    return mt.FuncFormatter(lambda v, _pos: "0" if v == 0 else human_count(v, 2))


def percent_formatter():
    import matplotlib.ticker as mt

    return mt.FuncFormatter(lambda v, _pos: f"{100 * v:.0f}%")
