"""The stage registry: recipe `kind` -> (config class, run function), imported lazily.

Every run function follows the stage contract: `run(cfg, progress=True) -> dict`, writes
into the config's out_dir, skips when it finds its own finished output and resumes an
interrupted run. Two stages whose library API predates that contract (the corpus builder
and the data pipeline) get thin adapters here.
"""
from __future__ import annotations

import importlib
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.config import ConfigError, check


@dataclass(frozen=True)
class StageKind:
    module: str
    config: str              # class name in `module`
    run: str                 # function name in `module`
    out_key: str = "out_dir"  # the config field that holds the stage's output folder
    distributed: bool = False  # under torchrun every rank runs it (training); else rank 0 only

    def load(self) -> tuple[type, callable]:
        mod = importlib.import_module(self.module)
        return getattr(mod, self.config), getattr(mod, self.run)


KINDS: dict[str, StageKind] = {
    "corpus": StageKind("lmforge.recipe.stages", "CorpusConfig", "run_corpus"),
    "data": StageKind("lmforge.recipe.stages", "DataConfig", "run_data", out_key="output"),
    "tokenizer": StageKind("lmforge.tokenizer.train", "TrainConfig", "run_train"),
    "encode": StageKind("lmforge.tokenizer.encode", "EncodeConfig", "run_encode"),
    "pretrain": StageKind("lmforge.train.pretrain", "PretrainConfig", "run", distributed=True),
    "grow": StageKind("lmforge.grow", "GrowConfig", "run"),
    "longctx": StageKind("lmforge.train.longctx", "LongCtxConfig", "run", distributed=True),
    "sft": StageKind("lmforge.train.sft", "SFTConfig", "run", distributed=True),
    "dpo": StageKind("lmforge.train.dpo", "DPOConfig", "run", distributed=True),
    "selfknow": StageKind("lmforge.train.selfknow", "SelfKnowConfig", "run", distributed=True),
    "eval": StageKind("lmforge.eval.run", "EvalConfig", "run"),
    "needle": StageKind("lmforge.eval.needle", "NeedleConfig", "run"),
    "export": StageKind("lmforge.export.hf", "ExportConfig", "run"),
    "report": StageKind("lmforge.report", "ReportConfig", "run", out_key="out"),  # always redone
}


def load_kind(kind: str, where: str) -> tuple[type, callable]:
    """(config class, run function) of `kind`, or a one-line ConfigError naming `where`."""
    if kind not in KINDS:
        raise ConfigError(f"{where}: unknown kind {kind!r} (known: {', '.join(KINDS)})")
    spec = KINDS[kind]
    try:
        cls, fn = spec.load()
    except ModuleNotFoundError as e:
        if e.name and (spec.module == e.name or spec.module.startswith(e.name + ".")):
            raise ConfigError(f"{where}: kind {kind!r} needs module {spec.module}, which is not in "
                              f"this tree yet") from None
        raise
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"{where}: kind {kind!r}: {spec.module} does not provide "
                          f"{spec.config} + {spec.run} ({e})") from None
    return cls, fn


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False, default=str))
    os.replace(tmp, path)


def done_summary(out_dir: str | Path) -> dict | None:
    done = Path(out_dir) / "DONE.json"
    return {**json.loads(done.read_text()), "skipped": True} if done.is_file() else None


# ------------------------------------------------------------------ corpus


@dataclass
class CorpusConfig:
    """`lmforge corpus build` as a stage (see lmforge.corpus)."""
    out_dir: str = "runs/corpus"
    sources: list[str] | None = None      # None = all
    max_mb: float = 4.0                   # raw megabytes read per source
    from_sample: bool = False             # the committed sample only (offline, tests)
    fallback: bool = True                 # a missing source falls back to its sample
    paths: dict[str, str] = field(default_factory=dict)
    prose_format: str = "split"
    max_mcq: int = 2000
    seed: str = "lmforge-corpus-v1"
    # Also write the SFT dialogs as plain-text documents (domain `instruct_domain`) under
    # out_dir/instruct/: the ~7% instruction data of Index-1.9B's decay-stage mixture.
    instruct_docs: bool = False
    instruct_domain: str = "instruct"

    def __post_init__(self):
        check(self.max_mb > 0, "max_mb", "must be > 0")
        check(self.prose_format in ("html", "rst", "split"), "prose_format", "expected html, rst or split")
        check(self.max_mcq >= 0, "max_mcq", "must be >= 0")
        check(bool(self.instruct_domain), "instruct_domain", "must not be empty")
        if self.sources is not None:
            from lmforge.corpus.build import SOURCES
            for i, s in enumerate(self.sources):
                check(s in SOURCES, f"sources[{i}]", f"unknown source {s!r} (known: {', '.join(SOURCES)})")


