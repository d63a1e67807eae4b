"""MinHash speed and quality against datasketch and rensa, and the minhash step's driver
memory at two corpus sizes (issue 26, items 1 and 3).

    .venv/bin/python bench/minhash_speed.py [--docs 12000] [--sizes-mb 100 400] [--skip-rss]
        [--synthetic-gb 1 2 4 8] [--skip-speed]

1. Speed and quality, same run, same corpus, same threshold (0.7 and 0.8), 128
   permutations, seed 1, word 5-grams of the same units: real, mostly unique text (the
   stdlib's .py files, the Python docs' reST if installed, then site-packages; bench/dedup.py's
   corpus) plus planted copies of 20% of the documents with 1-5% of their words edited.
   Rows (each times signatures + LSH + components on one process, workers 1):
   - datasketch MinHash + MinHashLSH (query, then insert; lowest index of each component kept)
   - rensa RMinHash + RMinHashLSH the same way (its own string hashing, bands as datasketch)
   - rensa signatures of our shingle hashes (digest_matrix_from_flat_token_hashes) + our
     LSH and verification: is rensa's hashing compatible with our pipeline, recall kept?
   - lmforge numpy signatures (the code before issue 26) + our LSH and verification
   - lmforge compiled kernel (minhash_kernels.py) + our LSH and verification
   Recall: share of planted copies removed; precision: share of removed documents that
   are planted copies (natural near-duplicates in site-packages count against it).
2. Driver peak RSS of `lmforge data` with steps [minhash], workers 2, at two corpus sizes
   built from the real text (each document's words shuffled within lines at a per-copy
   seed, so copies are not near-duplicates), in a fresh process each: the driver's VmHWM
   (not its ru_maxrss: Linux carries ru_maxrss across execve, so a `python -c` child
   reports the bench process's RSS at the fork) and the largest worker's ru_maxrss (workers
   are forked from the driver, not exec'd). Input files of 10,000 documents and `partitions: 4`,
   because the local executor runs a map of a single task in the driver's own process
   (no fork cost), which would count that task's memory as the driver's.
3. --synthetic-gb: the same measurement on generated text of that many GB (the real text
   runs out at ~350 MB): documents of 150-400 words drawn from a Zipf-like vocabulary of
   50,000 random words (mostly unique), of which 5% are planted copies of an earlier
   document of the same file with 2% of their words replaced (true Jaccard of the 5-gram
   sets ~0.8, so the LSH has real candidates to verify and link). Default `partitions`
   (one per 2^23 band rows), the step's own sizing. Also: driver peak RSS above its start
   (VmHWM minus VmRSS once the step's modules are imported), CPU of the driver and its
   workers, and the output folder's peak disk (sampled every 2 s; input not counted).
   Folders under $BENCH_TMP (default: the system's temporary folder), one size at a time.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent / "helpers"))

from dedup import chunks, iter_real_files, minhash_corpus  # noqa: E402  (bench/dedup.py's corpus)
from disk_peak import DiskPeak, fits  # noqa: E402

from lmforge.data.config import MinhashConfig  # noqa: E402
from lmforge.data.dedup import minhash  # noqa: E402
from lmforge.data.dedup.evaluate import datasketch_keep, planted_quality, true_jaccard  # noqa: E402
from lmforge.data.text import units  # noqa: E402

EDITS = (0.01, 0.02, 0.03, 0.04, 0.05)


def corpus(n_docs: int, seed: int = 0):
    """bench/dedup.py's corpus (real text, planted copies from distinct sources) at 1-5% edits."""
    return minhash_corpus(n_docs, seed, EDITS)


def _keep_from_rep(rep: np.ndarray) -> np.ndarray:
    return rep == np.arange(len(rep))


def ours(texts, cfg, kernel: bool):
    t = time.perf_counter()
    if kernel:
        sigs = minhash.signatures_of_texts(texts, cfg)
    else:
        sh = minhash.Shingler(cfg.ngram, cfg.lowercase)
        sigs = minhash.MinHasher(cfg.num_perm, cfg.seed).signatures([sh(x) for x in texts])
    ts = time.perf_counter() - t
    return _keep_from_rep(minhash.dedup_signatures(sigs, cfg)), ts


