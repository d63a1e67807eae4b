"""JSON lines read one way everywhere: bytes in, and every line either a value or one
counted reject, never an exception that ends the file.

`json.loads` raises more than JSONDecodeError on hostile lines: a 5000-digit integer raises
ValueError (CPython's int-string limit, 4300 digits) and a deeply nested `[[[[...` line
RecursionError. Both are caught here, so one bad line costs that line only. Lines are read
as bytes and decoded here, so invalid UTF-8 is a reject too (a text-mode reader would stop
the whole file with UnicodeDecodeError), and a UTF-8 byte-order mark at the start of the
file (editors on Windows write one) is dropped instead of costing the first record.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterator

from . import lines

BOM = lines.BOM
PARSE_ERRORS = (ValueError, RecursionError)   # JSONDecodeError is a ValueError


class NonFinite(ValueError):
    """A number JSON cannot hold: NaN / Infinity literals, or a float literal past the range of
    a double (`1.1e99999` reads as inf, and would be written back out as `Infinity`)."""


def _finite(text: str) -> float:
    value = float(text)
    if value in (math.inf, -math.inf):
        raise NonFinite(f"number {text[:40]} is out of range (not finite)")
    return value


def _no_constant(text: str):
    raise NonFinite(f"{text} is not a JSON number")


def loads_strict(text: str | bytes) -> Any:
    """json.loads that refuses non-finite numbers (NonFinite), so what is read can be written
    back out as strict JSON."""
    return json.loads(text, parse_float=_finite, parse_constant=_no_constant)


def dumps_strict(obj: Any) -> str:
    """json.dumps that never writes NaN / Infinity: a non-finite float becomes its string."""
    try:
        return json.dumps(obj, ensure_ascii=False, allow_nan=False)
    except ValueError:
        return json.dumps(_finite_tree(obj), ensure_ascii=False, allow_nan=False)


def _finite_tree(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _finite_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_tree(v) for v in obj]
    return obj


def strip_bom(raw: bytes) -> bytes:
    return raw[len(BOM):] if raw.startswith(BOM) else raw


def parse_error(e: BaseException) -> str:
    """A short description of why a line is not JSON."""
    if isinstance(e, RecursionError):
        return "invalid JSON: nested too deeply"
    return f"invalid JSON: {str(e)[:200]}"


def parse_line(raw: bytes) -> tuple[Any, str | None, str]:
    """(value, None, "") for a JSON line, else (None, reason, detail) with reason
    `invalid_utf8` or `malformed_json`."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, "invalid_utf8", f"invalid UTF-8: {e.reason} at byte {e.start}"
    try:
        return json.loads(text), None, ""
    except PARSE_ERRORS as e:
        return None, "malformed_json", parse_error(e)


def iter_lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, bytes without the newline) of each non-blank line of a plain,
    .gz or .zst file; a damaged compressed file raises DataError naming the file and line."""
    from .account import DataError
    for line in lines.iter_lines(path):
        if line.problem is not None:
            raise DataError(f"{path}:{line.number}: {line.detail}")
        yield line.number, line.raw


def iter_records(path: str | Path, max_line_bytes: int | None = None
                 ) -> Iterator[tuple[int, bytes, Any, str | None, str]]:
    """(line number, raw bytes, value, reason, detail) per non-blank line; see parse_line.
    Besides its reasons: `too_long` (a line over max_line_bytes, never held whole: raw is its
    beginning) and `unreadable` (the line lost to damage in a compressed file, lmforge.io.lines)."""
    for line in lines.iter_lines(path, max_line_bytes):
        if line.problem is not None:
            yield line.number, line.raw, None, line.problem, line.detail
            continue
        value, reason, detail = parse_line(line.raw)
        yield line.number, line.raw, value, reason, detail
