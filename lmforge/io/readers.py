"""Read raw documents from jsonl(.gz/.zst), parquet, csv, txt, md, html and WARC files and folders,
and from Hugging Face `datasets` data (.arrow files, save_to_disk folders: lmforge.io.arrow).

`iter_documents(paths, errors)` yields `{"id", "text", "meta"}` dicts. Anything that is
not a usable document (malformed JSON, invalid UTF-8, a number JSON cannot hold such as
`1e99999` or NaN (`non_finite_number`), no string `text`, a record over
`max_doc_bytes`, an unreadable or unsupported file) goes to the ErrorSink with file and
line, and reading goes on with the next record or file.

A record without an `id` gets `"<file>:<line>"` (the path as given, 1-based line or row),
so the same inputs always give the same ids. Top-level keys other than id/text/meta
are moved into meta (e.g. `url`), without overriding meta's own keys.

`Fields` names the keys of jsonl / parquet / arrow / csv records: `text_field` (e.g. The Stack's
`content`), `id_field`, and `meta_fields` (only these go into meta; default: all others).
WARC / WARC.gz (fastwarc): each HTTP 200 response (or resource / WET conversion record)
with an HTML or plain-text payload is one document, id = its WARC-Record-ID, meta = url
and date; HTML keeps `meta.format: html` so the pipeline's `extract` step turns it into
text. Other records (redirects, errors, images, requests) are counted as `warc_skipped`.
Markdown (.md) is read as text, one document per file.
"""
from __future__ import annotations

import csv
import errno
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from lmforge.config import ConfigError

from .arrow import SIDE_FILES, dataset_files, is_dataset_dir, iter_arrow_rows
from .documents import ErrorSink, make_doc
from .fs import GLOB_CHARS, FsPath, is_url, open_file, upath, url_errors
from .jsonl import PARSE_ERRORS, NonFinite, loads_strict, parse_error, strip_bom
from .lines import iter_lines

DEFAULT_MAX_DOC_BYTES = 64 * 1024 * 1024
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json.gz", ".ndjson")
WARC_SUFFIXES = (".warc", ".warc.gz", ".wet", ".wet.gz")
SUPPORTED = JSONL_SUFFIXES + (".parquet", ".arrow", ".csv", ".txt", ".md", ".markdown", ".html", ".htm") + WARC_SUFFIXES
RAW_KEEP = 4096  # bytes of a bad record passed on to the sink


def file_kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if name.endswith((".jsonl.gz", ".json.gz")):
        return "jsonl.gz"
    if name.endswith(".jsonl.zst"):
        return "jsonl.zst"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(".arrow"):
        return "arrow"
    if name.endswith(".txt"):
        return "txt"
    if name.endswith((".html", ".htm")):
        return "html"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".md", ".markdown")):
        return "md"
    if name.endswith(WARC_SUFFIXES):
        return "warc"
    return None


def list_files(paths: str | Path | list, errors: ErrorSink | None = None) -> list[Path]:
    """Expand paths (files or folders, recursively) into a list of files, folders sorted.

    Unsupported files inside folders are reported to the sink as `unsupported_format`
    (hidden files are ignored). A named path that does not exist (FileNotFoundError) or
    a named file of an unsupported format (ConfigError) is an error: a typo in an input
    must not become a run over nothing that exits 0.
    """
    errors = errors if errors is not None else ErrorSink()
    if isinstance(paths, (str, Path)):
        paths = [paths]
    out: list[Path] = []
    for p in paths:
        if is_url(p):
            with url_errors(p):
                out.extend(_list_url(upath(p), errors))
            continue
        p = Path(p)
        if is_dataset_dir(p):   # a `datasets` save_to_disk folder: its .arrow files, in its order
            out.extend(dataset_files(p))
        elif p.is_dir():
            for f in sorted(q for q in p.rglob("*") if q.is_file()):
                if any(part.startswith(".") for part in f.relative_to(p).parts):
                    continue
                if f.name in SIDE_FILES and is_dataset_dir(f.parent):   # the folder's own bookkeeping
                    continue
                if file_kind(f) is None:
                    errors.add(f, None, "unsupported_format", detail=f"suffix {f.suffix!r}")
                else:
                    out.append(f)
        elif p.exists():
            if file_kind(p) is None:
                raise ConfigError(f"input: {p}: unsupported format (suffix {p.suffix!r}; "
                                  f"supported: {', '.join(SUPPORTED)})")
            out.append(p)
        else:
            raise FileNotFoundError(errno.ENOENT, "input not found", str(p))
    return out


