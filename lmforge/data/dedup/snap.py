"""Code-safe application of found substring spans: snap to whole lines, keep Python parseable.

Exact-substring dedup finds repeated byte spans anywhere (substring.py); cutting them out
of prose is harmless, but in code a cut that starts or ends mid-line joins two fragments
(`xrayudef test_endian_int`) and a file that parsed no longer does (issue 35: 1,201 of
1,608 standard-library files parsed before the step, 94 after). This module only decides
which parts of the FOUND spans are removed, so span finding can change (e.g. for scale)
without touching it.

For a document of a line domain (`SubstringConfig.line_domains`, default code):
  1. each span shrinks to the complete lines inside it (a line ends with "\\n" or at the
     end of the document); a span that holds no complete line removes nothing;
  2. when the document parsed as Python before, each snapped span is removed only if the
     file still parses without it (spans tried in order, each on the text left by the ones
     accepted before); a span that breaks it shrinks to the whole top-level statements
     (and comment / blank lines) inside it, else it stays;
  3. a document whose FOUND spans cover more than `max_repeated_share` of its bytes is
     mostly a copy of earlier text: it is dropped whole (`substring_code_repeated`), which
     is what a line-snapped remainder of it would be worth.
"""
from __future__ import annotations

import ast
import bisect
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

Span = tuple[int, int]


def line_spans(data: bytes, spans: list[Span]) -> list[Span]:
    """Each [s, e) shrunk to the complete lines inside it; spans left empty are dropped."""
    out = []
    n = len(data)
    for s, e in spans:
        if s > 0 and data[s - 1] != 0x0A:          # starts mid-line: from the next line on
            nl = data.find(b"\n", s, e)
            if nl < 0:
                continue
            s = nl + 1
        if e < n and data[e - 1] != 0x0A:          # ends mid-line: up to the last line break
            nl = data.rfind(b"\n", s, e)
            if nl < 0:
                continue
            e = nl + 1
        if s < e:
            out.append((s, e))
    return out


