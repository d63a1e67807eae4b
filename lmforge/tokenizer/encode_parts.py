"""Encoding as executor tasks (local processes or Ray): one task per input file writes its
documents' tokens to a part folder; the stage then writes the token shards from the parts
in input order, through the same split and shard code as the streaming path, so the
output is byte-identical to it (tests/test_tokenizer_encode_parts.py).

A part folder (`OUT/parts/part-NNNNN/`; for an output URL a local scratch folder,
encode.parts_dir) holds tokens.npy (uint32, flat), lens.npy,
docs.json (id, domain, UTF-8 bytes per document), rejects.jsonl and DONE.json, written
last: a part with DONE.json is kept when an interrupted run is rerun (resumable per
input file). The parts are deleted once meta.json is written.

Memory: a task holds its file's tokens (4 B per token) and the per-document list; the
stage holds one part's arrays at a time (memory-mapped tokens).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np

from lmforge.io.atomic import save_npy, write_json
from lmforge.io.documents import ErrorSink
from lmforge.io.fs import upath
from lmforge.io.readers import iter_file, list_files

from .encoding import _doc_batches, _load, encode_texts


def encode_file_task(tok_path: str, specials_in_text: bool, src: str, part: str,
                     batch_docs: int, batch_bytes: int, default_domain: str) -> dict:
    part_dir = Path(part)
    if (part_dir / "DONE.json").is_file():
        return json.loads((part_dir / "DONE.json").read_text())
    shutil.rmtree(part_dir, ignore_errors=True)
    part_dir.mkdir(parents=True)
    sink = ErrorSink(part_dir / "rejects.jsonl")
    tok = _load(tok_path, specials_in_text)
    docs, flats, lens, nbytes = [], [], [], 0
    for payload, texts in _doc_batches(iter_file(upath(src), sink), batch_docs, batch_bytes,
                                       default_domain, 0):
        flat, ln = encode_texts(tok, texts)
        docs += payload
        flats.append(flat)
        lens.append(ln)
        nbytes += sum(p[2] for p in payload)
    sink.close()
    save_npy(part_dir / "tokens.npy", np.concatenate(flats) if flats else np.zeros(0, np.uint32))
    save_npy(part_dir / "lens.npy", np.concatenate(lens) if lens else np.zeros(0, np.int64))
    write_json(part_dir / "docs.json", docs)
    done = {"docs": len(docs), "bytes": nbytes, "rejects": sum(sink.counts.values())}
    write_json(part_dir / "DONE.json", done)  # last: the part is complete
    return done


def encode_parts(executor, cfg, tok_path: Path, parts_dir: Path, errors: ErrorSink) -> Iterator[tuple]:
    """Run the per-file tasks, then yield (payload, (flat, lens)) per part in input order,
    as the streaming encoder does per batch; each part's rejects go to `errors` first."""
    files = list_files(cfg.inputs, errors)  # listing problems first, as iter_documents does
    parts = [parts_dir / f"part-{i:05d}" for i in range(len(files))]
    executor.map(encode_file_task, [(str(tok_path), cfg.specials_in_text, str(f), str(p),
                                     cfg.batch_docs, cfg.batch_bytes, cfg.default_domain)
                                    for f, p in zip(files, parts)], desc="encode")
    for p in parts:
        rej = p / "rejects.jsonl"
        if rej.is_file():
            for line in rej.read_text(encoding="utf-8").splitlines():
                r = json.loads(line)
                errors.add(r["file"], r["line"], r["reason"], r["raw"], r["detail"])
        docs = [tuple(d) for d in json.loads((p / "docs.json").read_text())]
        if docs:
            yield docs, (np.load(p / "tokens.npy", mmap_mode="r"), np.load(p / "lens.npy"))


def remove_parts(parts_dir: Path) -> None:
    shutil.rmtree(parts_dir, ignore_errors=True)
