"""Exact-substring dedup: the linear shuffle (dedup/substring_shuffle.py) against the
single-process path (substring.removal_spans on the driver), in the same run.

    .venv/bin/python bench/substring_scale.py [--mb 100] [--driver-mb 50 200] [--parts 3]
        [--baseline REF] [--repeats N] [--synthetic-gb 1 2 4 8] [--synthetic-doc-bytes 2000]
        [--synthetic-per-shard N]

Corpus: bench/dedup.py's real, mostly unique text (stdlib .py files, Python docs if
installed, then site-packages .py files), whole files as documents, written as shards of
2,000 documents. Each row runs in a fresh process from the shards (reading them is part of
the cost for both): CPU seconds of that process (`time.process_time`) and its peak RSS
above its start (VmHWM), with workers 1, so every task runs in that process and the peak
is the largest task's (or the driver's). The spans of every row of this checkout must be
equal; the baseline's may differ (and the table says so) where its removed_spans kept a
character that later windows covered (fixed 2026-12-06).

Rows: `driver` = the step's driver path, the corpus one part (one buffer); `driver, m
parts` = the same with part_bytes set to a third of the corpus (part pairs: m(m+1)/2
passes, what the driver path does on any corpus above ~1.3 GB on a 24 GB machine);
`shuffle` = the three executor maps; `shuffle, before` = the same on the code of git
commit --baseline (its lmforge/ extracted with `git archive`, the kernels compiled in
the warm-up), run alternately with `shuffle` --repeats times (median CPU, range). Then the shuffle with workers 2 at the sizes of
--driver-mb (real text) and --synthetic-gb (random words: the real text runs out at ~350 MB):
the driver process's RSS at its start and its own peak above that (tasks run in worker processes), the
largest worker process's peak RSS, CPU of the driver and its workers, and the size's folder's
peak disk (sampled every 2 s; folders under $BENCH_TMP, one size at a time, each deleted
before the next; a size whose derived need does not fit is skipped: disk_per_byte below, from
the windows per byte of the synthetic documents' length D, ~13 B per byte at D = 2,000 and ~6
at D = 150, plus a 5 GB margin). Synthetic documents are --synthetic-doc-bytes long (D, 2,000
by default), in shards of ~40 MB (--synthetic-per-shard documents, 40 MB / D by default), so
every D gives the driver the same number of shards per GB; a document has D - K + 1 windows,
so shorter documents need less disk per byte and fewer repeat tasks (partitions) per GB.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from disk_peak import DiskPeak, fits  # noqa: E402

K = 100  # window bytes of every row
SHARD_BYTES = 40_000_000  # synthetic shard size: 20,000 documents of 2 KB, as in the first rows


def windows_per_byte(doc_bytes: int, k: int = K) -> float:
    """Windows per corpus byte with documents of doc_bytes: each has doc_bytes - k + 1."""
    return max(doc_bytes - k + 1, 0) / doc_bytes


def disk_per_byte(doc_bytes: int, k: int = K) -> float:
    """Upper bound on the disk peak per corpus byte (docs/scale.md): per window 8 B of key,
    2 B of bucket id and 1 bit, + the joined text ((D + 1) / D B), times 1.15 for slack,
    + 1 B for the shards (0.6 B measured as jsonl.zst). ~13 at D = 2,000, ~6.1 at D = 150."""
    return 1.15 * (windows_per_byte(doc_bytes, k) * (8 + 2 + 1 / 8) + (doc_bytes + 1) / doc_bytes) + 1


BASELINE = "aa92c3e"  # main before the third speed-up (17.8-23.6 MB per CPU s in RESULTS.md)
_ROW = r"""
import hashlib, json, resource, sys, time
from pathlib import Path
from types import SimpleNamespace
import numpy as np
from lmforge.data.config import SubstringConfig
from lmforge.data.dedup import substring, substring_shuffle
from lmforge.data.executor import LocalExecutor
mode, shards, work, workers, part_bytes = {mode!r}, {shards!r}, Path({work!r}), {workers}, {part_bytes}
from lmforge.io.writers import write_documents
substring.dedup_texts(["x" * 300] * 3, {k})  # load the compiled kernels before timing
(work / "warm").mkdir(parents=True, exist_ok=True)
write_documents(work / "warm" / "s.jsonl.zst", ({{"id": str(i), "text": "ab c" * 40 + str(i % 3)}}
                                                for i in range(20)))