def _list_url(p: FsPath, errors: ErrorSink) -> list[FsPath]:
    """list_files for a URL (lmforge.io.fs): a glob (`s3://b/raw/*.jsonl`, sorted), a folder
    (every file under it, sorted; hidden ones skipped) or one file. `datasets` folders and
    .arrow files are read from local paths only (they are memory-mapped)."""
    if any(c in p.url.split("://", 1)[1] for c in GLOB_CHARS):
        found = sorted(p.fs.glob(p.path))
        files = [FsPath(p.fs.unstrip_protocol(f), p.fs, f) for f in found if p.fs.isfile(f)]
        if not files:
            raise FileNotFoundError(errno.ENOENT, "no file matches", str(p))
        named = False
    elif p.is_dir():
        files, named = [f for f in sorted(p.files())
                         if not any(part.startswith(".") for part in f.url[len(p.url):].split("/"))], False
    elif p.is_file():
        files, named = [p], True
    else:
        raise FileNotFoundError(errno.ENOENT, "input not found", str(p))
    out = []
    for f in files:
        kind = file_kind(f)
        if kind in (None, "arrow"):
            why = f"suffix {f.suffix!r}" + (" (.arrow files are read from local paths only)" if kind else "")
            if named:
                raise ConfigError(f"input: {f}: unsupported format ({why}; supported: {', '.join(SUPPORTED)})")
            errors.add(f, None, "unsupported_format", detail=why)
        else:
            out.append(f)
    return out


@dataclass(frozen=True)
class Fields:
    """Which keys of a jsonl / parquet / csv record hold the text, the id and the meta."""
    text_field: str = "text"
    id_field: str = "id"
    meta_fields: tuple[str, ...] | None = None   # None: every other key goes to meta

    def apply(self, rec: dict) -> dict:
        """The record with our keys (text, id, meta); the identity for the default fields."""
        if self == DEFAULT_FIELDS:
            return rec
        out = {"text": rec.get(self.text_field), "id": rec.get(self.id_field)}
        keep = self.meta_fields if self.meta_fields is not None else [
            k for k in rec if k not in (self.text_field, self.id_field)]
        meta = rec.get("meta") if self.meta_fields is None and isinstance(rec.get("meta"), dict) else {}
        out["meta"] = {**{k: rec[k] for k in keep if k in rec and k != "meta"}, **meta}
        return out


DEFAULT_FIELDS = Fields()


def iter_documents(paths: str | Path | list, errors: ErrorSink | None = None,
                   max_doc_bytes: int = DEFAULT_MAX_DOC_BYTES, fields: Fields | None = None) -> Iterator[dict]:
    """Yield documents from files/folders; bad records go to `errors` (see module doc)."""
    errors = errors if errors is not None else ErrorSink()
    for f in list_files(paths, errors):
        yield from iter_file(f, errors, max_doc_bytes, fields)


def iter_file(path: Path, errors: ErrorSink, max_doc_bytes: int = DEFAULT_MAX_DOC_BYTES,
              fields: Fields | None = None) -> Iterator[dict]:
    kind = file_kind(path)
    reader = {"jsonl": _iter_jsonl, "jsonl.gz": _iter_jsonl, "jsonl.zst": _iter_jsonl,
              "parquet": _iter_parquet, "arrow": _iter_arrow, "csv": _iter_csv, "txt": _iter_whole, "md": _iter_markdown,
              "html": _iter_whole, "warc": _iter_warc}.get(kind)
    if reader is None:
        errors.add(path, None, "unsupported_format", detail=f"suffix {path.suffix!r}")
        return
    if fields is not None and fields != DEFAULT_FIELDS and kind in ("jsonl", "jsonl.gz", "jsonl.zst",
                                                                    "parquet", "arrow", "csv"):
        reader = functools.partial(reader, fields=fields)
    try:
        yield from reader(path, kind, errors, max_doc_bytes)
    except Exception as e:  # corrupt archive, permission denied, bad parquet footer, ...
        errors.add(path, getattr(e, "_lmforge_line", None), "unreadable",
                   detail=f"{type(e).__name__}: {e}")


# ---------------------------------------------------------------- jsonl


def _iter_jsonl(path: Path, kind: str, errors: ErrorSink, max_doc_bytes: int,
                fields: Fields | None = None) -> Iterator[dict]:
    """Lines read by lmforge.io.lines: bounded memory per line, and damage in a .gz/.zst file
    costs the damaged part only (`unreadable`, with its line), never the lines before it."""
    # JSON escapes make a text at most ~6x its line; a line over 8x the limit is too large anyway
    line_limit = max_doc_bytes * 8 + 1024
    for line in iter_lines(path, line_limit):
        if line.problem == "too_long":
            errors.add(path, line.number, "too_large", line.raw,
                       detail=f"line over {line_limit} bytes", nbytes=line.nbytes)
            continue
        if line.problem is not None:
            errors.add(path, line.number, line.problem, line.raw, detail=line.detail, nbytes=line.nbytes)
            continue
        doc = _record_to_doc(line.raw, path, line.number, errors, max_doc_bytes, fields)
        if doc is not None:
            yield doc