def rensa_on_our_shingles(texts, cfg):
    from rensa import RMinHash

    t = time.perf_counter()
    sh = minhash.Shingler(cfg.ngram, cfg.lowercase)
    hashes = [sh(x) for x in texts]
    off = np.zeros(len(hashes) + 1, dtype=np.uint64)
    np.cumsum([len(h) for h in hashes], out=off[1:])
    m = RMinHash.digest_matrix_from_flat_token_hashes(np.concatenate(hashes), off, cfg.num_perm,
                                                      cfg.seed)
    sigs = np.asarray(m.to_rows(), dtype=np.uint32).reshape(len(texts), cfg.num_perm)
    empty = np.array([len(h) == 0 for h in hashes])
    sigs[empty] = minhash.EMPTY
    ts = time.perf_counter() - t
    return _keep_from_rep(minhash.dedup_signatures(sigs, cfg)), ts


def _shingle_strings(text, cfg):
    u = units(text, lowercase=cfg.lowercase)
    n = min(cfg.ngram, len(u))
    return [" ".join(u[j:j + n]) for j in range(len(u) - n + 1)]


def _divisor_bands(threshold: float, num_perm: int) -> int:
    """rensa needs bands dividing num_perm: the divisor with the least datasketch error
    (false positive + false negative area, equal weights)."""
    def err(b):
        r = num_perm // b
        return (minhash._integrate(lambda s: 1 - (1 - s ** r) ** b, 0.0, threshold)
                + minhash._integrate(lambda s: (1 - s ** r) ** b, threshold, 1.0))
    return min((b for b in range(1, num_perm + 1) if num_perm % b == 0), key=err)


def rensa_end_to_end(texts, cfg):
    """rensa as a user would run it: string shingles, RMinHash, RMinHashLSH (bands: the
    divisor of num_perm nearest datasketch's choice); query then insert; components as
    datasketch_keep."""
    from rensa import RMinHash, RMinHashLSH
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    t = time.perf_counter()
    mhs = []
    for x in texts:
        m = RMinHash(num_perm=cfg.num_perm, seed=cfg.seed)
        m.update(_shingle_strings(x, cfg))
        mhs.append(m)
    ts = time.perf_counter() - t
    b = _divisor_bands(cfg.threshold, cfg.num_perm)
    lsh = RMinHashLSH(cfg.threshold, cfg.num_perm, b)
    src, dst = [], []
    for i, m in enumerate(mhs):
        for j in lsh.query(m):
            src.append(i)
            dst.append(j)
        lsh.insert(i, m)
    n = len(texts)
    _, lab = connected_components(coo_matrix((np.ones(len(src)), (src, dst)), shape=(n, n)),
                                  directed=False)
    rep = np.full(lab.max() + 1, n)
    np.minimum.at(rep, lab, np.arange(n))
    return rep[lab] == np.arange(n), ts


def bench_speed(n_docs: int) -> None:
    texts, orig, edit = corpus(n_docs)
    mb = sum(len(t.encode()) for t in texts) / 1e6
    minhash.signatures_of_texts(texts[:50], MinhashConfig())  # compile / load the kernel once
    jac = true_jaccard(texts, orig, 5)
    print(f"\n{len(texts)} documents ({int((orig >= 0).sum())} planted copies), {mb:.1f} MB; true "
          "Jaccard of the copies, median by edit rate: "
          + ", ".join(f"{e:.0%} {np.nanmedian(jac[edit == e]):.2f}" for e in EDITS))
    for threshold in (0.7, 0.8):
        cfg = MinhashConfig(threshold=threshold)
        runs = [("datasketch MinHash + MinHashLSH", lambda: (datasketch_keep(texts, cfg), None)),
                ("rensa RMinHash + RMinHashLSH", lambda: rensa_end_to_end(texts, cfg)),
                ("rensa signatures of our shingles + our LSH/verify",
                 lambda: rensa_on_our_shingles(texts, cfg)),
                ("lmforge numpy signatures (before) + LSH/verify", lambda: ours(texts, cfg, False)),
                ("lmforge compiled kernel + LSH/verify", lambda: ours(texts, cfg, True))]
        b, r = minhash.bands_rows(cfg)
        print(f"\nthreshold {threshold}, {cfg.num_perm} permutations; lmforge bands x rows {b} x {r}")
        above = jac >= threshold  # copies that really are near-duplicates at this threshold
        print("| implementation | signatures s | total s | docs/s | vs datasketch | recall | "
              "recall of copies with J >= t | precision | "
              + " | ".join(f"recall @{e:.0%}" for e in EDITS) + " |")
        print("|---|---|---|---|---|---|---|---|" + "---|" * len(EDITS))
        base = None
        for name, fn in runs:
            t = time.perf_counter()
            keep, ts = fn()
            dt = time.perf_counter() - t
            base = base or dt
            rec, prec = planted_quality(keep, orig)
            by = [(~keep[edit == e]).mean() for e in EDITS]
            print(f"| {name} | {'' if ts is None else f'{ts:.2f}'} | {dt:.2f} | {len(texts) / dt:,.0f} | "
                  f"{base / dt:.1f}x | {rec:.3f} | {(~keep[above]).mean():.3f} | {prec:.3f} | " + " | ".join(f"{x:.3f}" for x in by)
                  + " |", flush=True)


