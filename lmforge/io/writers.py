"""Write documents as .jsonl.zst (or .jsonl / .jsonl.gz) or .parquet shards.

Writers write to `NAME.tmp` and rename on close, so a shard that exists is complete
(the pipeline's resume logic relies on this); a URL (lmforge.io.fs) is written to the key
`NAME.tmp` and moved to `NAME` on close (on S3: a server-side copy, atomic at `NAME`). Parquet stores `meta` as a JSON string
column (meta dicts differ from document to document); `readers` decodes it back.
"""
from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import Iterable

from .atomic import naming
from .fs import open_file, replace, upath
from .jsonl import dumps_strict

PARQUET_ROW_GROUP = 4096


def shard_suffix(fmt: str) -> str:
    return {"jsonl.zst": ".jsonl.zst", "jsonl": ".jsonl", "jsonl.gz": ".jsonl.gz",
            "parquet": ".parquet"}[fmt]


class DocWriter:
    """Append documents to one shard; the format follows the file name's suffix."""

    def __init__(self, path: str | Path, zstd_level: int = 3):
        self.path = upath(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        name = self.path.name
        self.count = 0
        self._raw = None
        self._rows: list[dict] = []
        self._pq = None
        if name.endswith(".parquet"):
            self.kind = "parquet"
        elif name.endswith(".jsonl.zst"):
            import zstandard

            self.kind = "jsonl"
            self._raw = open_file(self.tmp, "wb")
            cctx = zstandard.ZstdCompressor(level=zstd_level)
            self._fh = io.BufferedWriter(cctx.stream_writer(self._raw, closefd=False), 1 << 20)
        elif name.endswith(".jsonl.gz"):
            self.kind = "jsonl"
            self._raw = None if isinstance(self.tmp, Path) else open_file(self.tmp, "wb")
            self._fh = gzip.open(self.tmp if self._raw is None else self._raw, "wb")
        elif name.endswith(".jsonl"):
            self.kind = "jsonl"
            self._raw = None
            self._fh = open_file(self.tmp, "wb")
        else:
            raise ValueError(f"{path}: unsupported shard suffix (use .jsonl.zst, .jsonl, "
                             ".jsonl.gz or .parquet)")

    def write(self, doc: dict) -> None:
        self.count += 1
        if self.kind == "parquet":
            self._rows.append({"id": doc["id"], "text": doc["text"],
                               "meta": dumps_strict(doc.get("meta") or {})})
            if len(self._rows) >= PARQUET_ROW_GROUP:
                self._flush_parquet()
            return
        line = dumps_strict(doc) + "\n"   # strict JSON: a non-finite float is written as a string
        try:
            self._fh.write(line.encode("utf-8"))
        except OSError as e:   # a full disk's ENOSPC names no file: name the shard
            raise naming(e, self.path) from e

    def _flush_parquet(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema([("id", pa.string()), ("text", pa.string()), ("meta", pa.string())])
        if self._pq is None:
            self._raw = None if isinstance(self.tmp, Path) else open_file(self.tmp, "wb")
            self._pq = pq.ParquetWriter(self.tmp if self._raw is None else self._raw, schema,
                                        compression="zstd")
        if self._rows:
            self._pq.write_table(pa.Table.from_pylist(self._rows, schema=schema))
        self._rows = []

    def close(self) -> Path:
        try:
            return self._close()
        except OSError as e:
            raise naming(e, self.path) from e

    def _close(self) -> Path:
        if self.kind == "parquet":
            self._flush_parquet()
            self._pq.close()
        else:
            self._fh.close()
        if self._raw is not None:
            self._raw.close()
        replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        try:
            if self.kind == "parquet":
                if self._pq is not None:
                    self._pq.close()
            else:
                self._fh.close()
            if self._raw is not None:
                self._raw.close()
        finally:
            self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> "DocWriter":
        return self

    def __exit__(self, exc_type, *rest) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_documents(path: str | Path, docs: Iterable[dict]) -> int:
    """Write all `docs` to one shard at `path`; returns the number written."""
    with DocWriter(path) as w:
        for d in docs:
            w.write(d)
    return w.count


class ShardedWriter:
    """Write documents into numbered shards `PREFIX-00000.SUFFIX`, `docs_per_shard` each."""

    def __init__(self, folder: str | Path, prefix: str = "part", fmt: str = "jsonl.zst",
                 docs_per_shard: int = 100_000):
        self.folder, self.prefix, self.suffix = upath(folder), prefix, shard_suffix(fmt)
        self.docs_per_shard = docs_per_shard
        self.paths: list[Path] = []
        self._w: DocWriter | None = None

    def write(self, doc: dict) -> None:
        if self._w is None or self._w.count >= self.docs_per_shard:
            self._roll()
        self._w.write(doc)

    def _roll(self) -> None:
        if self._w is not None:
            self.paths.append(self._w.close())
        self._w = DocWriter(self.folder / f"{self.prefix}-{len(self.paths):05d}{self.suffix}")

    def close(self) -> list[Path]:
        if self._w is not None:
            self.paths.append(self._w.close())
            self._w = None
        return self.paths
