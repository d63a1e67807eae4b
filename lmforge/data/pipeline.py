"""The data pipeline: read -> configured steps, each writing kept, rejected and stats.

Layout of the output folder:

    00-read/     kept/part-*.jsonl.zst   rejected/errors-*.jsonl   stats.json   DONE
    01-filters/  kept/...   rejected/... (documents with meta.reject_reason)   stats.json
                 stats/part-*.json (per shard; a shard with one is complete)  work/ (global state)
    summary.json (all steps' stats, the final shards)

A step is skipped when its DONE marker carries the same fingerprint (a hash of the
config of this step and of every step before it, and of the input files); a changed
config redoes the step and those after it. An interrupted step resumes from the shards
that have a stats file. Global steps (dedup, topics, quality) first run `prepare` over
all shards, whose result in work/ is marked by work/PREPARED.

Accounting (stats.json): in = kept + sum(removed) for docs and bytes (UTF-8 bytes of
text). A step that shortens kept documents books the bytes under its `modified_reason`
with 0 docs.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from ..config import to_dict
from .config import DataConfig
from lmforge.io.documents import ErrorSink, doc_bytes
from .executor import Executor
from .executors import make_executor
from lmforge.io.account import Account, DataError, first_rejects, format_reasons
from lmforge.io.atomic import write_json, write_text
from lmforge.io.fs import FsPath, check_output, open_file, rmtree, scratch_dir, upath
from lmforge.io.readers import SUPPORTED, Fields, iter_documents, iter_file, list_files
from lmforge.io.writers import DocWriter, ShardedWriter, shard_suffix

STEPS = {
    "extract": "lmforge.data.extract:ExtractStep",
    "filters": "lmforge.data.filters:FilterStep",
    "langid": "lmforge.data.langid:LangidStep",
    "quality": "lmforge.data.quality:QualityStep",
    "minhash": "lmforge.data.dedup.minhash_step:MinhashStep",
    "substring": "lmforge.data.dedup.substring:SubstringStep",
    "topics": "lmforge.data.topics:TopicsStep",
    "code": "lmforge.data.code:CodeStep",
    "decontam": "lmforge.data.decontam:DecontamStep",
}

Verdict = tuple  # (doc or None, reason or None)


# ------------------------------------------------------------------ stats


@dataclass
class Stats:
    in_docs: int = 0
    in_bytes: int = 0
    kept_docs: int = 0
    kept_bytes: int = 0
    removed: dict = field(default_factory=dict)  # reason -> [docs, bytes]

    def remove(self, reason: str, docs: int, nbytes: int) -> None:
        r = self.removed.setdefault(reason, [0, 0])
        r[0] += docs
        r[1] += nbytes

    def merge(self, other: "Stats") -> None:
        self.in_docs += other.in_docs
        self.in_bytes += other.in_bytes
        self.kept_docs += other.kept_docs
        self.kept_bytes += other.kept_bytes
        for k, (d, b) in other.removed.items():
            self.remove(k, d, b)

    def to_dict(self) -> dict:
        return {"in": {"docs": self.in_docs, "bytes": self.in_bytes},
                "kept": {"docs": self.kept_docs, "bytes": self.kept_bytes},
                "removed": {k: {"docs": d, "bytes": b} for k, (d, b) in sorted(self.removed.items())}}

    @classmethod
    def from_dict(cls, d: dict) -> "Stats":
        return cls(d["in"]["docs"], d["in"]["bytes"], d["kept"]["docs"], d["kept"]["bytes"],
                   {k: [v["docs"], v["bytes"]] for k, v in d["removed"].items()})

    def adds_up(self) -> bool:
        return (self.in_docs == self.kept_docs + sum(d for d, _ in self.removed.values())
                and self.in_bytes == self.kept_bytes + sum(b for _, b in self.removed.values()))


# ------------------------------------------------------------------ steps


@dataclass
class StepContext:
    name: str  # step kind, e.g. "filters"
    dir: Path
    inputs: list[Path]  # input shards, in global order
    data: DataConfig
    executor: Executor

    @property
    def work(self) -> Path:
        return work_dir(self.dir, self.data)


class Step:
    """A pipeline step. Local steps only implement `open_shard`; global steps also
    `prepare` (runs once over all shards, saves its results under ctx.work)."""

    modified_reason: str | None = None

    def __init__(self, cfg, data: DataConfig):
        self.cfg, self.data = cfg, data

    def prepare(self, ctx: StepContext) -> dict:
        return {}

    def open_shard(self, ctx: StepContext, index: int) -> Callable[[int, dict], Verdict]:
        """Returns f(doc_index_in_shard, doc) -> (doc, None) to keep or (None, reason)."""
        raise NotImplementedError

    def finish(self, ctx: StepContext) -> dict:
        """After every shard: more figures for stats.json (e.g. kept shares per domain)."""
        return {}


def make_step(name: str, data: DataConfig) -> Step:
    module, cls = STEPS[name].split(":")
    return getattr(importlib.import_module(module), cls)(getattr(data, name), data)


def iter_shard(path: Path) -> Iterator[dict]:
    """Documents of one of our own shards (written by writers.py: no errors expected)."""
    sink = ErrorSink()
    yield from iter_file(upath(path), sink, max_doc_bytes=1 << 40)
    if sink.total:
        raise RuntimeError(f"{path}: {sink.total} unreadable records in an intermediate shard "
                           f"({dict(sink.counts)}); delete the step folder and rerun")


def _write_json(path: Path, obj) -> None:
    write_json(path, obj)   # temp sibling + rename (lmforge.io.atomic)


def run_shard(step: Step, ctx: StepContext, index: int) -> dict:
    """Apply a step to input shard `index`; writes kept/, rejected/ and stats/ for it."""
    src = ctx.inputs[index]
    name = src.name
    stats_path = ctx.dir / "stats" / (name + ".json")
    fn = step.open_shard(ctx, index)
    st = Stats()
    kept = DocWriter(ctx.dir / "kept" / name)
    rej = DocWriter(ctx.dir / "rejected" / name) if ctx.data.write_rejected else None
    try:
        for i, doc in enumerate(iter_shard(src)):
            nb = doc_bytes(doc)
            st.in_docs += 1
            st.in_bytes += nb
            out, reason = fn(i, doc)
            if out is None:
                st.remove(reason, 1, nb)
                if rej is not None:
                    doc["meta"]["reject_reason"] = reason
                    rej.write(doc)
                continue
            ob = doc_bytes(out)
            st.kept_docs += 1
            st.kept_bytes += ob
            if ob != nb:
                st.remove(step.modified_reason or f"{ctx.name}_modified", 0, nb - ob)
            kept.write(out)
    except BaseException:
        kept.abort()
        if rej is not None:
            rej.abort()
        raise
    kept.close()
    if rej is not None:
        rej.close()
    stats_path.parent.mkdir(parents=True, exist_ok=True)
    _write_json(stats_path, st.to_dict())  # last: marks the shard complete
    return {"docs": st.in_docs, "bytes": st.in_bytes}


# ------------------------------------------------------------------ read step


def read_file_task(ctx: StepContext, index: int) -> dict:
    """Read raw input file `index` into shards part-{index}-*.jsonl.zst."""
    src = ctx.inputs[index]
    stats_path = ctx.dir / "stats" / f"file-{index:05d}.json"
    errors_path = ctx.dir / "rejected" / f"errors-{index:05d}.jsonl"
    errors_path.unlink(missing_ok=True)  # a rerun of an interrupted task starts afresh
    sink = ErrorSink(errors_path)
    st = Stats()
    w = ShardedWriter(ctx.dir / "kept", f"part-{index:05d}", ctx.data.format, ctx.data.docs_per_shard)
    for doc in iter_file(src, sink, ctx.data.max_doc_bytes, ctx.data.fields()):
        nb = doc_bytes(doc)
        st.in_docs += 1
        st.in_bytes += nb
        st.kept_docs += 1
        st.kept_bytes += nb
        w.write(doc)
    w.close()
    sink.close()
    for reason, n in sink.counts.items():
        st.in_docs += n
        st.in_bytes += sink.nbytes[reason]
        st.remove(reason, n, sink.nbytes[reason])
    stats_path.parent.mkdir(parents=True, exist_ok=True)
    _write_json(stats_path, st.to_dict())
    return {"docs": st.in_docs, "bytes": st.in_bytes}


# ------------------------------------------------------------------ the runner


def _fingerprint(prev: str, name: str, cfg) -> str:
    blob = json.dumps([prev, name, to_dict(cfg)], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _input_fingerprint(data: DataConfig, files: list[Path]) -> str:
    sig = [(str(f), st.st_size, st.st_mtime_ns) for f in files for st in [f.stat()]]
    return _fingerprint("", "read", {"files": sig, "format": data.format,
                                     "docs_per_shard": data.docs_per_shard,
                                     "max_doc_bytes": data.max_doc_bytes,
                                     **({"fields": [data.text_field, data.id_field, data.meta_fields]}
                                        if data.fields() != Fields() else {})})


def kept_shards(step_dir: Path) -> list[Path]:
    kept = step_dir / "kept"
    return sorted(p for p in kept.iterdir() if not p.name.endswith(".tmp")) if kept.is_dir() else []


def _is_done(step_dir: Path, fp: str) -> bool:
    marker = step_dir / "DONE"
    try:
        return marker.is_file() and json.loads(marker.read_text()).get("fingerprint") == fp
    except (ValueError, AttributeError):   # cut short by a kill (older versions): redo the step
        return False


def work_dir(step_dir: Path, data: DataConfig) -> Path:
    """A step's global state (memory-mapped arrays, LSH buckets): STEP/work/, or for an output
    URL a local folder (data.scratch, else ~/.cache/lmforge/scratch/HASH/STEP/work): an object
    store cannot be memory-mapped (docs/scale.md, "Outputs on object stores")."""
    if isinstance(step_dir, FsPath):
        return scratch_dir(step_dir.parent, data.scratch) / step_dir.name / "work"
    return step_dir / "work"


def _start_step(step_dir: Path, fp: str, data: DataConfig) -> None:
    """Keep a partially done step with the same fingerprint (resume); wipe a stale one."""
    marker = step_dir / "STARTED"
    resume = marker.is_file() and marker.read_text() == fp
    if step_dir.exists() and not resume:
        rmtree(step_dir)
    if isinstance(step_dir, FsPath) and not resume:   # its work/ lives elsewhere (work_dir)
        shutil.rmtree(work_dir(step_dir, data), ignore_errors=True)
    step_dir.mkdir(parents=True, exist_ok=True)
    write_text(marker, fp)


def _finish_step(step_dir: Path, fp: str, name: str, extra: dict, seconds: float) -> dict:
    total = Stats()
    for p in sorted((step_dir / "stats").glob("*.json")):
        total.merge(Stats.from_dict(json.loads(p.read_text())))
    assert total.adds_up(), f"{step_dir}: accounting does not add up: {total.to_dict()}"
    out = {"step": name, **total.to_dict(), "seconds": round(seconds, 3), **extra}
    _write_json(step_dir / "stats.json", out)
    _write_json(step_dir / "DONE", {"fingerprint": fp})
    return out


def run_step(name: str, step_dir: Path, inputs: list[Path], data: DataConfig, fp: str,
             executor: Executor, log=print) -> dict:
    if _is_done(step_dir, fp):
        log(f"[data] {step_dir.name}: done, skipped")
        return json.loads((step_dir / "stats.json").read_text())
    _start_step(step_dir, fp, data)
    t0 = time.perf_counter()
    ctx = StepContext(name, step_dir, inputs, data, executor)
    if name == "read":
        todo = [i for i in range(len(inputs))
                if not (step_dir / "stats" / f"file-{i:05d}.json").exists()]
        executor.map(read_file_task, [(ctx, i) for i in todo], desc=f"{step_dir.name}")
        return _finish_step(step_dir, fp, name, {}, time.perf_counter() - t0)
    step = make_step(name, data)
    prepared = ctx.work / "PREPARED"
    if prepared.is_file():
        extra = json.loads(prepared.read_text())
    else:
        ctx.work.mkdir(parents=True, exist_ok=True)
        extra = step.prepare(ctx) or {}
        _write_json(prepared, extra)
    todo = [i for i, p in enumerate(inputs)
            if not (step_dir / "stats" / (p.name + ".json")).exists()]
    executor.map(run_shard, [(step, ctx, i) for i in todo], desc=f"{step_dir.name}")
    extra = {**extra, **(step.finish(ctx) or {})}
    return _finish_step(step_dir, fp, name, extra, time.perf_counter() - t0)


def run_pipeline(data: DataConfig, out: str | Path | None = None, log=print) -> dict:
    """Run read + the configured steps; returns the summary (also in OUT/summary.json)."""
    out = upath(out or data.output)
    check_output(out)   # a missing bucket or credentials: one line before any work
    sink = ErrorSink()
    files = list_files(data.input, sink)  # a named input that is missing or unsupported raises
    out.mkdir(parents=True, exist_ok=True)
    with ErrorSink(out / "missing_inputs.jsonl") as listed:   # rewritten each run, never appended
        for r in sink.records:
            listed.add(r["file"], r["line"], r["reason"], detail=r["detail"])
    if not files:
        raise FileNotFoundError(f"input: no input files of a supported format in {data.input} "
                                f"(supported: {', '.join(SUPPORTED)})")
    executor = make_executor(data)  # local processes or Ray tasks: the same files
    fp = _input_fingerprint(data, files)
    summary = {"input_problems": dict(sink.counts), "steps": []}
    inputs: list[Path] = files
    try:
        for i, name in enumerate(["read", *data.steps]):
            if name != "read":
                fp = _fingerprint(fp, name, getattr(data, name))
            step_dir = out / f"{i:02d}-{name}"
            stats = run_step(name, step_dir, inputs, data, fp, executor, log)
            summary["steps"].append(stats)
            if name == "read" and stats["kept"]["docs"] == 0:
                hint = (" (jsonl/parquet/csv: set text_field to the key that holds the text)"
                        if "missing_text" in stats["removed"] else "")
                account_of(summary, out).require_kept(_first_rejects(step_dir),
                                                      what=", ".join(map(str, data.input)) + hint)
            inputs = kept_shards(step_dir)
            log(f"[data] {step_dir.name}: in {stats['in']['docs']} docs, kept {stats['kept']['docs']} "
                f"({stats['kept']['bytes'] / 1e6:.2f} MB); removed "
                + (", ".join(f"{k} {v['docs']}" for k, v in stats["removed"].items()) or "nothing"))
    finally:
        executor.close()
    summary["final"] = [str(p) for p in inputs]
    summary["account"] = account_line(summary, out)
    _write_json(out / "summary.json", summary)
    if summary["steps"][-1]["kept"]["docs"] == 0:
        removed = "; ".join(f"{s['step']}: {format_reasons({k: v['docs'] for k, v in s['removed'].items()})}"
                            for s in summary["steps"] if s["removed"])
        raise DataError(f"no documents left after the last step ({removed}); see {out}/summary.json")
    return summary


def account_of(summary: dict, out: Path) -> Account:
    """read = documents in the inputs (good or not), kept = documents out of the last step,
    rejected = every document removed on the way, by reason."""
    steps = summary["steps"]
    rejected: dict[str, int] = {}
    for s in steps:
        for k, v in s["removed"].items():
            if v["docs"]:
                rejected[k] = rejected.get(k, 0) + v["docs"]
    return Account("data", steps[0]["in"]["docs"], steps[-1]["kept"]["docs"], rejected, unit="documents")


def account_line(summary: dict, out: Path) -> str:
    line = account_of(summary, out).line()
    if any(s["removed"] for s in summary["steps"]):
        line += f"; rejects: {out}/*/rejected/"
    problems = summary.get("input_problems") or {}
    if problems:
        line += (f"; skipped {sum(problems.values())} input files ({format_reasons(problems)}): "
                 f"{out / 'missing_inputs.jsonl'}")
    return line


def _first_rejects(step_dir: Path, n: int = 3) -> list[str]:
    records: list[dict] = []
    for f in sorted((step_dir / "rejected").glob("errors-*.jsonl")):
        with open_file(f, encoding="utf-8") as fh:
            for line in fh:
                records.append(json.loads(line))
                if len(records) >= n:
                    return first_rejects(records, n)
    return first_rejects(records, n)


def final_documents(out: str | Path) -> Iterator[dict]:
    """The clean documents of a finished run."""
    summary = json.loads((upath(out) / "summary.json").read_text())
    for p in summary["final"]:
        yield from iter_shard(p)


__all__ = ["Stats", "Step", "StepContext", "run_pipeline", "run_step", "final_documents",
           "iter_shard", "kept_shards", "iter_documents", "shard_suffix"]
