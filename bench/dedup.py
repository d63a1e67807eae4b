"""Dedup benchmark: the pipeline's MinHash and substring steps, as `lmforge data` runs them.

    .venv/bin/python bench/dedup.py [--docs 12000] [--substring-mb 100] [--skip-before]

Corpus (real, mostly unique text): the standard library's .py files, the Python docs'
reST sources if installed (`apt-get install python3.11-doc`), then the venv's
site-packages .py files, in sorted order, exact duplicate files skipped.

MinHash: documents of 60 lines (code) or ~300 words (docs), plus planted copies of 20% of
them with 1%, 2%, 3% or 5% of their words edited (replaced, deleted or inserted). The
pipeline's minhash step (`run_pipeline`, steps [minhash], the step's own `seconds`) runs
with workers 1 and 2 at the default settings; datasketch MinHash + MinHashLSH runs at the
same threshold, num_perm, seed and n-grams in the same run. Recall: share of planted
copies removed; precision: share of removed documents that are planted copies.

Substring: the pipeline's substring step (workers 1 and 2: the suffix array or hash table
runs in the driver, applying the spans runs per shard) and the core (`removal_spans`) of
each method in a fresh process for its peak RSS, against the implementation before
issue 15 (numpy post-processing of the suffix array, kept below as the baseline).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np

from lmforge.config import load
from lmforge.data.config import DataConfig, MinhashConfig
from lmforge.data.dedup.evaluate import datasketch_keep, planted_quality, true_jaccard
from lmforge.data.dedup.synthetic import plant_near_duplicates
from lmforge.data.pipeline import final_documents, run_pipeline
from lmforge.io.writers import write_documents

DOCS = Path("/usr/share/doc/python3.11/html/_sources")
EDITS = (0.01, 0.02, 0.03, 0.05)


# ------------------------------------------------------------------ corpus


def iter_real_files():
    """(path, text) of the stdlib's .py files, the docs' reST sources, then site-packages'
    .py files, in sorted order; exact duplicate files skipped."""
    paths = sysconfig.get_paths()
    groups = [sorted(Path(paths["stdlib"]).glob("*.py")),
              sorted(DOCS.rglob("*.txt")) if DOCS.is_dir() else [],
              sorted(Path(paths["purelib"]).rglob("*.py"))]
    seen = set()
    for f in (f for g in groups for f in g):
        try:
            t = f.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        h = hashlib.sha1(t.encode()).digest()
        if h not in seen and t.strip():
            seen.add(h)
            yield f, t


def real_files(target_bytes: float) -> list[str]:
    out, size = [], 0
    for _, t in iter_real_files():
        out.append(t)
        size += len(t.encode())
        if size >= target_bytes:
            break
    return out


def chunks(path: Path, text: str, lines: int = 60, min_words: int = 80) -> list[str]:
    """Documents: consecutive paragraphs of >= 300 words (reST) or 60 lines (code)."""
    if path.suffix == ".txt":
        out, cur = [], []
        for p in text.split("\n\n"):
            cur.append(p)
            if sum(len(x.split()) for x in cur) >= 300:
                out.append("\n\n".join(cur))
                cur = []
        return out
    rows = text.splitlines()
    docs = ["\n".join(rows[i:i + lines]) for i in range(0, len(rows), lines)]
    return [d for d in docs if len(d.split()) >= min_words]


def minhash_corpus(n_docs: int, seed: int = 0, edits: tuple = EDITS):
    base = []
    for path, t in iter_real_files():
        base += chunks(path, t)
        if len(base) >= n_docs:
            break
    base = base[:n_docs]
    texts, orig, edit = list(base), np.full(len(base), -1), np.full(len(base), np.nan)
    per_rate = n_docs // 5 // len(edits)
    for k, e in enumerate(edits):  # plants of each edit rate, from distinct sources
        planted, o = plant_near_duplicates(base, per_rate, e, seed=seed + k)
        texts += planted[len(base):]
        orig = np.concatenate([orig, o[len(base):]])
        edit = np.concatenate([edit, np.full(per_rate, e)])
    return texts, orig, edit


# ------------------------------------------------------------------ pipeline runs


def run_step(texts: list[str], step: str, workers: int, work: Path, **settings):
    """Run read + `step` on texts; returns (keep mask or kept texts, step stats)."""
    raw = work / "raw"
    if not raw.exists():
        raw.mkdir(parents=True)
        write_documents(raw / "corpus.jsonl.zst", ({"id": str(i), "text": t}
                                                   for i, t in enumerate(texts)))
    out = work / f"out-{step}-{workers}"
    cfg = load(DataConfig, data={"input": [str(raw)], "output": str(out), "steps": [step],
                                 "workers": workers, "progress": False,
                                 "docs_per_shard": 20000, step: settings})
    summary = run_pipeline(cfg, log=lambda *a: None)
    return list(final_documents(out)), summary["steps"][1]


def bench_minhash(n_docs: int, work: Path) -> None:
    texts, orig, edit = minhash_corpus(n_docs)
    mb = sum(len(t.encode()) for t in texts) / 1e6
    cfg = MinhashConfig()
    rows, per_edit = [], {}
    t = time.perf_counter()
    keep = datasketch_keep(texts, cfg)
    rows.append(("datasketch MinHash + MinHashLSH", time.perf_counter() - t, keep, {}))
    for w in (1, 2):
        docs, st = run_step(texts, "minhash", w, work)
        keep = np.zeros(len(texts), dtype=bool)
        keep[[int(d["id"]) for d in docs]] = True
        rows.append((f"lmforge minhash step, workers {w}", st["seconds"], keep, st))
    st = rows[-1][3]
    print(f"\nMinHash: {len(texts)} documents ({(orig >= 0).sum()} planted copies), {mb:.1f} MB; "
          f"threshold {cfg.threshold}, {cfg.num_perm} perms, word {cfg.ngram}-grams; lmforge "
          f"bands x rows {st['bands']} x {st['rows']}, {st['candidate_pairs']} candidate pairs, "
          f"largest bucket {st['largest_bucket']}")
    base = rows[0][1]
    print(f"| implementation | s | docs/s | vs datasketch | recall | precision | "
          + " | ".join(f"recall @{e:.0%} edits" for e in EDITS) + " |")
    print("|---|---|---|---|---|---|" + "---|" * len(EDITS))
    for name, dt, keep, _ in rows:
        rec, prec = planted_quality(keep, orig)
        by = [(~keep[edit == e]).mean() for e in EDITS]
        print(f"| {name} | {dt:.2f} | {len(texts) / dt:.0f} | {base / dt:.2f}x | {rec:.3f} | "
              f"{prec:.3f} | " + " | ".join(f"{r:.3f}" for r in by) + " |")
    jac = true_jaccard(texts, orig, cfg.ngram)
    print("\nTrue Jaccard of word 5-gram sets, planted copy vs source (median [10th, 90th pct]):")
    print(" | ".join(f"{e:.0%} edits: {np.nanmedian(jac[edit == e]):.2f} "
                     f"[{np.nanpercentile(jac[edit == e], 10):.2f}, "
                     f"{np.nanpercentile(jac[edit == e], 90):.2f}]" for e in EDITS))
    print("similarity histogram of removed documents (bins of 0.05 from 0.7):",
          st["similarity_histogram"]["removed_docs"][14:])


# ------------------------------------------------------------------ substring

_CORE = r"""
import json, sys, time
sys.path.insert(0, {bench!r})
import numpy as np
from dedup import real_files, before_issue15
from lmforge.data.dedup import substring
texts = real_files({target})
data = [t.encode() for t in texts]
sizes = [len(d) for d in data]
method = {method!r}
if method != "before":
    substring.dedup_texts(texts[:20], 100, method=method)  # load the compiled kernels