def parses(data: bytes) -> bool:
    """The bytes are a Python module that compiles to an AST (no code is run)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")    # SyntaxWarning for odd escapes in old code
            ast.parse(data)
        return True
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False


def _cut(data: bytes, spans: list[Span]) -> bytes:
    keep, pos = [], 0
    for s, e in sorted(spans):
        keep.append(data[pos:s])
        pos = e
    keep.append(data[pos:])
    return b"".join(keep)


def _statement_lines(data: bytes) -> list[Span]:
    """Byte ranges of whole top-level statements of a parsed module, each from the start
    of its first line to the end of its last (comments and blank lines between them are
    statements of their own: a line that no statement covers)."""
    tree = ast.parse(data)
    starts = [0] + [m.end() for m in re.finditer(b"\n", data)]
    if starts[-1] != len(data):
        starts.append(len(data))
    line_count = len(starts) - 1
    covered = [None] * (line_count + 2)
    out = []
    for node in tree.body:
        first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        last = node.end_lineno or node.lineno
        out.append((starts[first - 1], starts[min(last, line_count)]))
        for ln in range(first, last + 1):
            covered[ln] = True
    out += [(starts[ln - 1], starts[ln]) for ln in range(1, line_count + 1) if not covered[ln]]
    return sorted(out)


def _statements_inside(stmts: list[Span], span: Span) -> list[Span]:
    """The maximal runs of whole top-level statements / comment lines inside span."""
    s, e = span
    runs: list[Span] = []
    for a, b in stmts:
        if a >= s and b <= e:
            if runs and runs[-1][1] == a:
                runs[-1] = (runs[-1][0], b)
            else:
                runs.append((a, b))
    return runs


def _chunks(stmts: list[Span]) -> list[Span]:
    """Top-level statements and the lines between them as contiguous, disjoint ranges
    (statements sharing a line merge): the module is these chunks in order, and between
    two chunks the tokenizer is at column 0 with no bracket open."""
    out: list[Span] = []
    for a, b in stmts:
        if out and a < out[-1][1]:
            out[-1] = (out[-1][0], max(b, out[-1][1]))
        else:
            out.append((a, b))
    return out


class _LocalCheck:
    """Does the module still parse with these spans cut? Only the runs of chunks that the
    spans touch are parsed (each on its own: untouched chunks are whole statements), so a
    check costs the size of the edited statements, not of the file."""

    def __init__(self, data: bytes):
        self.data = data
        self.stmts = _statement_lines(data)
        self.chunks = _chunks(self.stmts)
        self.starts = [a for a, _ in self.chunks]

    def _touched(self, span: Span) -> tuple[int, int]:
        lo = bisect.bisect_right(self.starts, span[0]) - 1
        hi = bisect.bisect_left(self.starts, span[1]) - 1
        return max(lo, 0), max(hi, lo, 0)

    def ok(self, accepted: list[Span], group: list[Span]) -> bool:
        marks = sorted((*self._touched(sp), sp in gset, sp)
                       for gset in [set(group)] for sp in accepted + group)
        runs: list[list] = []
        for lo, hi, new, sp in marks:            # runs of consecutive touched chunks
            if runs and lo <= runs[-1][1] + 1:
                runs[-1][1] = max(runs[-1][1], hi)
                runs[-1][2] |= new
                runs[-1][3].append(sp)
            else:
                runs.append([lo, hi, new, [sp]])
        for lo, hi, new, sps in runs:
            if new:
                a, b = self.chunks[lo][0], self.chunks[hi][1]
                cut = [(max(x, a) - a, min(y, b) - a) for x, y in sps]
                if not parses(_cut(self.data[a:b], cut)):
                    return False
        return True


def python_safe_spans(data: bytes, spans: list[Span]) -> list[Span]:
    """The line-snapped spans (or runs of whole top-level statements inside them) whose
    removal keeps the module parseable; offsets into `data`, the original.

    Group testing: a group of spans that can go together is accepted with one check; a
    group that breaks the module is split in halves, down to single spans, which then
    shrink to whole top-level statements. Checks parse only the edited top-level
    statements (_LocalCheck); one parse of the whole result confirms it, and where it
    does not (a coding cookie, a __future__ import), every check parses the whole file."""
    if parses(_cut(data, spans)):    # the common case: one parse
        return sorted(spans)
    local = _LocalCheck(data)
    out = _group_test(data, spans, local, local.ok)
    if parses(_cut(data, out)):
        return out
    return _group_test(data, spans, local,
                       lambda acc, grp: parses(_cut(data, acc + grp)))


def _group_test(data: bytes, spans: list[Span], local: "_LocalCheck", ok) -> list[Span]:
    accepted: list[Span] = []

    def add(group: list[Span]) -> None:
        if ok(accepted, group):
            accepted.extend(group)
        elif len(group) > 1:
            add(group[:len(group) // 2])
            add(group[len(group) // 2:])
        else:
            runs = [r for r in _statements_inside(local.stmts, group[0]) if r != group[0]]
            if runs and ok(accepted, runs):
                accepted.extend(runs)
            elif len(runs) > 1:
                for run in runs:
                    if ok(accepted, [run]):
                        accepted.append(run)
    add(list(spans))
    return sorted(accepted)


@dataclass
class SnapResult:
    spans: list[Span]        # what to remove
    reason: str | None       # drop the whole document for this reason, else None
    snapped_bytes: int       # bytes of found spans left in place by snapping
    python: bool = False     # the original parsed as Python (so the result does too)


def snap_document(data: bytes, spans: list[Span], *, is_python: bool | None = None,
                  max_repeated_share: float | None = 0.5) -> SnapResult:
    """Line-snapped (and, for Python, parse-preserving) spans of one code document.

    is_python None: decided by whether the original parses."""
    found = sum(e - s for s, e in spans)
    if max_repeated_share is not None and data and found / len(data) > max_repeated_share:
        return SnapResult([], "substring_code_repeated", 0)
    snapped = line_spans(data, spans)
    if is_python is None:
        is_python = bool(snapped) and parses(data)
    if is_python and snapped:
        snapped = python_safe_spans(data, snapped)
    return SnapResult(snapped, None, found - sum(e - s for s, e in snapped), bool(is_python))


@dataclass
class SnapCounts:
    """Per-shard figures of line snapping, summed into the step's stats.json."""
    docs: int = 0                 # line-domain documents that had repeated spans
    dropped: int = 0              # ... dropped whole (substring_code_repeated)
    python: int = 0               # ... that parsed as Python before
    found_bytes: int = 0          # repeated bytes found in them
    removed_bytes: int = 0        # ... of which removed after snapping

    def add(self, r: SnapResult, found: list[Span]) -> None:
        self.docs += 1
        self.found_bytes += sum(e - s for s, e in found)
        if r.reason:
            self.dropped += 1
        else:
            self.removed_bytes += sum(e - s for s, e in r.spans)
        self.python += r.python

    def save(self, path: Path) -> None:
        from lmforge.io.atomic import write_json
        write_json(path, self.__dict__)

    @classmethod
    def total(cls, work: Path) -> dict:
        out = cls()
        for p in sorted(Path(work).glob("snap-*.json")):
            d = json.loads(p.read_text())
            for k in ("docs", "dropped", "python", "found_bytes", "removed_bytes"):
                setattr(out, k, getattr(out, k) + d[k])
        return dict(out.__dict__)