_RSS = r"""
import json, resource, sys, time
from lmforge.config import load
from lmforge.data.config import DataConfig
from lmforge.data.pipeline import run_pipeline
from lmforge.data.executor import LocalExecutor
from lmforge.data.dedup import minhash_step  # the step's modules, before the start RSS
maps, _map = {{}}, LocalExecutor.map
def timed(self, fn, tasks, desc=""):  # wall seconds per kind of map (for per-stage costs)
    t = time.perf_counter()
    out = _map(self, fn, tasks, desc)
    key = " ".join(w for w in desc.split()[1:] if not w.isdigit()) or desc
    maps[key] = maps.get(key, 0.0) + time.perf_counter() - t
    return out
LocalExecutor.map = timed
def status(key):
    return int(open("/proc/self/status").read().split(key + ":")[1].split()[0]) * 1024
cfg = load(DataConfig, data={{"input": [{raw!r}], "output": {out!r}, "steps": ["minhash"],
                             "workers": 2, "progress": False,
                             "minhash": {{"partitions": {partitions!r}}}}})
start, t, c = status("VmRSS"), time.perf_counter(), time.process_time()
s = run_pipeline(cfg, log=lambda *a: None)
st = s["steps"][1]
kids = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({{"seconds": time.perf_counter() - t, "minhash_seconds": st["seconds"],
                  "docs": st["in"]["docs"], "bytes": st["in"]["bytes"],
                  "duplicates": st["duplicates"], "partitions": st["lsh_partitions"], "maps": maps,
                  "driver_rss": status("VmHWM"), "driver_over": status("VmHWM") - start,
                  "start_rss": start,
                  "cpu": time.process_time() - c + kids.ru_utime + kids.ru_stime,
                  "worker_rss": kids.ru_maxrss * 1024}}))
"""


def make_raw(folder: Path, target_mb: float) -> None:
    """Real text, re-used with each line's words shuffled per copy: mostly unique documents."""
    from lmforge.io.writers import write_documents

    base = []
    for path, t in iter_real_files():
        base += chunks(path, t)
        if len(base) >= 20000:
            break

    def docs():
        size, copy = 0, 0
        while True:
            rng = np.random.default_rng(copy)
            for i, d in enumerate(base):
                lines = [" ".join(rng.permutation(ln.split())) if copy else ln for ln in d.splitlines()]
                text = "\n".join(lines)
                size += len(text.encode())
                yield {"id": f"{copy}-{i}", "text": text}
                if size >= target_mb * 1e6:
                    return
            copy += 1
    folder.mkdir(parents=True)
    it, k = docs(), 0
    while True:  # files of ~25 MB: every read task runs in a worker, none in the driver
        batch = [d for _, d in zip(range(10000), it)]
        if not batch:
            break
        write_documents(folder / f"corpus-{k:04d}.jsonl.zst", batch)
        k += 1


