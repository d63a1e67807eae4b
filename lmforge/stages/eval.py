"""`lmforge eval`: perplexity / bits per byte, multiple choice, contamination -> eval.json.

Writes out_dir/eval.json (all numbers), out_dir/eval.md (tables), out_dir/rejects.txt
(malformed benchmark lines, one "file:line: reason" each) and DONE.json. Each section's
result is kept in out_dir/parts/ under a key of the checkpoint and its config, so an
interrupted eval resumes with the sections it had finished.
"""
from __future__ import annotations

import errno
import re
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.config import check, to_dict
from lmforge.io.account import Account, DataError
from lmforge.io.atomic import write_json, write_text
from lmforge.stagekit.parts import Parts
from lmforge.stagekit.facts import Facts
from lmforge.stagekit.score_effects import mcq_effect
from lmforge.stagekit.stage import DONE, Arg, Stage

DEFAULT_MCQ_FILES = ("mcq_quiz.jsonl", "mcq_poems.jsonl")


@dataclass
class PerplexityConfig:
    data: str | None = None           # token dataset folder (tokenizer encode output); None: skip
    split: str = "val"
    max_docs_per_domain: int = 0      # 0: every document
    seq_len: int = 0                  # window length; 0: the model's max_seq_len
    batch_size: int = 8

    def __post_init__(self):
        check(self.split in ("train", "val"), "split", "must be train or val")
        check(self.max_docs_per_domain >= 0, "max_docs_per_domain", "must be >= 0")
        check(self.seq_len >= 0 and self.batch_size >= 1, "batch_size", "must be >= 1 (seq_len >= 0)")


@dataclass
class MCQSetConfig:
    name: str = ""
    path: str = ""

    def __post_init__(self):
        check(bool(self.path), "path", "set the jsonl file of items")


@dataclass
class MCQConfig:
    corpus: str | None = None         # a `lmforge corpus build` folder: adds its mcq_quiz/mcq_poems.jsonl
    sets: list[MCQSetConfig] = field(default_factory=list)
    shots: list[int] = field(default_factory=lambda: [0, 5])
    max_items: int = 0                # per set; 0: all
    seed: int = 0                     # few-shot example draw
    batch_size: int = 16

    def __post_init__(self):
        check(all(0 <= k <= 64 for k in self.shots), "shots", "each must be in 0..64")
        check(self.max_items >= 0 and self.batch_size >= 1, "max_items", "must be >= 0 (batch_size >= 1)")

    def all_sets(self) -> list[MCQSetConfig]:
        sets = list(self.sets)
        if self.corpus:
            found = [Path(self.corpus) / f for f in DEFAULT_MCQ_FILES if (Path(self.corpus) / f).is_file()]
            if not found:   # a corpus that is not there (or holds no item files) is an error, not 0 sets
                raise FileNotFoundError(errno.ENOENT, f"mcq.corpus: none of {', '.join(DEFAULT_MCQ_FILES)} in it",
                                        str(self.corpus))
            sets += [MCQSetConfig(name=p.stem.removeprefix("mcq_"), path=str(p)) for p in found]
        return [MCQSetConfig(s.name or Path(s.path).stem, s.path) for s in sets]


@dataclass
class ContinuationConfig:
    """Continuation choice on the token data's held-out split (lmforge.eval.continuation)."""
    data: str | None = None           # token dataset folder; None: skip
    split: str = "val"
    max_items: int = 200              # an equal share per domain; 0 = every span
    context: int = 48                 # tokens before the answer span
    answer: int = 8                   # tokens of each choice
    seed: int = 0
    batch_size: int = 16

    def __post_init__(self):
        check(self.split in ("train", "val"), "split", "must be train or val")
        check(self.max_items >= 0, "max_items", "must be >= 0 (0 = every span)")
        check(self.context >= 8 and self.answer >= 1, "context", "need context >= 8 and answer >= 1 tokens")
        check(self.batch_size >= 1, "batch_size", "must be >= 1")


