"""The `corpus` stage: `lmforge corpus build` as a recipe stage (see lmforge.corpus), optionally
also writing the SFT dialogs as plain-text documents for a decay-stage instruction share."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.config import ConfigError, check
from lmforge.stagekit.facts import Facts
from lmforge.stagekit.stage import DONE, Stage


@dataclass
class PlantConfig:
    """Documents with known truth planted into docs/ (lmforge.corpus.planted), for the data stage
    to score its dedup and junk filters against: edited near-duplicates and junk pages."""
    duplicates: int = 48                  # edited copies of corpus documents (spread over prose / zh / code)
    junk: int = 48                        # hand-written junk pages (ads, navigation chrome, spam, obfuscated JS)
    edit: list[float] = field(default_factory=lambda: [0.01, 0.05])   # a copy's share of replaced units
    seed: int = 0                         # which documents are copied, the edits, the junk pages

    def __post_init__(self):
        check(self.duplicates >= 0 and self.junk >= 0, "duplicates", "counts must be >= 0")
        check(len(self.edit) == 2 and 0 < self.edit[0] <= self.edit[1] < 1, "edit",
              f"expected [low, high] with 0 < low <= high < 1, got {self.edit}")


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
    # Put the reference-grade documents in a domain of their own, `curated` (Index-1.9B's
    # books/encyclopedia/papers/STEM share, which its decay stage raises): the Python docs'
    # library/language reference, HOWTOs and tutorial, and the Chinese classics (CURATED).
    curated: bool = False
    plant: PlantConfig | None = None      # planted duplicates and junk (known truth for the data stage)

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


# Which documents count as curated: (corpus file, meta key, values). Reference manuals and
# tutorials stand in for encyclopedia/STEM text; the classics for books (see docs/recipes.md).
CURATED = [("docs/pydocs.jsonl.zst", "path", ("library/", "reference/", "howto/", "tutorial/")),
           ("docs/poetry.jsonl.zst", "collection", ("lunyu", "sishuwujing", "shijing", "chuci", "mengxue"))]


def mark_curated(out: Path, domain: str = "curated") -> dict[str, int]:
    """Relabel the curated documents' domain in place (atomically, per file); counts moved."""
    from lmforge.corpus.common import read_jsonl, write_jsonl
    moved = {}
    for rel, key, prefixes in CURATED:
        path = out / rel
        if not path.is_file():
            continue
        docs, n = list(read_jsonl(path)), 0
        for d in docs:
            if str(d["meta"].get(key, "")).startswith(prefixes):
                d["meta"]["domain"] = domain
                n += 1
        write_jsonl(path, docs)
        moved[rel] = n
    return moved


def plant_documents(out: Path, cfg: PlantConfig) -> int:
    """docs/zz-planted.jsonl.zst: the planted documents (sorted last, so copies follow originals)."""
    from lmforge.corpus.common import read_jsonl, write_jsonl
    from lmforge.corpus.planted import PLANTED_FILE, plant
    docs = [d for p in sorted(out.glob("docs/*.jsonl*")) if p.name != PLANTED_FILE for d in read_jsonl(p)]
    planted = plant(docs, cfg.duplicates, cfg.junk, (cfg.edit[0], cfg.edit[1]), cfg.seed)
    path = out / "docs" / PLANTED_FILE
    if planted:
        write_jsonl(path, planted)
    else:
        path.unlink(missing_ok=True)
    return len(planted)


def domain_counts(out: Path) -> dict[str, int]:
    """Documents per domain of the built corpus (docs/ and instruct/)."""
    from lmforge.corpus.common import read_jsonl
    counts: dict[str, int] = {}
    for path in sorted(out.glob("docs/*.jsonl*")) + sorted(out.glob("instruct/*.jsonl*")):
        for d in read_jsonl(path):
            dom = d.get("meta", {}).get("domain", "default")
            counts[dom] = counts.get(dom, 0) + 1
    return counts


def body(cfg: CorpusConfig, progress: bool = True) -> dict:
    from lmforge.corpus.build import CorpusError, build_corpus, validate
    out = Path(cfg.out_dir)
    try:
        summary = build_corpus(out, cfg.sources, cfg.max_mb, from_sample=cfg.from_sample,
                               fallback=cfg.fallback, paths=cfg.paths, prose_format=cfg.prose_format,
                               max_mcq=cfg.max_mcq, seed=cfg.seed,
                               log=None if progress else (lambda m: None))   # progress=False: quiet
    except CorpusError as e:
        raise ConfigError(str(e)) from None
    problems = validate(out)
    if problems:
        raise ValueError(f"corpus: {len(problems)} invalid records, first: {problems[0]}")
    files = dict(summary["files"])
    if cfg.instruct_docs:
        files["instruct/instruct.jsonl.zst"] = write_instruct_docs(out, cfg.instruct_domain)
    curated = mark_curated(out) if cfg.curated else {}
    from lmforge.corpus.planted import PLANTED_FILE
    if cfg.plant is not None:
        files[f"docs/{PLANTED_FILE}"] = plant_documents(out, cfg.plant)
    else:   # a rebuild without planting leaves no planted file of an earlier build behind
        (out / "docs" / PLANTED_FILE).unlink(missing_ok=True)
    result = {"docs": sum(n for f, n in files.items() if f.startswith("docs/")),
              "sft": files.get("sft.jsonl", 0), "dpo": files.get("dpo.jsonl", 0),
              "instruct_docs": files.get("instruct/instruct.jsonl.zst", 0), "files": files,
              "curated_docs": sum(curated.values()), "domain_docs": domain_counts(out),
              "sources": {k: v["status"] for k, v in summary["sources"].items()}}
    return (result)


def recipe_check(checker, st, cfg: CorpusConfig) -> Facts:
    """The domains it writes, by subfolder (docs/ by source, instruct/)."""
    docs = {"prose", "zh", "code"} | ({"curated"} if cfg.curated else set())
    return Facts(domains={"docs": docs, "instruct": {cfg.instruct_domain} if cfg.instruct_docs else set()})


def smoke_settings(cfg: CorpusConfig, sizes: dict) -> CorpusConfig:
    return dataclasses.replace(cfg, from_sample=True, max_mb=min(cfg.max_mb, 1.0))   # offline, small


STAGE = Stage(kind="corpus", config=CorpusConfig, body=body, command="corpus build",
              help="the embedded default corpus (offline sources)", example="from_sample=true",
              outputs=("docs", "instruct", "sft.jsonl", "dpo.jsonl", "mcq_quiz.jsonl", DONE),
              check=recipe_check, smoke=smoke_settings)
run = STAGE.run
