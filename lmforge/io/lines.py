"""Lines of a plain, .gz or .zst file, read with bounded memory and surviving damage.

Every JSON-lines reader (documents, SFT and preference data, benchmarks) reads its bytes
here, so that:

- one huge line costs at most `max_line_bytes` of memory: the line is consumed to its end in
  chunks and reported as `too_long` with its line number and its first RAW_KEEP bytes, never
  held whole (a 50 MB record used to be read, parsed and tokenized before any length check);
- a .jsonl.gz or .jsonl.zst file is decompressed in small steps, so damage loses only the
  damaged part: the complete lines before it are delivered, the line cut by the damage is
  reported as `unreadable` with its line number (never parsed as a record), and zstd
  decoding restarts at the next frame (the next zstd magic number after the damage), so the
  frames after a damaged one are read too. gzip cannot restart mid-stream: damage ends the
  file (also `unreadable`). A stream cut off mid-frame is `unreadable` as well.

Line numbers after a zstd damage count on from the damage (the lines inside the lost part
cannot be counted); the `unreadable` detail says so.
"""
from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .fs import open_file, upath

BOM = b"\xef\xbb\xbf"
CHUNK = 1 << 20          # plain files: bytes read per call
DECODED_CHUNK = 1 << 16  # gzip: decoded bytes per call (damage loses at most this much before it)
ZSTD_FEED = 1 << 13      # zstd: compressed bytes fed per call (a small window: what damage can cost)
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
RAW_KEEP = 4096          # bytes of a too-long line kept for the rejects file


@dataclass(frozen=True)
class Damage:
    """A marker in the decoded stream: the bytes here are lost (`fatal`: nothing follows)."""
    detail: str
    fatal: bool


def compression(path: Path) -> str:
    name = upath(path).name.lower()
    if name.endswith(".gz"):
        return "gz"
    if name.endswith(".zst"):
        return "zst"
    return ""


def _plain_chunks(path: Path) -> Iterator[bytes | Damage]:
    with open_file(path, "rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def _gzip_chunks(path: Path) -> Iterator[bytes | Damage]:
    with open_file(path, "rb") as raw, gzip.open(raw, "rb") as f:
        while True:
            try:
                chunk = f.read(DECODED_CHUNK)
            except (EOFError, gzip.BadGzipFile, zlib.error) as e:
                yield Damage(f"damaged gzip stream ({type(e).__name__}: {e}); the rest of the file is lost", True)
                return
            if not chunk:
                return
            yield chunk


def _next_frame(f, data: bytes) -> bytes:
    """Compressed bytes from the next zstd magic number on (`data` first, then the file);
    b"" when there is none."""
    while True:
        at = data.find(ZSTD_MAGIC)
        if at >= 0:
            return data[at:]
        more = f.read(ZSTD_FEED)
        if not more:
            return b""
        data = data[-(len(ZSTD_MAGIC) - 1):] + more


def _zstd_chunks(path: Path) -> Iterator[bytes | Damage]:
    import zstandard

    dctx = zstandard.ZstdDecompressor()
    with open_file(path, "rb") as f:
        obj, in_frame, pending = dctx.decompressobj(), False, b""
        while True:
            data, pending = pending or f.read(ZSTD_FEED), b""
            if not data:
                if in_frame:
                    yield Damage("zstd stream cut off mid-frame (truncated file)", True)
                return
            try:
                out = obj.decompress(data)
            except zstandard.ZstdError as e:
                pending = _next_frame(f, data[1:])
                what = "decoding resumes at the next frame" if pending else "no frame follows"
                yield Damage(f"damaged zstd data ({e}); {what}; line numbers after it count on from "
                             f"the damage", not pending)
                obj, in_frame = dctx.decompressobj(), False
                if not pending:
                    return
                continue
            in_frame = True
            if out:
                yield out
            if obj.eof:   # a frame ended: the next one (if any) starts in unused_data
                pending, obj, in_frame = obj.unused_data, dctx.decompressobj(), False


def chunks(path: str | Path) -> Iterator[bytes | Damage]:
    """The decoded bytes of a file, in pieces, with Damage markers where bytes were lost."""
    path = upath(path)
    return {"gz": _gzip_chunks, "zst": _zstd_chunks}.get(compression(path), _plain_chunks)(path)


@dataclass
class Line:
    number: int            # 1-based
    raw: bytes             # without the newline (a too-long line: its first RAW_KEEP bytes)
    problem: str | None    # None, "too_long" or "unreadable"
    detail: str = ""
    nbytes: int = 0        # the line's whole length


def iter_lines(path: str | Path, max_line_bytes: int | None = None) -> Iterator[Line]:
    """Each non-blank line of a plain/.gz/.zst file, or a too_long / unreadable Line (see
    module doc). Memory: at most max_line_bytes + one chunk, whatever the file holds."""
    number, part, size, over = 1, bytearray(), 0, False
    limit = max_line_bytes if max_line_bytes is not None else -1

    def finish() -> Line | None:
        if over:
            return Line(number, bytes(part[:RAW_KEEP]), "too_long",
                        f"line of {size} bytes over the limit of {max_line_bytes}", size)
        raw = bytes(part)
        if number == 1 and raw.startswith(BOM):
            raw = raw[len(BOM):]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        return None if not raw or raw.isspace() else Line(number, raw, None, "", size)

    for chunk in chunks(path):
        if isinstance(chunk, Damage):
            yield Line(number, bytes(part[:RAW_KEEP]), "unreadable", chunk.detail, size)
            number, part, size, over = number + 1, bytearray(), 0, False
            if chunk.fatal:
                return
            continue
        start = 0
        while True:
            nl = chunk.find(b"\n", start)
            if nl >= 0 and not size:   # the common case: a whole line inside this chunk, one copy
                if 0 <= limit < nl - start:
                    yield Line(number, chunk[start:start + RAW_KEEP], "too_long",
                               f"line of {nl - start} bytes over the limit of {max_line_bytes}", nl - start)
                else:
                    raw = chunk[start:nl]
                    if number == 1 and raw.startswith(BOM):
                        raw = raw[len(BOM):]
                    if raw.endswith(b"\r"):
                        raw = raw[:-1]
                    if raw and not raw.isspace():
                        yield Line(number, raw, None, "", nl - start)
                number, start = number + 1, nl + 1
                continue
            end = len(chunk) if nl < 0 else nl
            if not over:
                if 0 <= limit < size + end - start:
                    part += chunk[start:start + max(0, RAW_KEEP - len(part))]
                    over = True
                else:
                    part += chunk[start:end]
            size += end - start
            if nl < 0:
                break
            line = finish()
            if line is not None:
                yield line
            number, part, size, over, start = number + 1, bytearray(), 0, False, nl + 1
    if size or part:
        line = finish()
        if line is not None:
            yield line