def _record_to_doc(raw: bytes, path: Path, lineno: int, errors: ErrorSink,
                   max_doc_bytes: int, fields: Fields | None = None) -> dict | None:
    n = len(raw)
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        errors.add(path, lineno, "invalid_utf8", raw[:RAW_KEEP], detail=str(e), nbytes=n)
        return None
    try:
        rec = loads_strict(line)
    except NonFinite as e:   # would be written out as `Infinity`, which is not JSON
        errors.add(path, lineno, "non_finite_number", line[:RAW_KEEP], detail=str(e), nbytes=n)
        return None
    except PARSE_ERRORS as e:   # also a 5000-digit int (ValueError), deep nesting (RecursionError)
        errors.add(path, lineno, "malformed_json", line[:RAW_KEEP], detail=parse_error(e), nbytes=n)
        return None
    if not isinstance(rec, dict):
        errors.add(path, lineno, "not_object", line[:RAW_KEEP], detail=type(rec).__name__,
                   nbytes=n)
        return None
    return _dict_to_doc(fields.apply(rec) if fields else rec, path, lineno, errors, max_doc_bytes,
                        line[:RAW_KEEP], n)


def _dict_to_doc(rec: dict, path: Path, lineno: int, errors: ErrorSink, max_doc_bytes: int,
                 raw=None, nbytes: int | None = None) -> dict | None:
    text = rec.get("text")
    if isinstance(text, (bytes, bytearray)):  # parquet binary column
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            errors.add(path, lineno, "invalid_utf8", bytes(text)[:RAW_KEEP], detail=str(e),
                       nbytes=len(text))
            return None
    if not isinstance(text, str):
        errors.add(path, lineno, "missing_text", raw if raw is not None else rec,
                   detail="no string 'text' field", nbytes=nbytes)
        return None
    # surrogates (from JSON \ud800 escapes) cannot be written as UTF-8 later
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as e:
        errors.add(path, lineno, "invalid_utf8", text[:RAW_KEEP].encode("utf-8", "replace"),
                   detail=str(e), nbytes=nbytes)
        return None
    if size > max_doc_bytes:
        errors.add(path, lineno, "too_large", text[:RAW_KEEP],
                   detail=f"{size} bytes > max_doc_bytes {max_doc_bytes}", nbytes=size)
        return None
    doc_id = rec.get("id")
    doc_id = f"{path}:{lineno}" if doc_id is None or doc_id == "" else str(doc_id)
    meta = rec.get("meta")
    if isinstance(meta, str):  # our parquet writer stores meta as a JSON string
        try:
            meta = json.loads(meta)
        except PARSE_ERRORS:
            meta = {"meta": meta}
    meta = dict(meta) if isinstance(meta, dict) else ({} if meta is None else {"meta": meta})
    for k, v in rec.items():
        if k not in ("id", "text", "meta") and k not in meta:
            meta[k] = v
    return make_doc(doc_id, text, meta)


# ---------------------------------------------------------------- parquet


def _iter_parquet(path: Path, kind: str, errors: ErrorSink, max_doc_bytes: int,
                  fields: Fields | None = None) -> Iterator[dict]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path if isinstance(path, Path) else open_file(path, "rb"))
    row = 0
    for batch in pf.iter_batches(batch_size=1024):
        for rec in batch.to_pylist():
            row += 1
            doc = _dict_to_doc(fields.apply(rec) if fields else rec, path, row, errors, max_doc_bytes)
            if doc is not None:
                yield doc


def _iter_arrow(path: Path, kind: str, errors: ErrorSink, max_doc_bytes: int,
                fields: Fields | None = None) -> Iterator[dict]:
    """A `datasets` .arrow file (lmforge.io.arrow), its rows read as parquet rows are."""
    for row, rec in enumerate(iter_arrow_rows(path), 1):
        doc = _dict_to_doc(fields.apply(rec) if fields else rec, path, row, errors, max_doc_bytes)
        if doc is not None:
            yield doc


# ---------------------------------------------------------------- txt / html


def _decode_html(data: bytes) -> tuple[str, str]:
    """HTML in the wild is often not UTF-8: fall back to resiliparse's charset detection."""
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        from resiliparse.parse.encoding import bytes_to_str, detect_encoding

        enc = detect_encoding(data)
        return bytes_to_str(data, enc), enc