substring_shuffle.shuffle_spans(SimpleNamespace(inputs=[work / "warm" / "s.jsonl.zst"],
                                work=work / "warm", dir=work, executor=LocalExecutor(1, False)),
                                {k}, True)
rss = int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) * 1024
ctx = SimpleNamespace(inputs=[Path(s) for s in shards], work=work / "w", dir=work,
                      executor=LocalExecutor(workers, False), data=None)
ctx.work.mkdir(parents=True, exist_ok=True)
t, c = time.perf_counter(), time.process_time()
if mode == "shuffle":
    st = substring_shuffle.shuffle_spans(ctx, {k}, True)
else:
    step = substring.SubstringStep(SubstringConfig(part_bytes=part_bytes), None)
    st = step._driver_spans(ctx)
dt, cpu = time.perf_counter() - t, time.process_time() - c
kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # the worker processes (workers > 1)
peak = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) * 1024
h = hashlib.sha1()
for i in range(len(shards)):
    h.update(np.load(ctx.work / f"spans-{{i:05d}}.npy").tobytes())
print(json.dumps({{"code": substring.__file__, "seconds": dt, "cpu": cpu, "peak_over": peak - rss, "rss_start": rss,
                  "spans_sha1": h.hexdigest(), "workers_cpu": kids.ru_utime + kids.ru_stime,
                  "worker_rss": kids.ru_maxrss * 1024,
                  **{{k: v for k, v in st.items() if isinstance(v, (int, float))}}}}))
