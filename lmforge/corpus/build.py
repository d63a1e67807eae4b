"""Assemble the default corpus from the installed offline sources (or the committed sample).

`build_corpus(out, ...)` reads each source's raw records (installed package, or the
committed sample when the package is missing or `from_sample=True`), caps them at
`max_mb` per source, derives the outputs (documents, SFT, DPO, MCQ, quality positives)
and writes them with `sources.json`, `LICENSES.md` and `rejects.jsonl`.
`write_sample(dir, ...)` stores the raw records themselves, so a build from the sample
runs exactly the same derivation code as a build from the installed packages.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import code_refs, zh
from .common import Source, read_jsonl, rng, stable_hash, take_bytes, write_bytes_atomic, write_jsonl
from .dialogs import SOURCE as DIALOGS
from .mcq import check_item
from .poetry import SOURCE as POETRY
from .pydocs import SOURCE as PYDOCS
from .quiz import SOURCE as QUIZ
from .stdlib import SOURCE as STDLIB

SOURCES: dict[str, Source] = {s.name: s for s in (PYDOCS, POETRY, STDLIB, DIALOGS, QUIZ)}
SAMPLE_DIR = Path(__file__).parent / "sample"
DEFAULT_MAX_MB = 4.0
SAMPLE_MAX_MB = 1.0
SETUP_SCRIPT = "bash scripts/setup_sources.sh"


class CorpusError(RuntimeError):
    """Nothing to build from, or a bad option: the message says what to do."""


REFERENCE_PER_MILLE = 50   # 5% of the MCQ-source records are held out for reference sets


@dataclass
class Context:
    """What the source emitters write through; outputs are kept in order, written at the end."""
    seed: str = "lmforge-corpus-v1"
    max_mcq: int = 2000  # per source
    prose_format: str = "split"  # html | rst | split
    zh: Callable[[str], str] = field(default_factory=lambda: zh.to_simplified)
    outputs: dict[str, list[dict]] = field(default_factory=dict)
    rejects: list[dict] = field(default_factory=list)

    def add(self, name: str, record: dict) -> None:
        self.outputs.setdefault(name, []).append(record)

    def reject(self, source: str, where: str, reason: str) -> None:
        self.rejects.append({"source": source, "where": where, "reason": reason})

    def rng(self, key: str):
        return rng(f"{self.seed}:{key}")

    def held_out(self, key: str) -> bool:
        """Is this source record kept out of everything the model trains on? Its eval items go
        to the *_reference.jsonl look-alike sets that contamination checks compare the
        published test items against (Skywork): same generator, never seen in training."""
        return stable_hash(f"{self.seed}:reference:{key}") % 1000 < REFERENCE_PER_MILLE


def missing_message(src: Source, fallback: bool) -> str:
    then = "using the committed sample instead" if fallback else "skipped"
    return (f"corpus: source '{src.name}' ({src.installer} {src.package}) is not installed; "
            f"get it with `{SETUP_SCRIPT}` (or `{src.setup}`, or point {src.env} at it); {then}")


def parse_sources(names: str | list[str] | None) -> list[str]:
    if names is None:
        return list(SOURCES)
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in names if n not in SOURCES]
    if unknown or not names:
        raise CorpusError(f"--sources: unknown source {unknown[0] if unknown else '(none)'!r} "
                          f"(known: {', '.join(SOURCES)})")
    return list(dict.fromkeys(names))


def load_sample(name: str, sample_dir: Path = SAMPLE_DIR) -> tuple[list[dict], dict] | None:
    path = sample_dir / f"{name}.jsonl.zst"
    manifest = sample_dir / "manifest.json"
    if not path.is_file() or not manifest.is_file():
        return None
    info = json.loads(manifest.read_text("utf-8")).get(name, {})
    return list(read_jsonl(path)), info


def _records(src: Source, override: Path | None, from_sample: bool, fallback: bool,
             max_bytes: int, sample_dir: Path, log: Callable[[str], None]):
    """(records, origin, {"version", "package"}) for one source, or None when it has to be skipped."""
    root = None if from_sample else src.locate(override)
    if root is not None:
        records = take_bytes(src.read(root), max_bytes, src.record_size)
        return records, "installed", {"version": src.version(root), "package": src.package}
    if not from_sample:
        log(missing_message(src, fallback))
        if not fallback:
            return None
    got = load_sample(src.name, sample_dir)
    if got is None:
        log(f"corpus: no committed sample for '{src.name}' under {sample_dir}; skipped")
        return None
    records, info = got
    return take_bytes(records, max_bytes, src.record_size), "sample", info


def build_corpus(out: str | Path, sources: str | list[str] | None = None,
                 max_mb: float = DEFAULT_MAX_MB, from_sample: bool = False, fallback: bool = True,
                 paths: dict[str, str | Path] | None = None, sample_dir: str | Path = SAMPLE_DIR,
                 prose_format: str = "split", max_mcq: int = 2000, seed: str = "lmforge-corpus-v1",
                 log: Callable[[str], None] | None = None) -> dict:
    """Build the corpus into `out`; returns the sources.json content (see the package doc)."""
    log = log or (lambda m: print(m, file=sys.stderr))
    if max_mb <= 0:
        raise CorpusError(f"--max-mb: must be > 0, got {max_mb}")
    if prose_format not in ("html", "rst", "split"):
        raise CorpusError(f"--prose-format: expected html, rst or split, got {prose_format!r}")
    names = parse_sources(sources)
    paths = {k: Path(v) for k, v in (paths or {}).items()}
    if from_sample:
        log(f"corpus: building from the committed sample in {sample_dir} (small: for tests and demos)")
    conv = zh.converter()
    if conv is None and "poetry" in names:
        log(f"corpus: opencc is not installed: Chinese text stays as the source has it (partly "
            f"traditional); get it with `{zh.INSTALL}`")
    ctx = Context(seed=seed, max_mcq=max_mcq, prose_format=prose_format,
                  zh=conv or (lambda s: s))
    report = {}
    for name in names:
        src = SOURCES[name]
        got = _records(src, paths.get(name), from_sample, fallback, int(max_mb * 2**20),
                       Path(sample_dir), log)
        if got is None:
            report[name] = _entry(src, "missing", "", 0, 0, {})
            continue
        records, origin, info = got
        counts = src.emit(records, ctx)
        version = info.get("version", "unknown")
        report[name] = _entry(src, origin, version, len(records), sum(map(src.record_size, records)),
                              counts, info.get("package", src.package))
        log(f"corpus: {name}: {origin} {version}: {len(records)} records -> "
            + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if report.get("stdlib", {}).get("status") not in (None, "missing"):
        _code_references(report["stdlib"], ctx, paths.get("stdlib"), log)
    if not any(e["status"] != "missing" for e in report.values()):
        raise CorpusError("corpus: no source available; install them with "
                          f"`{SETUP_SCRIPT}` or build from the sample with --from-sample")
    return _write(Path(out), ctx, report, conv is not None)


def _code_references(entry: dict, ctx: Context, override: Path | None,
                     log: Callable[[str], None]) -> None:
    """Curated stdlib modules as code quality references, read from the running CPython even
    when the documents come from the sample (code_refs.py; the docs never hold them)."""
    root = STDLIB.locate(override)
    n = code_refs.emit(code_refs.read(root), ctx)
    entry["counts"]["quality_positives"] = n
    entry["references"] = {"python": code_refs.version() if root else None, "modules": n}
    if not n:
        log("corpus: no CPython Lib/ folder found: no code quality references "
            f"(set {STDLIB.env}); code is then judged by its own documents")


def _entry(src: Source, status: str, version: str, n: int, nbytes: int, counts: dict,
           package: str | None = None) -> dict:
    return {"package": package or src.package, "installer": src.installer, "version": version,
            "license": src.license, "description": src.description, "status": status,
            "records_read": n, "bytes_read": nbytes, "counts": counts}


def _write(out: Path, ctx: Context, report: dict, converted: bool) -> dict:
    files = {}
    for name in sorted(ctx.outputs):
        files[name] = write_jsonl(out / name, ctx.outputs[name])
    files["rejects.jsonl"] = write_jsonl(out / "rejects.jsonl", ctx.rejects)
    summary = {"format": "lmforge-corpus-1", "seed": ctx.seed,
               "zh_script": f"simplified ({zh.converter_version()})" if converted else "as in the source",
               "prose_format": ctx.prose_format, "sources": report, "files": files}
    write_bytes_atomic(out / "sources.json", (json.dumps(summary, ensure_ascii=False, indent=2)
                                               + "\n").encode("utf-8"))
    write_bytes_atomic(out / "LICENSES.md", licenses_md(report).encode("utf-8"))
    return summary


def licenses_md(report: dict) -> str:
    lines = ["# Licenses of the default corpus", "",
             "Every document, dialog and item carries its source's license in `meta.license`.",
             "DPO pairs and multiple-choice items are synthetic, derived from the sources below.", "",
             "| source | package | version | license | status | records read | outputs |",
             "|---|---|---|---|---|---|---|"]
    for name, e in report.items():
        outs = ", ".join(f"{k} {v}" for k, v in e["counts"].items()) or "-"
        lines.append(f"| {name} | {e['installer']} `{e['package']}` | {e['version'] or '-'} | "
                     f"{e['license']} | {e['status']} | {e['records_read']} | {outs} |")
    return "\n".join(lines) + "\n"


def validate(out: str | Path) -> list[str]:
    """Problems found in a built corpus folder (empty list: all records valid)."""
    out, problems = Path(out), []
    for f in sorted(out.glob("docs/*.jsonl*")) + [out / "quality_positives.jsonl"]:
        for i, d in enumerate(read_jsonl(f) if f.exists() else [], 1):
            meta = d.get("meta") if isinstance(d, dict) else None
            if not (isinstance(d.get("id"), str) and isinstance(d.get("text"), str) and d["text"]
                    and isinstance(meta, dict) and all(meta.get(k) for k in ("source", "domain", "lang", "license"))):
                problems.append(f"{f}:{i}: not a document with id, text and meta source/domain/lang/license")
    for f in sorted(out.glob("mcq_*.jsonl")):
        for i, item in enumerate(read_jsonl(f), 1):
            why = check_item(item)
            if why:
                problems.append(f"{f}:{i}: {why}")
    for i, s in enumerate(read_jsonl(out / "sft.jsonl") if (out / "sft.jsonl").exists() else [], 1):
        roles = [m.get("role") for m in s.get("messages", [])]
        if not roles or roles[-1] != "assistant" or not set(roles) <= {"system", "user", "assistant"}:
            problems.append(f"{out / 'sft.jsonl'}:{i}: messages must end with an assistant turn")
    for i, p in enumerate(read_jsonl(out / "dpo.jsonl") if (out / "dpo.jsonl").exists() else [], 1):
        if p.get("chosen") == p.get("rejected") or not isinstance(p.get("prompt"), list):
            problems.append(f"{out / 'dpo.jsonl'}:{i}: chosen equals rejected or no prompt")
    return problems


def write_sample(sample_dir: str | Path = SAMPLE_DIR, sources: str | list[str] | None = None,
                 max_mb: float = SAMPLE_MAX_MB, paths: dict[str, str | Path] | None = None,
                 log: Callable[[str], None] | None = None) -> dict:
    """Store up to `max_mb` of raw records per installed source (+ manifest.json)."""
    log = log or (lambda m: print(m, file=sys.stderr))
    sample_dir = Path(sample_dir)
    paths = {k: Path(v) for k, v in (paths or {}).items()}
    old = sample_dir / "manifest.json"
    manifest = json.loads(old.read_text("utf-8")) if old.is_file() else {}  # keep other sources
    made = 0
    for name in parse_sources(sources):
        src = SOURCES[name]
        root = src.locate(paths.get(name))
        if root is None:
            log(missing_message(src, fallback=False))
            continue
        records = take_bytes(src.read(root), int(max_mb * 2**20), src.record_size)
        write_jsonl(sample_dir / f"{name}.jsonl.zst", records)
        manifest[name] = {"package": src.package, "version": src.version(root), "license": src.license,
                          "records": len(records), "bytes": sum(map(src.record_size, records))}
        made += 1
        log(f"corpus: sample {name}: {len(records)} records")
    if not made:
        raise CorpusError(f"corpus: no source installed to sample; run `{SETUP_SCRIPT}` first")
    write_bytes_atomic(sample_dir / "manifest.json",
                       (json.dumps(dict(sorted(manifest.items())), ensure_ascii=False, indent=2) + "\n").encode("utf-8"))
    return manifest
