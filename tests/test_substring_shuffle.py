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
from lmforge.data.dedup import blockio, substring
from lmforge.data.dedup import substring_shuffle as S
from lmforge.data.dedup.substring_kernels import (later_from_bits, mark_repeats, n_windows,
                                                  window_rows)
from lmforge.data.dedup.synthetic import plant_near_duplicates, repeated_spans, stdlib_documents
from lmforge.data.executor import LocalExecutor
from lmforge.data.pipeline import iter_shard, kept_shards, run_pipeline
from lmforge.io.writers import write_documents
from test_data_dedup import brute_substring


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


@pytest.mark.parametrize("k,keep_layout,parts,chunk,workers,bits", [
    (100, True, None, S.CHUNK_BYTES, 1, None),  # one partition, one chunk per shard
    (100, True, 3, 20_000, 2, None),            # several partitions and chunks, worker processes
    (50, False, 7, 60_000, 1, S.BIG_BITS),      # the buckets of a corpus above BIG_STORED
    (100, True, 2, S.CHUNK_BYTES, 1, 3),        # buckets above GROUP_ROWS, split by key bits
])
def test_shuffle_equals_single_process(tmp_path, corpus, k, keep_layout, parts, chunk, workers,
                                       bits, monkeypatch):
    if bits == 3:  # and one case with the big files through the page cache (no O_DIRECT)
        monkeypatch.setattr(blockio, "DIRECT", 0)
    if bits == S.BIG_BITS:  # repeat tasks in READ_PARTS sub-ranges (the corpus is too small)
        monkeypatch.setattr(S, "READ_MIN", 1)
    per_shard = 200
    paths = shards_of(corpus, tmp_path / "shards", per_shard)
    want, wst = reference(corpus, k, keep_layout)
    got, st = run_shuffle(paths, tmp_path / "w", workers, k=k, keep_layout=keep_layout,
                          partitions=parts, chunk_bytes=chunk, bits=bits)
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


def test_window_kernels_against_brute_force():
    """Rows are every window inside a document, grouped by bucket (equal windows: equal key,
    same bucket); mark_repeats over chunks = "seen at an earlier row" in corpus order;
    later_from_bits maps row flags (packed) back to window positions."""
    rng = np.random.default_rng(5)
    docs = [bytes(rng.choice(list(b"ab\xc3\xa9"), size=int(rng.integers(0, 60)))) for _ in range(40)]
    k, bits = 6, 4
    chunks = [docs[:25], docs[25:]]
    keys, offs, starts, seen_at = [], [], [], {}
    for ch in chunks:
        buf, offsets = S._join(ch)
        arr = np.frombuffer(buf, np.uint8)
        nw = n_windows(offsets, k)
        key, ids = np.empty(nw + 3, np.uint64), np.empty(nw + 3, np.uint16)  # may be longer
        off = window_rows(arr, offsets, k, bits, ids, key)
        key = key[:nw]
        wins = [p for d in range(len(ch)) for p in range(offsets[d], offsets[d + 1] - k)]
        assert len(key) == off[-1] == len(wins) and np.all(np.diff(off) >= 0)
        # the row of each window: identity flags give back a window's own row index
        rowid = np.arange(len(key))
        for r in range(len(key)):  # later_from_bits with a one-hot flag finds window r
            one = rowid == r
            hit = np.flatnonzero(later_from_bits(len(arr), offsets, k, ids, off[:-1],
                                                 np.packbits(one), np.ones(len(arr) + 5, bool)))
            assert len(hit) == 1
            w = buf[hit[0]:hit[0] + k]
            b = int(np.searchsorted(off, r, side="right") - 1)
            assert seen_at.setdefault(w, (int(key[r]), b)) == (int(key[r]), b)
            starts.append((len(keys), r, w, int(hit[0])))
        keys.append(key)
        offs.append(off + sum(len(x) for x in keys[:-1]))
    allkeys = np.concatenate(keys)
    for group in (1, 5, 1 << 20):  # tables per bucket group: the result does not depend on it
        later, n = mark_repeats(allkeys, np.stack(offs), group, 2 / 3)
        seen, want = set(), np.zeros(len(allkeys), bool)
        for c in range(len(chunks)):  # corpus order: chunk, then text position
            for _, r, w, pos in sorted((x for x in starts if x[0] == c), key=lambda x: x[3]):
                want[offs[c][0] + r] = w in seen
                seen.add(w)
        assert later.tolist() == want.tolist() and n == want.sum() > 10
        dirty = np.ones(len(allkeys) + 3, bool)  # a caller's scratch: cleared, then filled
        again, n2 = mark_repeats(allkeys, np.stack(offs), group, 2 / 3, dirty)
        assert again.tolist() == want.tolist() and n2 == n


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