"""


def write_shards(mb: float, folder: Path, per_shard: int = 2000) -> tuple[list[str], int]:
    sys.path.insert(0, str(Path(__file__).parent))
    from dedup import real_files

    from lmforge.io.writers import write_documents

    texts = real_files(mb * 1e6)
    folder.mkdir(parents=True)
    paths = []
    for s in range(0, len(texts), per_shard):
        p = folder / f"shard-{s // per_shard:05d}.jsonl.zst"
        write_documents(p, ({"id": str(i), "text": t} for i, t in enumerate(texts[s:s + per_shard], s)))
        paths.append(str(p))
    return paths, sum(len(t.encode()) for t in texts)


def synthetic_shards(gb: float, folder: Path, doc_bytes: int = 2000, per_shard: int = 20000,
                     seed: int = 0) -> tuple[list[str], int]:
    """Random lowercase words (no 100-byte window repeats by chance): shards of per_shard
    documents of doc_bytes, about gb x 10^9 bytes. For the driver-memory rows only."""
    from lmforge.io.writers import write_documents

    rng, letters = np.random.default_rng(seed), np.frombuffer(b"abcdefghijklmnopqrstuvwxyz    ", np.uint8)
    folder.mkdir(parents=True)
    paths, total, s = [], 0, 0
    while total < gb * 1e9:
        text = letters[rng.integers(0, len(letters), size=per_shard * doc_bytes)].tobytes().decode()
        p = folder / f"shard-{s:05d}.jsonl.zst"
        write_documents(p, ({"id": f"{s}-{i}", "text": text[i * doc_bytes:(i + 1) * doc_bytes]}
                            for i in range(per_shard)))
        paths.append(str(p))
        total, s = total + len(text), s + 1
    return paths, total


def baseline_tree(ref: str, dest: Path) -> Path | None:
    """lmforge/ as of git commit `ref`, extracted under dest (None, with a note, if git fails)."""
    got = subprocess.run(["git", "-C", str(Path(__file__).resolve().parent.parent), "archive", ref,
                          "lmforge"], capture_output=True)
    if got.returncode:
        print(f"no baseline: git archive {ref}: {got.stderr.decode().strip()}")
        return None
    dest.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=got.stdout, check=True)
    return dest


def row(mode: str, shards: list[str], work: Path, workers: int = 1, part_bytes=None,
        code_root: Path | None = None) -> dict:
    code = _ROW.format(mode=mode, shards=shards, work=str(work), workers=workers,
                       part_bytes=part_bytes, k=K)
    # the code under test: this checkout, or the baseline's tree. The child runs in work's
    # parent folder: `python -c` puts the current folder first on sys.path, and from the
    # repository root that would be this checkout's lmforge/ for the baseline rows too
    root = code_root or Path(__file__).resolve().parent.parent
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    for sub in ("w", "warm"):  # a rerun's folders (work also holds the shards of some rows)
        shutil.rmtree(work / sub, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=work.parent)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=float, default=100.0, help="corpus of the side-by-side rows")
    ap.add_argument("--parts", type=int, default=3, help="parts of the `driver, m parts` row (0: skip)")
    ap.add_argument("--driver-mb", type=float, nargs="*", default=[50.0, 200.0])
    ap.add_argument("--synthetic-gb", type=float, nargs="*", default=[],
                    help="more driver-memory rows on random text of this many GB")
    ap.add_argument("--synthetic-doc-bytes", type=int, default=2000,
                    help="length D of the synthetic documents (a document has D - 99 windows)")
    ap.add_argument("--synthetic-per-shard", type=int, default=None,
                    help="synthetic documents per shard (default: 40 MB / D, ~40 MB shards)")
    ap.add_argument("--baseline", default=BASELINE,
                    help="git commit whose shuffle runs beside this one ('' to skip)")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each shuffle row, alternating")
    a = ap.parse_args()
    if a.synthetic_doc_bytes < 1 or (a.synthetic_per_shard is not None and a.synthetic_per_shard < 1):
        ap.error("--synthetic-doc-bytes and --synthetic-per-shard must be at least 1")
    doc_bytes = a.synthetic_doc_bytes
    per_shard = a.synthetic_per_shard or max(1, round(SHARD_BYTES / doc_bytes))
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        tmp = Path(tmp)
        shards, nbytes = write_shards(a.mb, tmp / "shards")
        mb = nbytes / 1e6
        rows = [("driver, one part", [row("driver", shards, tmp / "d1", part_bytes=(1 << 30) - 1)])]
        if a.parts:
            pb = nbytes // a.parts + 1
            rows.append((f"driver, {a.parts} parts ({a.parts * (a.parts + 1) // 2} passes)",
                         [row("driver", shards, tmp / "dm", part_bytes=pb)]))
        old = baseline_tree(a.baseline, tmp / "baseline") if a.baseline else None
        before, after = [], []
        for _ in range(a.repeats):  # alternately: a load change hits both rows alike
            if old is not None:
                before.append(row("shuffle", shards, tmp / "s0", code_root=old))
            after.append(row("shuffle", shards, tmp / "s"))
        if before:
            rows.append((f"shuffle, before ({a.baseline})", before))
        rows.append(("shuffle", after))
        ours = {r["spans_sha1"] for _, rs in rows for r in rs if rs is not before}
        assert len(ours) == 1, "the paths disagree"
        # the baseline may differ where it kept a character that its windows covered
        # (removed_spans before the fix of 2026-12-06): said, not asserted
        same_as_before = {r["spans_sha1"] for r in before} <= ours
        if before:  # each row ran the code it names
            assert all(str(old) in r["code"] for r in before), before[0]["code"]
        assert all(str(old or "\0") not in r["code"] for _, rs in rows for r in rs if rs is not before)
        st = after[-1]
        print(f"\nExact substring dedup, K = 100: {mb:.1f} MB of real text in {len(shards)} shards, "
              f"{st['span_fraction']:.1%} of the bytes in removed spans; the spans of every row "
              f"are equal (sha1 {st['spans_sha1'][:12]})"
              f"{'' if same_as_before else ', except the baseline rows: ' + before[0]['spans_sha1'][:12] + ', ' + str(before[0]['span_bytes']) + ' span bytes against ' + str(st['span_bytes'])}"
              f"; shuffle: {st['partitions']} partitions, "
              f"{st['windows']:,} windows; shuffle rows: median of {a.repeats} runs [range]")
        print("| path | wall s | CPU s | MB per CPU s | vs driver (CPU) | vs shuffle before (CPU) "
              "| peak RSS | per corpus byte |")
        print("|---|---|---|---|---|---|---|---|")
        med = {name: {f: float(np.median([r[f] for r in rs])) for f in ("seconds", "cpu", "peak_over")}
               for name, rs in rows}
        base, ref = med[rows[0][0]]["cpu"], med[rows[-2][0]]["cpu"] if before else None
        for name, rs in rows:
            m, cpus = med[name], [r["cpu"] for r in rs]
            spread = f" [{min(cpus):.2f}-{max(cpus):.2f}]" if len(rs) > 1 else ""
            vs_old = f"{ref / m['cpu']:.2f}x" if ref else "-"
            print(f"| {name} | {m['seconds']:.2f} | {m['cpu']:.2f}{spread} | {mb / m['cpu']:.1f} | "
                  f"{base / m['cpu']:.2f}x | {vs_old} | {m['peak_over'] / 1e6:.0f} MB | "
                  f"{m['peak_over'] / nbytes:.2f} |")
        if a.driver_mb or a.synthetic_gb:
            print("\nShuffle with workers 2 (tasks in worker processes): the driver's own peak RSS "
                  "above its start, the largest worker process's peak RSS (it runs several tasks "
                  "in turn: an upper bound on the largest task's), CPU of driver + workers, and "
                  "the work folder's peak disk use (sampled every 2 s; shards included)")
            if a.synthetic_gb:
                print(f"Synthetic documents: D = {doc_bytes:,} B ({windows_per_byte(doc_bytes):.3f} "
                      f"windows per byte at K = {K}), {per_shard:,} per shard "
                      f"(~{per_shard * doc_bytes / 1e6:.0f} MB)")
            print("| corpus MB | doc bytes | windows per byte | shards | partitions | tasks "
                  "(window + repeat + span) | driver RSS at start | driver peak RSS above start | largest worker peak "
                  "RSS | wall s | CPU s | core-s per MB | disk peak (shards + work) | per corpus byte |")
            print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
        sizes = [(mb, False) for mb in a.driver_mb] + [(gb * 1e3, True) for gb in a.synthetic_gb]
        for size, synthetic in sizes:
            folder = tmp / f"drv{size:g}"
            # the shuffle's peak plus the shards, an upper bound (real text: ~2 KB per document)
            need = disk_per_byte(doc_bytes if synthetic else 2000) * size * 1e6
            if not fits(tmp, need):
                print(f"| {size:g} | skipped: needs ~{need / 1e9:.0f} GB of disk, "
                      f"{shutil.disk_usage(tmp).free / 1e9:.0f} GB free |", flush=True)
                continue
            if synthetic:
                sh, nb = synthetic_shards(size / 1e3, folder / "shards", doc_bytes, per_shard)
            else:
                sh, nb = write_shards(size, folder / "shards")
            with DiskPeak(folder) as disk:
                r = row("shuffle", sh, folder, workers=2)
            shutil.rmtree(folder)
            cpu = r["cpu"] + r["workers_cpu"]
            print(f"| {nb / 1e6:.1f}{' (random words)' if synthetic else ''} | "
                  f"{doc_bytes if synthetic else 'files'} | {r['windows'] / nb:.3f} | {len(sh)} | "
                  f"{r['partitions']} | {2 * len(sh) + r['partitions']} | "
                  f"{r['rss_start'] / 1e6:.1f} MB | {r['peak_over'] / 1e6:.1f} MB | "
                  f"{r['worker_rss'] / 1e6:.0f} MB | "
                  f"{r['seconds']:.1f} | {cpu:.1f} | {cpu / (nb / 1e6):.3f} | "
                  f"{disk.peak / 1e9:.2f} GB | {disk.peak / nb:.2f} |", flush=True)

if __name__ == "__main__":
    main()
