"""A top-level JSON array read one item at a time, with a byte cap per item.

`json.load` holds the whole file and every parsed item at once; an SFT file of a million
conversations, or one item of 50 MB, then costs its full size in memory (issue 33). Here the
text is read in 1 MB blocks and the end of each item found by a scanner that follows only
brackets and strings (regex jumps, not a character loop); an item is parsed when its end is
found. An item longer than `max_item_bytes` is skipped without being held (its bytes are
scanned and dropped) and reported as too long, with its position in the array.

    for n, item, error in iter_json_array(path, max_item_bytes):   # n: 1-based item number
        error is None -> item is the parsed value; else item is None and error is
        "too_long" or "malformed: <reason>"
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterator

BLOCK = 1 << 20
_OUTSIDE = re.compile(r'[\[\]{}",]')   # what changes the scanner's state outside a string
_INSIDE = re.compile(r'["\\]')         # inside a string: its end, or an escape
_NON_SPACE = re.compile(r"\S")


class _Reader:
    def __init__(self, path: Path):
        self.f = open(path, encoding="utf-8")
        self.buf, self.pos, self.eof = "", 0, False

    def more(self) -> bool:
        if self.eof:
            return False
        block = self.f.read(BLOCK)
        if not block:
            self.eof = True
            return False
        self.buf = self.buf[self.pos:] + block
        self.pos = 0
        return True

    def skip_ws(self) -> str | None:
        """The next non-space character (not consumed), None at the end of the file."""
        while True:
            m = _NON_SPACE.search(self.buf, self.pos)
            if m:
                self.pos = m.start()
                return self.buf[self.pos]
            self.pos = len(self.buf)
            if not self.more():
                return None


def _scan_item(r: _Reader, cap: int) -> tuple[str | None, bool]:
    """Consume one array item; (its text, or None when over `cap` characters; whether the array
    ended right after it). Raises ValueError on a file that ends inside the item."""
    depth, in_str, pieces, size, start = 0, False, [], 0, r.pos
    while True:
        pat = _INSIDE if in_str else _OUTSIDE
        m = pat.search(r.buf, r.pos)
        if m is None:                           # the block ends inside the item: keep what we have
            size += len(r.buf) - start
            if size <= cap:
                pieces.append(r.buf[start:])
            r.pos = start = len(r.buf)
            if not r.more():
                raise ValueError("the file ends inside an item")
            start = r.pos
            continue
        c, r.pos = m.group(), m.end()
        if in_str:
            if c == "\\":
                if r.pos >= len(r.buf):
                    size += len(r.buf) - start
                    if size <= cap:
                        pieces.append(r.buf[start:])
                    r.pos = len(r.buf)
                    if not r.more():
                        raise ValueError("the file ends inside a string")
                    start = r.pos
                r.pos += 1                      # the escaped character
            else:
                in_str = False
            continue
        if c == '"':
            in_str = True
        elif c in "[{":
            depth += 1
        elif c in "]}" and depth > 0:
            depth -= 1
        elif depth == 0:                        # "," or the array's "]": the item ends before it
            size += m.start() - start
            text = "".join(pieces) + r.buf[start:m.start()] if size <= cap else None
            return text, c == "]"


def iter_json_array(path: str | Path, max_item_bytes: int) -> Iterator[tuple[int, object, str | None]]:
    """(item number, value, None) per item of the array in `path`; (n, None, reason) for an item
    over the cap or not valid JSON. A file that is not an array: one (0, None, "malformed: ...").
    A lone object (not in an array) is read whole, as one item."""
    r = _Reader(Path(path))
    try:
        r.more()
        first = r.skip_ws()
        if first == "{":                        # one record, not an array: json.load it (if not over the cap)
            if Path(path).stat().st_size > max_item_bytes:
                yield 1, None, "too_long"
                return
            r.f.seek(0)
            yield 1, json.load(r.f), None
            return
        if first != "[":
            yield 0, None, "malformed: not a JSON array"
            return
        r.pos += 1
        if r.skip_ws() == "]":
            return
        n, ended = 0, False
        while not ended:
            if r.skip_ws() is None:
                raise ValueError("the file ends inside the array")
            n += 1
            text, ended = _scan_item(r, max_item_bytes)
            r.pos += 1                          # past the "," or "]"
            if text is None:
                yield n, None, "too_long"
                continue
            try:
                yield n, json.loads(text), None
            except ValueError as e:
                yield n, None, f"malformed: {e}"
    except ValueError as e:
        yield 0, None, f"malformed: {e}"
    except UnicodeDecodeError as e:
        yield 0, None, f"malformed: not UTF-8 ({e.reason} at byte {e.start} of a block)"
    finally:
        r.f.close()
