"""`lmforge data` reads what users have: WARC / WARC.gz (fastwarc), CSV and Markdown, with the
text / id / meta fields configurable; a run whose every record was rejected fails loudly."""
import csv
import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lmforge.io.account import DataError

from lmforge.cli import main
from lmforge.data.config import DataConfig
from lmforge.data.pipeline import final_documents, run_pipeline
from lmforge.io.documents import ErrorSink
from lmforge.io.readers import Fields, iter_documents

PARA = ("The harbour at dawn was quiet, and the fishing boats rocked slowly against the old stone pier "
        "while gulls argued over the remains of yesterday's catch. ")
HTML = (f"<html lang='en'><head><title>Harbour</title></head><body><nav><a href='/'>Home</a></nav>"
        f"<article><h1>Morning</h1><p>{PARA * 3}</p><p>Prices: 12 fish for 40 coins.</p></article>"
        f"<footer>All rights reserved</footer></body></html>")


def warc_record(kind: str, uri: str, block: bytes, content_type: str, rid: str) -> bytes:
    head = (f"WARC/1.0\r\nWARC-Type: {kind}\r\nWARC-Record-ID: <urn:uuid:{rid}>\r\nWARC-Target-URI: {uri}\r\n"
            f"WARC-Date: 2024-05-01T10:00:00Z\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(block)}\r\n\r\n").encode()
    return head + block + b"\r\n\r\n"


def http(status: str, ctype: str, body: bytes) -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


RECORDS = [
    ("response", "http://a.example/harbour", http("200 OK", "text/html; charset=utf-8", HTML.encode()),
     "application/http; msgtype=response", "00000000-0000-0000-0000-000000000001"),
    ("request", "http://a.example/harbour", b"GET /harbour HTTP/1.1\r\nHost: a.example\r\n\r\n",
     "application/http; msgtype=request", "00000000-0000-0000-0000-000000000002"),
    ("response", "http://b.example/caf\u00e9", http("200 OK", "text/html; charset=iso-8859-1",
                                                      "<html><body><p>Caf\u00e9 cr\u00e8me</p></body></html>"
                                                      .encode("latin-1")),
     "application/http; msgtype=response", "00000000-0000-0000-0000-000000000003"),
    ("response", "http://a.example/missing", http("404 Not Found", "text/html", b"<html>gone</html>"),
     "application/http; msgtype=response", "00000000-0000-0000-0000-000000000004"),
    ("response", "http://a.example/logo.png", http("200 OK", "image/png", b"\x89PNG\r\n\x1a\n" + bytes(40)),
     "application/http; msgtype=response", "00000000-0000-0000-0000-000000000005"),
    ("conversion", "http://c.example/notes", ("Plain notes from a WET file. " * 5).encode(), "text/plain",
     "00000000-0000-0000-0000-000000000006"),
]


def write_warc(path, gz: bool):
    with open(path, "wb") as f:
        for r in RECORDS:   # one gzip member per record, as crawlers write them
            f.write(gzip.compress(warc_record(*r)) if gz else warc_record(*r))
    return path


@pytest.mark.parametrize("gz", [False, True], ids=["warc", "warc.gz"])
def test_warc_records_become_documents(tmp_path, gz):
    path = write_warc(tmp_path / ("crawl.warc.gz" if gz else "crawl.warc"), gz)
    errors = ErrorSink()
    docs = list(iter_documents(path, errors))
    assert [d["meta"]["url"] for d in docs] == ["http://a.example/harbour", "http://b.example/caf\u00e9",
                                                 "http://c.example/notes"]
    assert docs[0]["id"] == "<urn:uuid:00000000-0000-0000-0000-000000000001>"
    assert docs[0]["text"] == HTML and docs[0]["meta"]["format"] == "html"
    assert "Caf\u00e9 cr\u00e8me" in docs[1]["text"]                      # declared latin-1, decoded
    assert docs[2]["meta"]["format"] == "text" and docs[2]["text"].startswith("Plain notes")
    assert dict(errors.counts) == {"warc_skipped": 2}
    assert sorted(r["detail"].split(": ")[1] for r in errors.records) == ["HTTP 404", "content type image/png"]


