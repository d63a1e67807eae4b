"""Exact-substring dedup on code keeps files parseable (issue 35): spans snap to whole lines,
a file that parsed as Python still parses, repeated licence headers are still removed, and a
mostly repeated file is dropped whole under its own reason. Real standard-library source."""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

from lmforge.config import load
from lmforge.data.config import DataConfig
from lmforge.data.dedup import substring
from lmforge.data.dedup.snap import line_spans, parses, snap_document
from lmforge.data.pipeline import iter_shard, kept_shards, run_pipeline

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from substring_code import HEADER, MARK  # noqa: E402  (the bench's licence header)

STDLIB = Path(sys.modules["os"].__file__).parent


def stdlib_files(n: int, max_bytes: int = 40_000) -> list[tuple[str, str]]:
    """n stdlib modules under max_bytes, spread over the tree by a hash of the path; 1 in 3
    with the Apache licence header on top (vendored code)."""
    paths = sorted(p for p in STDLIB.rglob("*.py") if "site-packages" not in p.parts
                   and "dist-packages" not in p.parts and 2000 < p.stat().st_size <= max_bytes)
    paths.sort(key=lambda p: hashlib.sha1(str(p.relative_to(STDLIB)).encode()).hexdigest())
    out = []
    for p in paths[:n]:
        text = p.read_text("utf-8", errors="replace")
        rel = str(p.relative_to(STDLIB))
        headed = int(hashlib.sha1(rel.encode()).hexdigest()[:2], 16) % 3 == 0
        out.append((rel, HEADER + text if headed else text))
    return out


@pytest.fixture(scope="module")
def code():
    files = stdlib_files(160)
    # shared blocks as in a real corpus: a vendored copy of one module, edited slightly,
    # pasted into another file (mid-file, so the found spans start and end mid-line)
    donor = files[0][1]
    files.append(("vendored.py", "import os\n\n" + donor.replace("def ", "def  ", 1) + "\n\nX = 1\n"))
    return files


def test_line_spans_keep_only_complete_lines():
    data = b"alpha = 1\nbeta = 2\ngamma = 3\n"
    assert line_spans(data, [(3, 25)]) == [(10, 19)]          # "beta = 2\n" only
    assert line_spans(data, [(0, 10)]) == [(0, 10)]           # a whole first line
    assert line_spans(data, [(12, 18)]) == []                 # inside one line: nothing
    assert line_spans(b"a\nbb", [(1, 4)]) == [(2, 4)]         # the last line ends the document


def test_stdlib_code_still_parses_and_headers_go(code):
    texts = [t for _, t in code]
    cut = substring.dedup_texts(texts, 100)
    out = substring.dedup_texts(texts, 100, line_docs=[True] * len(texts))
    before = [parses(t.encode()) for t in texts]
    assert sum(before) >= 150
    # without snapping, cuts leave files that no longer parse: the failure this test guards
    assert sum(1 for b, c in zip(before, cut) if b and not parses(c.encode())) >= 1
    kept = [(b, o) for b, o in zip(before, out) if o is not None]
    assert all(parses(o.encode()) for b, o in kept if b), "a kept file that parsed no longer parses"
    headed = [i for i, t in enumerate(texts) if t.startswith(HEADER)]
    assert len(headed) >= 30
    left = [i for i in headed[1:] if out[i] is not None and MARK in out[i]]
    assert left == [], f"{len(left)} repeated licence headers left"
    assert MARK in out[headed[0]]                      # the first occurrence stays
    for t, o in zip(texts, out):                       # only whole lines went
        if o is not None:
            lines = t.splitlines(keepends=True)
            pos = 0
            for line in o.splitlines(keepends=True):
                pos = lines.index(line, pos) + 1 if line in lines[pos:] else -1
                assert pos > 0, line


def test_mostly_repeated_file_dropped_whole():
    text = "".join(f"value_{i} = compute({i}, 'some argument that is long enough')\n" for i in range(60))
    data = text.encode()
    r = snap_document(data, [(0, int(len(data) * 0.8))])
    assert r.reason == "substring_code_repeated" and r.spans == []
    r = snap_document(data, [(5, len(data) // 3)])
    assert r.reason is None and r.spans and all(data[s - 1:s] == b"\n" for s, _ in r.spans)


def test_span_that_breaks_the_module_shrinks_to_whole_statements():
    a = "def first(x):\n    y = x + 1\n    return y\n\n"
    b = "def second(z):\n    return z * 2\n\n"
    data = (a + b + "print(first(1))\n").encode()
    # removing from inside first()'s body through the def line of second() leaves
    # "def first(x):\n    y = x + 1\n    return z * 2": parses but only by luck; take a
    # span that leaves a def without a body instead
    s = data.index(b"    y = x")
    e = data.index(b"def second") + len("def second(z):\n")
    r = snap_document(data, [(s, e)], max_repeated_share=None)
    out = substring.apply_spans(data, r.spans).encode()
    assert parses(out)


def test_pipeline_snaps_code_domain_only(tmp_path, code):
    raw = tmp_path / "raw"
    raw.mkdir()
    lines = [json.dumps({"id": rel, "text": t, "meta": {"domain": "code"}}) for rel, t in code]
    prose = "The quick survey of the river banks took most of the morning. " * 3
    lines += [json.dumps({"id": f"p{i}", "text": f"Note {i}. " + prose + f"Ending {i} with a sentence of its own here.",
                          "meta": {"domain": "prose"}}) for i in range(2)]
    (raw / "a.jsonl").write_text("\n".join(lines) + "\n")
    cfg = load(DataConfig, data={"input": [str(raw)], "output": str(tmp_path / "out"),
                                 "workers": 1, "progress": False, "steps": ["substring"]})
    summary = run_pipeline(cfg, log=lambda *a: None)
    step = summary["steps"][-1]
    snap = step["line_snapping"]
    assert snap["docs"] >= 30 and snap["python"] >= 30
    docs = {d["id"]: d["text"] for p in kept_shards(tmp_path / "out" / "01-substring") for d in iter_shard(p)}
    originals = dict(code)
    for rel, t in docs.items():
        if rel in originals and parses(originals[rel].encode()):
            assert parses(t.encode()), rel
    assert docs["p1"] == "Note 11 with a sentence of its own here."   # prose: cut mid-line as before


def test_config_refuses_bad_share():
    from lmforge.config import ConfigError
    with pytest.raises(ConfigError, match="max_repeated_share"):
        load(DataConfig, data={"input": ["x"], "substring": {"max_repeated_share": 0}})