rss = int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) * 1024
t, c = time.perf_counter(), time.process_time()
if method == "before":
    spans = before_issue15(data, 100)
else:
    spans = substring.removal_spans(lambda lo, hi: data[lo:hi], sizes, 100, 1 << 40,
                                    keep_layout=False, method=method)
dt, cpu = time.perf_counter() - t, time.process_time() - c
peak = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) * 1024
removed = int((spans[:, 2] - spans[:, 1]).sum())
print(json.dumps({{"bytes": sum(sizes), "seconds": dt, "cpu": cpu, "peak_over": peak - rss,
                  "removed": removed, "sample": spans.tolist()[::97]}}))
"""


def core_run(method: str, target: float) -> dict:
    code = _CORE.format(bench=str(Path(__file__).parent), target=target, method=method)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_substring(target_mb: float, work: Path, skip_before: bool) -> None:
    target = target_mb * 1e6
    texts = real_files(target)
    mb = sum(len(t.encode()) for t in texts) / 1e6
    rows = []
    for method in (["before"] if not skip_before else []) + ["suffix_array", "hash"]:
        r = core_run(method, target)
        rows.append((f"core: {method}", r["seconds"], r["cpu"], r["peak_over"] / r["bytes"], r))
    from lmforge.data.dedup import substring

    for m in ("hash", "suffix_array"):  # load the compiled kernels before timing the step
        substring.dedup_texts(texts[:20], 100, method=m)
    for w in (1, 2):
        _, st = run_step(texts, "substring", w, work)
        rows.append((f"lmforge substring step, workers {w}", st["seconds"], None, None, st))
    samples = [r[4]["sample"] for r in rows if "sample" in r[4]]
    assert all(s == samples[0] for s in samples), "methods disagree"
    removed = rows[-1][4]["span_bytes"] / (mb * 1e6)
    print(f"\nExact substring dedup, K = 100 bytes: {len(texts)} files, {mb:.1f} MB, "
          f"{removed:.1%} of the bytes removed (layout-only spans kept in the step rows)")
    print("| implementation | wall s | MB/s | vs first | CPU s | MB/s per CPU s | vs first | "
          "peak RSS per corpus byte |")
    print("|---|---|---|---|---|---|---|---|")
    base, cbase = rows[0][1], rows[0][2]
    for name, dt, cpu, bpb, _ in rows:
        cols = (f"{cpu:.2f} | {mb / cpu:.1f} | {cbase / cpu:.2f}x | {bpb:.1f}" if cpu is not None
                else "- | - | - | -")
        print(f"| {name} | {dt:.2f} | {mb / dt:.1f} | {base / dt:.2f}x | {cols} |")


def before_issue15(data: list[bytes], k: int) -> np.ndarray:
    """The suffix-array post-processing of the implementation before issue 15 (numpy passes,
    int64 temporaries): the same result, kept here as the speed baseline."""
    from pydivsufsort import divsufsort, kasai

    lens = np.array([len(b) + 1 for b in data], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lens)])
    buf = b"\xff".join(data) + b"\xff"
    n, arr = len(buf), np.frombuffer(buf, dtype=np.uint8)
    sa = divsufsort(buf)
    lcp = kasai(buf, sa)
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = lcp[:-1] < k
    del lcp
    gmin = np.minimum.reduceat(sa, np.flatnonzero(new_group))
    gid = np.cumsum(new_group, dtype=np.int32) - 1
    later = np.zeros(n, dtype=bool)
    later[sa] = sa != gmin[gid]
    del sa, gid, gmin, new_group
    seps = np.cumsum(arr == 0xFF, dtype=np.int32)
    inside = np.zeros(n, dtype=bool)
    inside[:n - k + 1] = seps[k - 1:] - np.concatenate([[0], seps[:n - k]]) == 0
    later &= inside
    cs = np.cumsum(later, dtype=np.int32)
    cover = cs.copy()
    cover[k:] -= cs[:-k]
    mask = cover > 0
    lead = (arr & 0xC0) != 0x80
    starts = np.flatnonzero(lead)
    mask = np.minimum.reduceat(mask.astype(np.uint8), starts).astype(bool)[np.cumsum(lead) - 1]
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    s, e = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    doc = np.searchsorted(offsets, s, side="right") - 1
    return np.stack([doc, s - offsets[doc], e - offsets[doc]], axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=12000, help="MinHash: real documents")
    ap.add_argument("--substring-mb", type=float, default=100.0)
    ap.add_argument("--skip-before", action="store_true", help="leave out the old baseline")
    ap.add_argument("--only", choices=["minhash", "substring"])
    a = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # per-core figures (libdivsufsort has OpenMP)
    with tempfile.TemporaryDirectory() as tmp:
        if a.only != "substring":
            bench_minhash(a.docs, Path(tmp) / "minhash")
        if a.only != "minhash":
            bench_substring(a.substring_mb, Path(tmp) / "substring", a.skip_before)


if __name__ == "__main__":
    main()