def make_synthetic_raw(folder: Path, gb: float, seed: int = 0, per_file: int = 10000,
                       dup_share: float = 0.05, edit: float = 0.02) -> None:
    """Generated, mostly unique documents with planted near-copies (module docstring, 3.)."""
    from lmforge.io.writers import write_documents

    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = np.array(["".join(rng.choice(letters, size=int(rng.integers(3, 10))))
                      for _ in range(50000)], dtype=object)
    p = 1.0 / np.arange(1, len(vocab) + 1) ** 0.8  # Zipf-like, flatter: few common 5-grams
    cdf = np.cumsum(p / p.sum())
    folder.mkdir(parents=True)
    total, k = 0, 0
    while total < gb * 1e9:
        frng = np.random.default_rng([seed, k])
        lens = frng.integers(150, 401, size=per_file)
        ids = np.minimum(np.searchsorted(cdf, frng.random(int(lens.sum()))), len(vocab) - 1)
        ends = np.cumsum(lens)
        docs = [ids[e - n:e] for e, n in zip(ends, lens)]
        for i in np.flatnonzero(frng.random(per_file) < dup_share):
            if i == 0:
                continue
            src = docs[int(frng.integers(0, i))].copy()  # an earlier document of this file
            at = frng.random(len(src)) < edit
            src[at] = frng.integers(0, len(vocab), size=int(at.sum()))
            docs[i] = src
        texts = [" ".join(vocab[d].tolist()) for d in docs]
        write_documents(folder / f"corpus-{k:05d}.jsonl.zst",
                        ({"id": f"{k}-{i}", "text": t} for i, t in enumerate(texts)))
        total += sum(len(t) for t in texts)
        k += 1


DISK_PER_BYTE = 2.0  # output folder (kept shards, signatures, band rows) plus the input, rounded up


def bench_rss(sizes_mb: list[float], synthetic_gb: list[float]) -> None:
    stages = []
    print("\nDriver and workers of `lmforge data` (steps [minhash], workers 2), one fresh process "
          "per size; disk: the output folder's sampled peak (input not counted)")
    print("| corpus | input files | docs | LSH partitions | duplicates | minhash step s | wall s "
          "| CPU s | driver peak RSS | driver peak above start | largest worker peak RSS "
          "| disk peak | disk per corpus byte |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    root = Path(os.environ.get("BENCH_TMP") or tempfile.gettempdir())
    for mb, synthetic in [(m, False) for m in sizes_mb] + [(g * 1e3, True) for g in synthetic_gb]:
        if not fits(root, DISK_PER_BYTE * mb * 1e6):
            print(f"| {mb:g} MB | skipped: needs ~{DISK_PER_BYTE * mb / 1e3:.0f} GB of disk, "
                  f"{shutil.disk_usage(root).free / 1e9:.0f} GB free |", flush=True)
            continue
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            raw, out = Path(tmp) / "raw", Path(tmp) / "out"
            make_synthetic_raw(raw, mb / 1e3) if synthetic else make_raw(raw, mb)
            code = _RSS.format(raw=str(raw), out=str(out), partitions=None if synthetic else 4)
            out.mkdir()
            with DiskPeak(out) as disk:
                got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
            if got.returncode:
                raise RuntimeError(got.stderr[-3000:])
            res = json.loads(got.stdout.strip().splitlines()[-1])
            files = len(list(raw.iterdir()))
        name = f"{res['bytes'] / 1e6:,.0f} MB{' (generated)' if synthetic else ''}"
        print(f"| {name} | {files} | {res['docs']:,} | {res['partitions']} | "
              f"{res['duplicates']:,} | {res['minhash_seconds']:.1f} | {res['seconds']:.1f} | "
              f"{res['cpu']:.1f} | {res['driver_rss'] / 1e6:.0f} MB | "
              f"{res['driver_over'] / 1e6:.1f} MB | {res['worker_rss'] / 1e6:.0f} MB | "
              f"{disk.peak / 1e9:.2f} GB | {disk.peak / res['bytes']:.2f} |", flush=True)
        stages.append((name, res["maps"]))
    print("\nwall seconds per map (both workers busy), by kind:")
    for name, maps in stages:
        print(f"  {name}: " + ", ".join(f"{k} {v:.1f}" for k, v in maps.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=12000, help="real documents before planting")
    ap.add_argument("--sizes-mb", type=float, nargs="*", default=[100, 400],
                    help="driver-memory rows on the real text (re-used, words shuffled)")
    ap.add_argument("--synthetic-gb", type=float, nargs="*", default=[],
                    help="driver-memory rows on generated text of this many GB")
    ap.add_argument("--skip-rss", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    a = ap.parse_args()
    if not a.skip_speed:
        bench_speed(a.docs)
    if not a.skip_rss:
        bench_rss(a.sizes_mb, a.synthetic_gb)
    print(f"\n(this process: peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3:.0f} MB)")


if __name__ == "__main__":
    main()
