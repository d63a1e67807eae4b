"""Readers and writers: every format, and every kind of bad input counted, never dropped."""
import gzip
import json
import os

import pytest

from lmforge.io.documents import ErrorSink
from lmforge.io.readers import iter_documents
from lmforge.io.writers import ShardedWriter, write_documents

DOCS = [{"id": f"d{i}", "text": f"text {i} 中文字符", "meta": {"source": "s", "i": i}}
        for i in range(25)]


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet"])
def test_round_trip(tmp_path, suffix):
    path = tmp_path / f"shard{suffix}"
    assert write_documents(path, DOCS) == len(DOCS)
    sink = ErrorSink()
    assert list(iter_documents(path, sink)) == DOCS
    assert sink.total == 0
    assert not list(tmp_path.glob("*.tmp"))


def test_bad_jsonl_records_counted_and_written_aside(tmp_path):
    f = tmp_path / "a.jsonl"
    f.write_bytes(b'{"text": "good one", "url": "http://x"}\n'
                  b'\n'
                  b'{"text": "broken\n'
                  b'{"id": "u", "text": "bad \xff utf8"}\n'
                  b'{"id": "m", "title": "no text"}\n'
                  b'{"id": "n", "text": 42}\n'
                  b'[1, 2]\n'
                  b'{"id": "big", "text": "' + b"x" * 500 + b'"}\n'
                  b'{"id": "last", "text": "good two"}')  # no final newline
    sink = ErrorSink(tmp_path / "rejects.jsonl")
    docs = list(iter_documents(f, sink, max_doc_bytes=100))
    sink.close()
    assert [d["text"] for d in docs] == ["good one", "good two"]
    # a missing id is derived from file and line, deterministically
    assert docs[0]["id"] == f"{f}:1" and docs[0]["meta"]["url"] == "http://x"
    assert sink.counts == {"malformed_json": 1, "invalid_utf8": 1, "missing_text": 2,
                           "not_object": 1, "too_large": 1}
    rejects = [json.loads(l) for l in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["reason"]) for r in rejects] == [
        (3, "malformed_json"), (4, "invalid_utf8"), (5, "missing_text"), (6, "missing_text"),
        (7, "not_object"), (8, "too_large")]
    assert all(r["file"] == str(f) for r in rejects)


def test_unreadable_and_unsupported_files_continue(tmp_path):
    (tmp_path / "a_bad.jsonl.gz").write_bytes(b"this is not gzip")
    (tmp_path / "b_trunc.jsonl.zst").write_bytes(b"\x28\xb5\x2f\xfd garbage")
    (tmp_path / "c.docx").write_text("x,y")   # .csv is read now
    (tmp_path / "d.txt").write_text("plain text document")
    (tmp_path / "e.txt").write_bytes(b"latin \xe9")
    sink = ErrorSink()
    docs = list(iter_documents([tmp_path], sink))
    assert [d["text"] for d in docs] == ["plain text document"]
    assert sink.counts == {"unreadable": 2, "unsupported_format": 1, "invalid_utf8": 1}
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):   # a named input that is not there
        list(iter_documents([tmp_path, tmp_path / "missing.jsonl"], sink))


def test_folder_recursive_sorted_and_html(tmp_path):
    sub = tmp_path / "z" / "deep"
    sub.mkdir(parents=True)
    write_documents(sub / "x.jsonl.zst", DOCS[:2])
    (tmp_path / "a.txt").write_text("first")
    (tmp_path / "p.html").write_bytes("<html><body><p>café</p></body></html>".encode("latin-1"))
    with gzip.open(tmp_path / "m.jsonl.gz", "wt") as fh:
        fh.write(json.dumps({"text": "gz"}) + "\n")
    sink = ErrorSink()
    docs = list(iter_documents(str(tmp_path), sink))
    assert [d["text"][:5] for d in docs] == ["first", "gz", "<html", DOCS[0]["text"][:5],
                                               DOCS[1]["text"][:5]]
    html = docs[2]
    assert html["meta"]["format"] == "html" and "café" in html["text"]
    assert sink.total == 0
    # the same inputs give the same ids
    assert [d["id"] for d in iter_documents(str(tmp_path))] == [d["id"] for d in docs]


def test_sharded_writer(tmp_path):
    w = ShardedWriter(tmp_path, "part", "jsonl.zst", docs_per_shard=10)
    for d in DOCS:
        w.write(d)
    paths = w.close()
    assert [p.name for p in paths] == [f"part-0000{i}.jsonl.zst" for i in range(3)]
    assert list(iter_documents(tmp_path)) == DOCS