@dataclass
class BenchmarkConfig:
    name: str = ""
    test: str = ""                    # jsonl (or .txt) of the test split
    reference: str | None = None      # look-alike set never published; None: TEST_reference.jsonl beside
                                      # the test file when it exists (the corpus writes them), else n-gram only
    train: str | None = None          # the benchmark's train split (optional)

    def __post_init__(self):
        check(bool(self.test), "test", "set the test split file")

    def reference_path(self) -> str | None:
        if self.reference:
            return self.reference
        auto = Path(self.test).with_name(Path(self.test).stem + "_reference.jsonl")
        return str(auto) if auto.is_file() else None


@dataclass
class ContaminationConfig:
    benchmarks: list[BenchmarkConfig] = field(default_factory=list)
    ppl_gap_threshold: float = 0.1    # flag when loss(reference) - loss(test) > this (nats/token)
    ngram: int = 13
    training_data: list[str] = field(default_factory=list)  # token dataset folders or document files
    max_items: int = 0
    batch_size: int = 8
    auto: bool = True                 # also check every MCQ set that has a reference set beside it

    def __post_init__(self):
        check(self.ngram >= 1, "ngram", "must be >= 1")
        check(self.ppl_gap_threshold >= 0, "ppl_gap_threshold", "must be >= 0")


@dataclass
class EvalConfig:
    checkpoint: str = ""              # a step folder or any stage's run folder
    out_dir: str = "runs/eval"
    tokenizer: str | None = None      # default: the tokenizer copied beside the checkpoint
    device: str = "auto"
    perplexity: PerplexityConfig = field(default_factory=PerplexityConfig)
    mcq: MCQConfig = field(default_factory=MCQConfig)
    continuation: ContinuationConfig = field(default_factory=ContinuationConfig)
    contamination: ContaminationConfig = field(default_factory=ContaminationConfig)

    def __post_init__(self):
        check(bool(self.checkpoint), "checkpoint", "set the checkpoint (a run folder or step-N folder)")


# ------------------------------------------------------------------ cached sections


class CheckpointParts(Parts):
    """Parts keyed by the checkpoint as well as each section's config."""

    def __init__(self, out: Path, ckpt: Path):
        super().__init__(out)
        self.ckpt = str(ckpt.resolve())

    def get_or_run(self, name: str, cfg, fn):
        return super().get_or_run(name, [self.ckpt, name, to_dict(cfg)], fn)


# ------------------------------------------------------------------ sections


def eval_perplexity(model, tok, cfg: PerplexityConfig, progress: bool) -> dict:
    from lmforge.eval.perplexity import perplexity
    from lmforge.shards import TokenDataset
    ds = TokenDataset(cfg.data, cfg.split)
    return {"data": cfg.data, "split": cfg.split,
            "domains": perplexity(model, ds, tok, cfg.seq_len or None, cfg.batch_size,
                                  cfg.max_docs_per_domain, progress)}


def eval_mcq_set(model, tok, s: MCQSetConfig, cfg: MCQConfig, parts: Parts, rejects: list, progress: bool,
                 tally: dict | None = None) -> dict:
    from lmforge.eval.mcq import evaluate_mcq, load_items
    loaded = load_items(s.path)
    rejects.extend(loaded.errors)
    if tally is not None:
        tally["records"] = tally.get("records", 0) + len(loaded.items) + len(loaded.errors)
        tally["kept"] = tally.get("kept", 0) + len(loaded.items)
        tally["malformed"] = tally.get("malformed", 0) + len(loaded.errors)
    if not loaded.items:
        raise DataError(f"mcq: {s.path}: no usable items ({len(loaded.errors)} malformed lines"
                        + (f"; first: {'; '.join(loaded.errors[:3])}" if loaded.errors else "") + ")")
    pool = loaded.items
    items = pool[:cfg.max_items] if cfg.max_items else pool
    out = {"path": s.path, "items": len(items), "malformed": len(loaded.errors), "results": {}}
    if not items:
        return out
    for k in cfg.shots:
        out["results"][str(k)] = parts.get_or_run(
            f"mcq-{s.name}-{k}shot", [s, cfg],
            lambda: evaluate_mcq(model, tok, items, k, cfg.seed, batch_size=cfg.batch_size, pool=pool,
                                 progress=progress, desc=f"{s.name} {k}-shot"))
    return out