def dialog_text(messages: list[dict]) -> str:
    """A conversation as plain pretraining text (no ChatML specials: those are data here)."""
    names = {"system": "System", "user": "User", "assistant": "Assistant"}
    return "\n".join(f"{names.get(m.get('role'), 'User')}: {m.get('content', '')}" for m in messages)


def write_instruct_docs(out: Path, domain: str) -> int:
    """sft.jsonl -> out/instruct/instruct.jsonl.zst documents; returns the count."""
    from lmforge.corpus.common import read_jsonl, write_jsonl
    docs = []
    for rec in read_jsonl(out / "sft.jsonl"):
        meta = dict(rec.get("meta") or {})
        docs.append({"id": f"instruct-{rec['id']}", "text": dialog_text(rec["messages"]),
                     "meta": {**meta, "source": meta.get("source", "sft"), "domain": domain,
                              "lang": meta.get("lang", "en"), "format": "dialog"}})
    write_jsonl(out / "instruct" / "instruct.jsonl.zst", docs)
    return len(docs)


def run_corpus(cfg: CorpusConfig, progress: bool = True) -> dict:
    from lmforge.corpus.build import CorpusError, build_corpus, validate
    out = Path(cfg.out_dir)
    if (skipped := done_summary(out)) is not None:
        return skipped
    try:
        summary = build_corpus(out, cfg.sources, cfg.max_mb, from_sample=cfg.from_sample,
                               fallback=cfg.fallback, paths=cfg.paths, prose_format=cfg.prose_format,
                               max_mcq=cfg.max_mcq, seed=cfg.seed)
    except CorpusError as e:
        raise ConfigError(str(e)) from None
    problems = validate(out)
    if problems:
        raise ValueError(f"corpus: {len(problems)} invalid records, first: {problems[0]}")
    files = dict(summary["files"])
    if cfg.instruct_docs:
        files["instruct/instruct.jsonl.zst"] = write_instruct_docs(out, cfg.instruct_domain)
    result = {"docs": sum(n for f, n in files.items() if f.startswith("docs/")),
              "sft": files.get("sft.jsonl", 0), "dpo": files.get("dpo.jsonl", 0),
              "instruct_docs": files.get("instruct/instruct.jsonl.zst", 0), "files": files,
              "sources": {k: v["status"] for k, v in summary["sources"].items()}}
    write_json(out / "DONE.json", result)
    return result


# ------------------------------------------------------------------ data


from lmforge.data.config import DataConfig  # noqa: E402  (the data stage's own config, re-exported)


def _link_final(out: Path, shards: list[str]) -> Path:
    """out/final/ = the pipeline's final shards (hard links, else copies): a stable input
    folder for the next stages, whatever the last step's folder is called."""
    final = out / "final"
    tmp = out / "final.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for i, p in enumerate(shards):
        dst = tmp / f"{i:05d}-{Path(p).name}"
        try:
            os.link(p, dst)
        except OSError:
            shutil.copy2(p, dst)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def run_data(cfg: DataConfig, progress: bool = True) -> dict:
    """The data pipeline; its steps skip themselves by fingerprint, so this always runs it
    (a changed config redoes the changed steps) and then refreshes out/final/."""
    from lmforge.data.pipeline import run_pipeline
    out = Path(cfg.output)
    before = done_summary(out)
    log = print if progress else (lambda *a, **k: None)
    summary = run_pipeline(cfg, out, log=log)
    last = summary["steps"][-1]
    result = {"docs": last["kept"]["docs"], "bytes": last["kept"]["bytes"],
              "final": str(_link_final(out, summary["final"])), "shards": len(summary["final"]),
              "steps": {s["step"]: s["kept"]["docs"] for s in summary["steps"]}}
    write_json(out / "DONE.json", result)
    if before is not None and {k: before.get(k) for k in result} == result:
        return {**result, "skipped": True}
    return result


if __name__ == "__main__":  # python -m lmforge.recipe.stages: which kinds import here
    for k in KINDS:
        try:
            load_kind(k, k)
            print(f"{k}: ok")
        except ConfigError as e:
            print(e, file=sys.stderr)