def _both_paths(tmp_path, texts, k, keep_layout):
    """dedup_texts on the driver path, and the same texts through the shuffle's spans."""
    driver = substring.dedup_texts(texts, k, keep_layout=keep_layout)
    paths = shards_of(texts, tmp_path, per_shard=max(1, len(texts) // 2))
    got, _ = run_shuffle(paths, tmp_path / "w", 1, k=k, keep_layout=keep_layout, partitions=2,
                         chunk_bytes=300)
    per = max(1, len(texts) // 2)
    shuffle = []
    for i, t in enumerate(texts):
        sp = got[i // per]
        mine = sp[sp[:, 0] == i % per][:, 1:].tolist()
        shuffle.append(substring.apply_spans(t.encode(), mine))  # strict UTF-8 decode
    return driver, shuffle


def test_characters_covered_by_windows_from_continuation_bytes(tmp_path):
    """A character goes when all its bytes are covered, also when the windows that cover
    it start on continuation bytes of the character before (whose lead byte stays): here
    the k + 1 bytes after 席's lead repeat those after 中's, so 'i' is covered only by the
    window that starts on 席's last byte."""
    k = 10
    texts = ["q中abcdefghiZ", "r席abcdefghiY"]  # 中 = E4 B8 AD, 席 = E5 B8 AD
    want = [texts[0], "r席Y"]
    assert brute_substring(texts, k) == want
    for keep_layout in (False, True):
        driver, shuffle = _both_paths(tmp_path / str(keep_layout), texts, k, keep_layout)
        assert driver == shuffle == want
    # two runs of covered bytes that touch inside 中 (E4 B8 | AD): the first repeats up to
    # 丸's E4 B8, the second from 乭's AD (E4 B9 AD); every byte is covered, so all goes
    texts = ["abcdefghi丸Z", "乭jklmnopqr", "abcdefghi中jklmnopqr"]
    want = texts[:2] + [""]
    assert brute_substring(texts, k) == want
    driver, shuffle = _both_paths(tmp_path / "touch", texts, k, False)
    assert driver == shuffle == want


@pytest.mark.parametrize("seed", range(3))
def test_spans_delete_whole_characters_like_brute_force(tmp_path, seed):
    """Random text over 2-, 3- and 4-byte characters that share continuation bytes, with
    small K (many windows start inside characters): both paths equal the brute force."""
    rng = np.random.default_rng(seed)
    chars = ["中", "席", "丸", "é", "ä", "😀", "😃", "a", " ", "-"]
    pieces = ["".join(rng.choice(chars, size=int(rng.integers(3, 12)))) for _ in range(12)]
    texts = ["".join(rng.choice(pieces, size=int(rng.integers(0, 9)))) for _ in range(30)]
    for k in (4, 7, 13):
        for keep_layout in (False, True):
            want = brute_substring(texts, k, keep_layout=keep_layout)
            driver, shuffle = _both_paths(tmp_path / f"{k}{keep_layout}", texts, k, keep_layout)
            assert driver == want, (k, keep_layout)
            assert shuffle == want, (k, keep_layout)