def eval_continuation(model, cfg: ContinuationConfig, progress: bool) -> dict:
    from lmforge.eval.continuation import build_items, evaluate
    from lmforge.shards import TokenDataset

    items = build_items(TokenDataset(cfg.data, cfg.split), cfg.max_items, cfg.context, cfg.answer, cfg.seed)
    if not items:
        raise DataError(f"continuation: {cfg.data} ({cfg.split}) has no domain with 4 spans of "
                        f"{cfg.answer} tokens after >= 8 tokens of context")
    return {"data": cfg.data, "split": cfg.split, **evaluate(model, items, cfg.batch_size, progress)}


def ngram_check(tok, texts: list[str], cfg: ContaminationConfig, progress: bool) -> dict:
    """Overlap of `texts` with every training source: token datasets by token, files by word."""
    from lmforge.eval.contamination import ngram_overlap_text, ngram_overlap_tokens
    from lmforge.shards import TokenDataset
    out = {}
    for src in cfg.training_data:
        if (Path(src) / "meta.json").is_file():
            ids = [tok.encode(t).ids for t in texts]
            out[src] = ngram_overlap_tokens(TokenDataset(src, "train"), ids, cfg.ngram, progress=progress)
        else:
            from lmforge.io.readers import iter_documents
            docs = (d["text"] for d in iter_documents(src) if isinstance(d.get("text"), str))
            out[src] = ngram_overlap_text(docs, texts, cfg.ngram, progress=progress)
    return out


def eval_benchmark(model, tok, b: BenchmarkConfig, cfg: ContaminationConfig, rejects: list,
                   progress: bool) -> dict:
    from lmforge.eval.contamination import load_texts, perplexity_gap

    def texts(path):
        if not path:
            return None
        t, errs = load_texts(path, cfg.max_items)
        rejects.extend(errs)
        return t

    reference = b.reference_path()
    test, ref, train = texts(b.test), texts(reference), texts(b.train)
    out: dict = {"test": b.test, "reference": reference, "reference_auto": reference is not None and not b.reference,
                 "train": b.train}
    if ref:
        out["ppl"] = perplexity_gap(model, tok, test, ref, train, cfg.ppl_gap_threshold,
                                    batch_size=cfg.batch_size)
    if cfg.training_data:
        out["ngram"] = ngram_check(tok, test, cfg, progress)
    return out


def contamination_benchmarks(cfg: EvalConfig) -> list[BenchmarkConfig]:
    """The configured benchmarks, plus (contamination.auto) every MCQ set with a reference set beside
    it, so the test / reference perplexity comparison runs whenever an eval set is given."""
    out = list(cfg.contamination.benchmarks)
    if cfg.contamination.auto:
        named = {Path(b.test).resolve() for b in out}
        for s in cfg.mcq.all_sets():
            b = BenchmarkConfig(name=s.name, test=s.path)
            if Path(s.path).resolve() not in named and b.reference_path():
                out.append(b)
    return out


# ------------------------------------------------------------------ the stage


def _load(cfg: EvalConfig):
    from lmforge.model.load import load_checkpoint, tokenizer_dir_of
    from lmforge.tokenizer.train import load_tokenizer
    from lmforge.device import resolve_device
    model, step_dir = load_checkpoint(cfg.checkpoint, resolve_device(cfg.device))
    tok_path = cfg.tokenizer or tokenizer_dir_of(step_dir)
    if tok_path is None:
        raise FileNotFoundError(f"{step_dir}: no tokenizer beside the checkpoint; set tokenizer=PATH")
    return model, step_dir, load_tokenizer(tok_path)


