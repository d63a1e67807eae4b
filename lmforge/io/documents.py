"""Documents and the error sink.

A document is `{"id": str, "text": str, "meta": {...}}` (DESIGN.md section 3).
Every record a reader cannot turn into a document goes to an `ErrorSink`: it is
counted by reason and (optionally) written to a rejects jsonl with the file, the
line and a prefix of the raw bytes, so nothing is dropped silently.
"""
from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from lmforge.io.account import DataError

from .atomic import temp_sibling
from .fs import open_file, replace, upath

log = logging.getLogger("lmforge.data")

RAW_PREFIX = 2000  # characters of the offending record kept in the rejects file


class InputRejected(DataError, ValueError):
    """Every input record was rejected: nothing to work on (the CLI exits with the bad-data code)."""


def make_doc(id: str, text: str, meta: dict | None = None) -> dict:
    return {"id": id, "text": text, "meta": dict(meta or {})}


def doc_bytes(doc: dict) -> int:
    """Size of a document as the stats count it: UTF-8 bytes of its text."""
    return len(doc["text"].encode("utf-8", "surrogatepass"))


def _raw_str(raw: Any) -> str:
    if raw is None:
        return ""
    if isinstance(raw, (bytes, bytearray)):
        raw = bytes(raw[: RAW_PREFIX * 4]).decode("utf-8", "replace")
    elif not isinstance(raw, str):
        try:
            raw = json.dumps(raw, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            raw = repr(raw)
    return raw[:RAW_PREFIX]


class ErrorSink:
    """Counts bad records by reason and writes them aside.

    path: a .jsonl file receiving one {"file", "line", "reason", "detail", "raw"} per
    bad record. The sink owns the file: records go to a temporary sibling that replaces
    `path` on close(), so a rerun never appends to what an interrupted attempt half-wrote,
    and a run with no bad records leaves no (stale) file. Without a path the records are
    kept in memory (up to `keep` of them) and each one is logged as a warning.
    """

    def __init__(self, path: str | Path | None = None, keep: int = 1000):
        self.path = upath(path) if path else None
        self.keep = keep
        self.counts: Counter[str] = Counter()
        self.nbytes: Counter[str] = Counter()
        self.records: list[dict] = []
        self._fh = None
        self._tmp: Path | None = None

    def add(self, file: str | Path, line: int | None, reason: str, raw: Any = None,
            detail: str = "", nbytes: int | None = None) -> None:
        """Record one bad record; `nbytes` is its size in the input (for the stats)."""
        rec = {"file": str(file), "line": line, "reason": reason, "detail": detail,
               "raw": _raw_str(raw)}
        self.counts[reason] += 1
        if nbytes is None:
            nbytes = len(raw) if isinstance(raw, (bytes, bytearray, str)) else 0
        self.nbytes[reason] += int(nbytes)
        if self.path is not None:
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._tmp = temp_sibling(self.path)
                self._fh = open_file(self._tmp, "w", encoding="utf-8")
            self._fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        else:
            log.warning("%s:%s: %s %s", file, line, reason, detail)
        if len(self.records) < self.keep:
            self.records.append(rec)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def close(self) -> None:
        """Put the rejects file in place (or remove a stale one when there were none)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
            replace(self._tmp, self.path)
        elif self.path is not None and self.total == 0:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> "ErrorSink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
