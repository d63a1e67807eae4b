"""Shared pieces of the corpus builders: sources, deterministic writers, budgets, seeds.

Everything here is built for byte-identical rebuilds: records are written in a fixed
order, compressed without timestamps (gzip mtime=0, single-threaded zstd), and every
random choice comes from `rng(key)`, a `random.Random` seeded by a string (Python
hashes string seeds with SHA-512, so PYTHONHASHSEED does not matter).
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from lmforge.io.account import DataError
from lmforge.io.atomic import write_bytes
from lmforge.io.jsonl import parse_line, strip_bom

ZSTD_LEVEL = 19  # small outputs: the best ratio costs well under a second


@dataclass(frozen=True)
class Source:
    """One offline source of the default corpus.

    locate(override) -> the installed root folder, or None when the source is missing.
    version(root) -> the installed package version (a string, "unknown" if unreadable).
    read(root) -> raw records in a fixed order (the same records the committed sample
    stores, so a build from the sample runs the same derivation code).
    emit(records, ctx) -> writes the derived outputs through ctx; returns counts.
    """
    name: str
    package: str  # what to install, as the installer names it
    installer: str  # apt | npm | pip | python
    license: str
    description: str
    setup: str  # the one command that installs it
    env: str  # environment variable that overrides the location
    locate: Callable[[Path | None], Path | None]
    version: Callable[[Path], str]
    read: Callable[[Path], Iterator[dict]]
    emit: Callable[[list[dict], Any], dict]
    size: Callable[[dict], int] | None = None  # bytes a record counts against --max-mb (default: all its text)

    def record_size(self, record: dict) -> int:
        return self.size(record) if self.size is not None else utf8len(record)


def stable_hash(text: str) -> int:
    """A 64-bit hash that is the same on every machine and run."""
    return int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:8], "big")


def rng(key: str) -> random.Random:
    return random.Random(key)


def utf8len(value: Any) -> int:
    """UTF-8 bytes of all the strings in a (nested) record: what the budgets count."""
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, dict):
        return sum(utf8len(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(utf8len(v) for v in value)
    return 0


def take_bytes(records: Iterable[dict], max_bytes: int,
               size: Callable[[dict], int] | None = None) -> list[dict]:
    """Records in order until the next one would pass `max_bytes` (at least one)."""
    out, total = [], 0
    for rec in records:
        n = (size or utf8len)(rec)
        if out and total + n > max_bytes:
            break
        out.append(rec)
        total += n
    return out


def round_robin(iterators: list[Iterator]) -> Iterator:
    """One item from each iterator in turn until all are exhausted (variety under a budget)."""
    live = list(iterators)
    while live:
        nxt = []
        for it in live:
            item = next(it, _END)
            if item is not _END:
                yield item
                nxt.append(it)
        live = nxt


_END = object()


def natural_key(text: str) -> list:
    """Sort 'ci.song.2000' before 'ci.song.10000'."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def dumps(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(", ", ": "))


def encode_jsonl(records: Iterable[dict]) -> bytes:
    return "".join(dumps(r) + "\n" for r in records).encode("utf-8", "surrogatepass")


def write_bytes_atomic(path: Path, data: bytes) -> None:
    write_bytes(path, data)   # lmforge.io.atomic: temp sibling, fsync, rename


def write_jsonl(path: str | Path, records: Iterable[dict]) -> int:
    """Write records as .jsonl, .jsonl.gz or .jsonl.zst, byte-identically on every run."""
    path = Path(path)
    records = list(records)
    data = encode_jsonl(records)
    if path.name.endswith(".zst"):
        import zstandard

        data = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=0).compress(data)
    elif path.name.endswith(".gz"):
        data = gzip.compress(data, compresslevel=9, mtime=0)
    write_bytes_atomic(path, data)
    return len(records)


def read_jsonl(path: str | Path) -> Iterator[dict]:
    """Read .jsonl / .jsonl.gz / .jsonl.zst; a bad line raises DataError naming file:line."""
    path = Path(path)
    raw = path.read_bytes()
    if path.name.endswith(".zst"):
        import zstandard

        raw = zstandard.ZstdDecompressor().decompressobj().decompress(raw)
    elif path.name.endswith(".gz"):
        raw = gzip.decompress(raw)
    for i, line in enumerate(strip_bom(raw).split(b"\n"), 1):
        if not line.strip():
            continue
        value, reason, detail = parse_line(line.rstrip(b"\r"))
        if reason:   # our own files: a bad line is an error naming file and line, never a traceback
            raise DataError(f"{path}:{i}: {detail}")
        yield value


def dpkg_version(package: str) -> str:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def pip_version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def override_path(env: str, override: Path | None) -> Path | None:
    if override is not None:
        return Path(override)
    value = os.environ.get(env)
    return Path(value) if value else None