def test_warc_html_goes_through_the_extract_step(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    write_warc(raw / "crawl.warc.gz", gz=True)
    cfg = DataConfig(input=[str(raw)], output=str(tmp_path / "out"), steps=["extract"], workers=1, progress=False)
    summary = run_pipeline(cfg, log=lambda *a: None)
    docs = {d["meta"]["url"]: d for d in final_documents(tmp_path / "out")}
    text = docs["http://a.example/harbour"]["text"]
    assert "gulls argued" in text and "<p>" not in text and docs["http://a.example/harbour"]["meta"]["format"] == "text"
    read = summary["steps"][0]
    assert read["in"]["docs"] == 5 and read["removed"]["warc_skipped"]["docs"] == 2


def test_csv_markdown_and_field_names(tmp_path):
    rows = [{"id": "r1", "content": "def f(x):\n    return x, 1\n", "lang": "python", "stars": "3"},
            {"id": "r2", "content": 'say "hi", then go', "lang": "text", "stars": "0"}]
    with open(tmp_path / "code.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["id", "content", "lang", "stars"])
        w.writeheader()
        w.writerows(rows)
        f.write("r3,extra,cells,here,too\n")
    (tmp_path / "notes.md").write_text("# Title\n\nSome *markdown* text.\n", encoding="utf-8")
    stack = [{"content": "print('hi')\n", "max_stars_repo_path": "a.py", "size": 12}]
    (tmp_path / "stack.jsonl").write_text("".join(json.dumps(r) + "\n" for r in stack))
    pq.write_table(pa.Table.from_pylist(stack), tmp_path / "stack.parquet")
    errors = ErrorSink()
    fields = Fields("content", "id", ("lang",))
    docs = list(iter_documents([tmp_path / "code.csv", tmp_path / "notes.md"], errors, fields=fields))
    assert [(d["id"], d["text"], d["meta"]) for d in docs[:2]] == [
        ("r1", rows[0]["content"], {"lang": "python"}), ("r2", rows[1]["content"], {"lang": "text"})]
    assert docs[2]["text"].startswith("# Title") and docs[2]["meta"]["format"] == "markdown"
    assert dict(errors.counts) == {"malformed_csv": 1}
    got = list(iter_documents([tmp_path / "stack.jsonl", tmp_path / "stack.parquet"], errors,
                              fields=Fields(text_field="content")))
    assert [d["text"] for d in got] == ["print('hi')\n"] * 2
    assert got[0]["id"] == f"{tmp_path / 'stack.jsonl'}:1" and got[0]["meta"]["max_stars_repo_path"] == "a.py"


def test_every_record_rejected_fails_with_count_and_reasons(tmp_path, capsys):
    raw = tmp_path / "stack.jsonl"
    raw.write_text("".join(json.dumps({"content": f"x = {i}\n" * 20, "path": f"f{i}.py"}) + "\n" for i in range(7)))
    cfg = DataConfig(input=[str(raw)], output=str(tmp_path / "out"), steps=[], workers=1, progress=False)
    with pytest.raises(DataError, match=r"all 7 documents in .*stack.jsonl \(.*set text_field.*\) were rejected "
                                        r"\(missing_text 7\); first: .*stack.jsonl:1: missing_text"):
        run_pipeline(cfg, log=lambda *a: None)
    conf = tmp_path / "data.yaml"
    conf.write_text(f"input: [{raw}]\noutput: {tmp_path / 'out2'}\nsteps: []\nworkers: 1\n")
    assert main(["data", str(conf)]) == 5
    assert "all 7 documents in" in capsys.readouterr().err
    assert main(["data", str(conf), "--set", "text_field=content"]) == 0
    assert len(list(final_documents(tmp_path / "out2"))) == 7