def _iter_whole(path: Path, kind: str, errors: ErrorSink, max_doc_bytes: int) -> Iterator[dict]:
    size = path.stat().st_size
    if size > max_doc_bytes:
        errors.add(path, 1, "too_large", detail=f"{size} bytes > max_doc_bytes {max_doc_bytes}",
                   nbytes=size)
        return
    data = path.read_bytes()
    meta = {"source": path.parent.name or path.stem, "file": str(path)}
    if kind == "html":
        text, enc = _decode_html(data)
        meta.update(format="html", encoding=enc)
    else:
        try:
            text = strip_bom(data).decode("utf-8")
        except UnicodeDecodeError as e:
            errors.add(path, 1, "invalid_utf8", data[:RAW_KEEP], detail=str(e), nbytes=len(data))
            return
    yield make_doc(str(path), text, meta)


def _iter_markdown(path: Path, kind: str, errors: ErrorSink, max_doc_bytes: int) -> Iterator[dict]:
    """A Markdown file is one text document (the markup is kept: it is text models learn)."""
    for doc in _iter_whole(path, kind, errors, max_doc_bytes):
        doc["meta"]["format"] = "markdown"
        yield doc


# ---------------------------------------------------------------- csv


def _iter_csv(path: Path, kind: str, errors: ErrorSink, max_doc_bytes: int,
              fields: Fields | None = None) -> Iterator[dict]:
    """One document per row (a header row names the columns; `text_field` picks the text)."""
    csv.field_size_limit(max(max_doc_bytes * 4, 1 << 20))   # a quoted field may span many lines
    with open_file(path, "r", encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        row = 0
        for rec in reader:
            row += 1
            if None in rec:   # more cells than the header has names
                errors.add(path, reader.line_num, "malformed_csv", detail=f"row {row}: more cells than columns",
                           raw=json.dumps(rec.pop(None), ensure_ascii=False)[:RAW_KEEP])
                continue
            doc = _dict_to_doc(fields.apply(rec) if fields else rec, path, reader.line_num, errors, max_doc_bytes)
            if doc is not None:
                yield doc


# ---------------------------------------------------------------- WARC


_WARC_TEXT_TYPES = ("text/html", "application/xhtml+xml", "text/plain")


def _warc_payload(rec) -> tuple[str | None, str, str | None]:
    """(content type or None, charset hint, why it is not a document or None)."""
    from fastwarc.warc import WarcRecordType

    if rec.record_type == WarcRecordType.response:
        if not rec.is_http:
            return None, "", "response without HTTP headers"
        status = rec.http_headers.status_code
        if status != 200:
            return None, "", f"HTTP {status}"
        ctype = (rec.http_content_type or "").lower()
        return ctype, rec.http_charset or "", None
    ctype = (rec.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    return ctype, "", None


def _warc_text(body: bytes, ctype: str, charset: str) -> tuple[str, str]:
    """The payload decoded with its declared charset (WET: UTF-8), else detected."""
    declared = charset or ("utf-8" if ctype == "text/plain" else "")
    if declared:
        try:
            return body.decode(declared), declared
        except (UnicodeDecodeError, LookupError):
            pass
    return _decode_html(body)


def _iter_warc(path: Path, kind: str, errors: ErrorSink, max_doc_bytes: int) -> Iterator[dict]:
    """HTML / plain-text payloads of response, resource and conversion (WET) records."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    types = WarcRecordType.response | WarcRecordType.resource | WarcRecordType.conversion
    with open_file(path, "rb") as fh:
        for n, rec in enumerate(ArchiveIterator(fh, record_types=types, parse_http=True), 1):
            url = rec.headers.get("WARC-Target-URI") or ""
            ctype, charset, why = _warc_payload(rec)
            if why is None and ctype not in _WARC_TEXT_TYPES:
                why = f"content type {ctype or 'missing'}"
            if why is not None:
                errors.add(path, n, "warc_skipped", detail=f"{url}: {why}", nbytes=rec.content_length)
                continue
            if rec.content_length > max_doc_bytes:
                errors.add(path, n, "too_large", detail=f"{url}: {rec.content_length} bytes > max_doc_bytes "
                           f"{max_doc_bytes}", nbytes=rec.content_length)
                continue
            body = rec.reader.read()
            text, enc = _warc_text(body, ctype, charset)
            meta = {"source": path.name, "url": url, "date": rec.headers.get("WARC-Date"), "encoding": enc,
                    "format": "text" if ctype == "text/plain" else "html"}
            yield make_doc(rec.record_id or f"{path}:{n}", text, meta)
