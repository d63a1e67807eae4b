"""Numbers as a reader wants them: bytes in kB/MB/GB, counts in k/M, floats to a few
significant digits (never 16), and matplotlib tick formatters that do the same, so an axis
reads "1.5 MB" instead of "1.5" with a "1e6" offset in the corner.

Table cells carry their unit by type: `Bytes(1_681_255)` prints "1.68 MB", `Count(24_576)`
"24.6k", `Share(0.052)` "5.2%"; a plain float prints rounded (`num`). The plain-number
formatting lives in lmforge/numfmt.py (base layer), so the command line prints sizes the same way."""
from __future__ import annotations

from lmforge.numfmt import _finite, human_bytes, human_count, num  # noqa: F401  (re-exported)


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