def body(cfg: EvalConfig, progress: bool = True) -> dict:
    out = Path(cfg.out_dir)
    model, step_dir, tok = _load(cfg)
    out.mkdir(parents=True, exist_ok=True)
    parts, rejects = CheckpointParts(out, step_dir), []
    m = re.match(r"step-(\d+)$", step_dir.name)
    result: dict = {"checkpoint": str(step_dir), "step": int(m.group(1)) if m else None, "config": to_dict(cfg)}
    if cfg.perplexity.data:
        result["perplexity"] = parts.get_or_run("perplexity", cfg.perplexity,
                                                lambda: eval_perplexity(model, tok, cfg.perplexity, progress))
    if cfg.continuation.data:
        result["continuation"] = parts.get_or_run("continuation", cfg.continuation,
                                                  lambda: eval_continuation(model, cfg.continuation, progress))
    sets = cfg.mcq.all_sets()
    tally: dict = {}
    if sets:
        result["mcq"] = {s.name: eval_mcq_set(model, tok, s, cfg.mcq, parts, rejects, progress, tally) for s in sets}
    benchmarks = contamination_benchmarks(cfg)
    if benchmarks:
        result["contamination"] = {
            b.name or Path(b.test).stem: parts.get_or_run(
                f"contamination-{b.name or Path(b.test).stem}", [b, cfg.contamination],
                lambda b=b: eval_benchmark(model, tok, b, cfg.contamination, rejects, progress))
            for b in benchmarks}
    result["malformed_lines"] = len(rejects)
    if rejects:
        write_text(out / "rejects.txt", "".join(r + "\n" for r in rejects))
    else:
        (out / "rejects.txt").unlink(missing_ok=True)   # none left from an earlier attempt
    write_json(out / "eval.json", result)
    write_text(out / "eval.md", markdown(result))
    summary = {"eval": str(out / "eval.json"), "checkpoint": str(step_dir), **headline(result)}
    if tally:
        summary["account"] = Account.from_stats("eval", tally, out / "rejects.txt", unit="items").line()
    effect = mcq_effect(result.get("mcq") or {}, result.get("continuation"))   # vs chance: the stage trains nothing
    if effect:
        summary["effect"] = effect
    return summary


def headline(result: dict) -> dict:
    """A few numbers for DONE.json and the pipeline log."""
    h = {}
    dom = result.get("perplexity", {}).get("domains", {})
    if "all" in dom:
        h["ppl"] = dom["all"]["ppl"]
        h["bpb"] = dom["all"]["bpb"]
    if "continuation" in result:
        h["continuation_acc"] = result["continuation"]["acc"]
    for name, s in result.get("mcq", {}).items():
        for k, r in s["results"].items():
            h[f"mcq/{name}/{k}shot_acc"] = r["acc"]
    for name, c in result.get("contamination", {}).items():
        if "ppl" in c:
            h[f"contamination/{name}/flagged"] = c["ppl"]["flagged"]
    return h


# ------------------------------------------------------------------ markdown tables


def markdown(result: dict) -> str:
    from lmforge.report.tables import eval_tables
    head = f"# Evaluation\n\ncheckpoint: `{result['checkpoint']}` (step {result.get('step')})\n\n"
    return head + "\n\n".join(f"## {title}\n\n{table}" for title, table in eval_tables(result)) + "\n"


def recipe_check(checker, st, cfg: EvalConfig) -> Facts:
    """The perplexity length and vocabulary against the model evaluated."""
    model = checker.model_of(cfg.checkpoint)
    if model is not None and cfg.perplexity.data and cfg.perplexity.seq_len:
        checker.check_len(st, "perplexity.seq_len", cfg.perplexity.seq_len, model)
    if model is not None and cfg.perplexity.data:
        checker.check_vocab(st, model, checker.facts_of(cfg.perplexity.data), "perplexity.data")
    return Facts()


def _show(cfg: EvalConfig, summary: dict) -> None:
    """`lmforge eval` prints the tables (eval.md) of a fresh evaluation."""
    if not summary.get("skipped"):
        print(Path(cfg.out_dir, "eval.md").read_text(encoding="utf-8"))


STAGE = Stage(kind="eval", config=EvalConfig, body=body,
              help="evaluate a checkpoint: per-domain perplexity/bits-per-byte, multiple choice, contamination "
                   "(docs/eval.md)",
              example="mcq.shots=[0,5]", outputs=("eval.json", "eval.md", DONE),
              args=(Arg("--checkpoint", "checkpoint", "run folder or step-N folder (same as --set checkpoint=...)"),
                    Arg("--out", "out_dir", "output folder (same as --set out_dir=...)")),
              show=_show, check=recipe_check)
run = STAGE.run
