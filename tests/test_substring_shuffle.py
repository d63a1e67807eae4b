"""Exact-substring dedup as executor stages (dedup/substring_shuffle.py) gives the spans of
the single-process path (substring.removal_spans) on real text with planted edited copies,
whatever the partitions, chunk size and workers; the pipeline step gives the same kept
documents either way, code snapping included."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from lmforge.config import load
from lmforge.data.config import DataConfig
from lmforge.data.dedup import substring
from lmforge.data.dedup import substring_shuffle as S
from lmforge.data.dedup.substring_kernels import mark_repeats, window_rows
from lmforge.data.dedup.synthetic import plant_near_duplicates, repeated_spans, stdlib_documents
from lmforge.data.executor import LocalExecutor
from lmforge.data.pipeline import iter_shard, kept_shards, run_pipeline
from lmforge.io.writers import write_documents


@pytest.fixture(scope="module")
def corpus():
    """Mostly unique real text (stdlib code in 60-line documents), 15% planted copies at
    2-8% word edits, shuffled in (so a copy can come before its source), plus random
    texts with shared spans, CJK and 4-byte characters, and documents shorter than K."""
    base = stdlib_documents(700)
    texts, _ = plant_near_duplicates(base, 60, 0.02, seed=1)
    more, _ = plant_near_duplicates(base, 45, 0.08, seed=2)
    texts += more[len(base):] + repeated_spans(40, seed=3) + ["", "short", "x" * 99]
    order = np.random.default_rng(0).permutation(len(texts))
    return [texts[i] for i in order]


def shards_of(texts, folder, per_shard):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in range(0, len(texts), per_shard):
        p = folder / f"shard-{s // per_shard:05d}.jsonl.zst"
        write_documents(p, ({"id": str(i), "text": t} for i, t in enumerate(texts[s:s + per_shard], s)))
        paths.append(p)
    return paths


def reference(texts, k, keep_layout):
    data = [t.encode() for t in texts]
    st: dict = {}
    spans = substring.removal_spans(lambda lo, hi: data[lo:hi], [len(d) for d in data], k,
                                    1 << 40, keep_layout, stats=st)
    return spans, st


def run_shuffle(paths, work, workers, **kw):
    ctx = SimpleNamespace(inputs=paths, work=work, dir=work, executor=LocalExecutor(workers, False))
    work.mkdir(parents=True, exist_ok=True)
    st = S.shuffle_spans(ctx, **kw)
    got = []
    for s, p in enumerate(paths):
        got.append(np.load(work / f"spans-{s:05d}.npy"))  # doc index within the shard
    return got, st


@pytest.mark.parametrize("k,keep_layout,parts,chunk,workers", [
    (100, True, None, S.CHUNK_BYTES, 1),   # one partition, one chunk per shard
    (100, True, 3, 20_000, 2),             # several partitions and chunks, worker processes
    (50, False, 7, 60_000, 1),
])
def test_shuffle_equals_single_process(tmp_path, corpus, k, keep_layout, parts, chunk, workers):
    per_shard = 200
    paths = shards_of(corpus, tmp_path / "shards", per_shard)
    want, wst = reference(corpus, k, keep_layout)
    got, st = run_shuffle(paths, tmp_path / "w", workers, k=k, keep_layout=keep_layout,
                          partitions=parts, chunk_bytes=chunk)
    for s, sp in enumerate(got):
        mine = want[(want[:, 0] >= s * per_shard) & (want[:, 0] < (s + 1) * per_shard)].copy()
        mine[:, 0] -= s * per_shard
        assert sp.tolist() == mine.tolist(), s
    assert st["spans"] == len(want) > 100
    removed = int((want[:, 2] - want[:, 1]).sum())
    assert st["span_bytes"] == removed and 0.03 < st["span_fraction"] < 0.5
    assert st["layout_spans_kept"] == wst["layout_spans_kept"]
    assert st["layout_bytes_kept"] == wst["layout_bytes_kept"]
    assert st["partitions"] == (parts or 1)
    assert not (tmp_path / "w" / "shuffle").exists()  # the shuffle files are deleted


def test_window_rows_and_repeats_against_brute_force():
    rng = np.random.default_rng(5)
    docs = [bytes(rng.choice(list(b"ab\xc3\xa9"), size=int(rng.integers(0, 60)))) for _ in range(30)]
    buf, offsets = S._join(docs)
    arr = np.frombuffer(buf, np.uint8)
    k, bits = 6, 4
    key, pos, off = window_rows(arr, offsets, k, bits)
    starts = [p for d in range(len(docs)) for p in range(offsets[d], offsets[d + 1] - k)]
    assert sorted(pos.tolist()) == starts  # every window inside a document, once
    assert off[0] == 0 and off[-1] == len(key) and np.all(np.diff(off) >= 0)
    for b in range(1 << bits):  # text order within a bucket; equal windows share a bucket
        assert np.all(np.diff(pos[off[b]:off[b + 1]].astype(np.int64)) > 0)
    by_window = {}
    for i, p in enumerate(pos.tolist()):
        w = buf[p:p + k]
        b = int(np.searchsorted(off, i, side="right") - 1)
        assert by_window.setdefault(w, (int(key[i]), b)) == (int(key[i]), b)
    # repeats over two calls sharing a table = windows seen earlier, in row order
    order = np.argsort(pos, kind="stable")
    keys = key[order]
    table = np.zeros(256, np.uint64)
    later = np.zeros(len(keys), np.bool_)
    half = len(keys) // 2
    n = mark_repeats(keys[:half], table, later[:half]) + mark_repeats(keys[half:], table, later[half:])
    seen, want = set(), []
    for p in pos[order].tolist():
        want.append(buf[p:p + k] in seen)
        seen.add(buf[p:p + k])
    assert later.tolist() == want and n == sum(want) > 10


def test_bucket_ranges_balance_and_cover():
    counts = np.array([5, 0, 0, 7, 1, 1, 1, 9, 0, 2])
    e = S.bucket_ranges(counts, 3)
    assert e[0] == 0 and e[-1] == len(counts) and np.all(np.diff(e) > 0)
    assert len(e) - 1 <= 3
    sums = [counts[a:b].sum() for a, b in zip(e[:-1], e[1:])]
    assert max(sums) <= counts.sum() / 3 + counts.max()  # balanced up to one bucket
    assert S.bucket_ranges(np.zeros(8, np.int64), 4).tolist() == [0, 8]


def _pipeline(tmp_path, raw, mode, name, **sub):
    out = tmp_path / name
    cfg = load(DataConfig, data={"input": [str(raw)], "output": str(out), "workers": 2,
                                 "progress": False, "steps": ["substring"], "docs_per_shard": 150,
                                 "substring": {"mode": mode, **sub}})
    summary = run_pipeline(cfg, log=lambda *a: None)
    docs = [(d["id"], d["text"]) for p in kept_shards(out / "01-substring") for d in iter_shard(p)]
    return docs, summary["steps"][-1]


def test_pipeline_modes_give_the_same_output(tmp_path, corpus):
    """Prose and code documents (line snapping on code): mode driver and mode shuffle keep
    the same documents with the same text; auto picks by the shards' size on disk."""
    raw = tmp_path / "raw"
    raw.mkdir()
    rows = [json.dumps({"id": str(i), "text": t, "meta": {"domain": "code" if i % 2 else "prose"}})
            for i, t in enumerate(corpus)]
    (raw / "a.jsonl").write_text("\n".join(rows) + "\n")
    d_docs, d_st = _pipeline(tmp_path, raw, "driver", "d")
    s_docs, s_st = _pipeline(tmp_path, raw, "shuffle", "s", partitions=2)
    assert d_st["plan"] == "driver" and s_st["plan"] == "shuffle"
    assert d_st["line_snapping"]["docs"] > 10  # code documents were snapped to lines
    assert s_docs == d_docs and len(d_docs) < len(corpus)
    for key in ("spans", "span_bytes", "span_fraction", "line_snapping", "kept",
                "removed", "layout_spans_kept", "layout_bytes_kept"):
        assert s_st[key] == d_st[key], key
    _, a_st = _pipeline(tmp_path, raw, "auto", "a", driver_max_bytes=1 << 30)
    assert a_st["plan"] == "driver"
    _, a_st = _pipeline(tmp_path, raw, "auto", "b", driver_max_bytes=1000)
    assert a_st["plan"] == "shuffle"
