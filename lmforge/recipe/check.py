"""Cross-stage checks of a whole recipe, before any work (`lmforge run R --check`, and every run).

Each stage's config is already valid on its own (typed, checked when the recipe loads). What
can still fail hours later is how stages fit together, so this walks the graph in order and
tracks, per stage, what it will produce:

    model     the ModelConfig its checkpoint will hold (pretrain's own or its source's, grown by
              `grow`, with the RoPE/length overrides of `longctx`)
    vocab     a tokenizer's vocabulary size (the configured bound)
    domains   the document domains a corpus/data/encode output will hold (None: unknown until
              it runs; a finished output is read from disk)

and checks, naming the stage and key in one line each: every training length against the
maximum positions of the model that stage loads (needle prompts + answer too), the model's
vocabulary against the tokenizer's, every mixture domain against the token data that stage
reads, a stage's declared model against its source checkpoint's architecture, and budgets
that cannot be met (a validation split larger than the documents the data holds).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.config import ConfigError, to_dict
from lmforge.model.config import ModelConfig

from .config import Recipe, RecipeStage

# What the corpus stage writes, by subfolder (lmforge.corpus: docs/ by source, instruct/).
CORPUS_DOMAINS = {"docs": {"prose", "zh", "code"}, "instruct": {"instruct"}}
NEEDLE_ANSWER_SLACK = 2   # tokens beyond the value's digits (a leading space, an end token)


@dataclass
class Facts:
    model: ModelConfig | None = None
    vocab: int | None = None
    domains: dict[str, set[str] | None] = field(default_factory=dict)   # subfolder ("" = whole) -> domains
    doc_counts: dict[str, int] | None = None


class Checker:
    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self.facts: dict[str, Facts] = {}
        self.problems: list[str] = []

    # -- helpers ---------------------------------------------------------------------------

    def problem(self, st: RecipeStage, key: str, message: str) -> None:
        self.problems.append(f"{self.recipe.source}: stages.{st.name}.config.{key}: {message}")

    def source_of(self, path: str | None) -> tuple[str | None, str]:
        """(stage whose out_dir holds `path`, the subfolder below it) or (None, '')."""
        if not path:
            return None, ""
        p = Path(path)
        best = None
        for st in self.recipe.stages:
            out = Path(st.out_dir)
            if p == out or out in p.parents:
                if best is None or len(str(out)) > len(str(Path(best.out_dir))):
                    best = st
        if best is None or best.name not in self.facts:
            return None, ""
        rel = p.relative_to(Path(best.out_dir)).parts
        return best.name, rel[0] if rel else ""

    def model_of(self, path: str | None) -> ModelConfig | None:
        name, _ = self.source_of(path)
        return self.facts[name].model if name else None

    def domains_of(self, paths: list[str]) -> set[str] | None:
        out: set[str] = set()
        for p in paths:
            name, sub = self.source_of(p)
            if name is None:
                return None
            d = self.facts[name].domains
            got = d.get(sub, d.get("")) if sub in d or "" in d else None
            if got is None:
                return None
            out |= got
        return out

    # -- per kind --------------------------------------------------------------------------

    def corpus(self, st, cfg) -> Facts:
        docs = set(CORPUS_DOMAINS["docs"]) | ({"curated"} if getattr(cfg, "curated", None) else set())
        return Facts(domains={"docs": docs, "instruct": set(CORPUS_DOMAINS["instruct"]) if cfg.instruct_docs
                              else set()})

    def data(self, st, cfg) -> Facts:
        inputs = cfg.input if isinstance(cfg.input, list) else [cfg.input]
        return Facts(domains={"": self.domains_of([str(x) for x in inputs])})

    def tokenizer(self, st, cfg) -> Facts:
        return Facts(vocab=cfg.vocab_size)

    def extend(self, st, cfg) -> Facts:
        name, _ = self.source_of(cfg.base)
        base = self.facts[name].vocab if name else None
        return Facts(vocab=base + cfg.add_tokens if base else None)

    def encode(self, st, cfg) -> Facts:
        meta = Path(st.out_dir) / "meta.json"
        if meta.is_file():                      # finished: what it holds
            m = json.loads(meta.read_text())
            return Facts(vocab=m.get("vocab_size"), domains={"": set(m.get("domains", []))})
        name, _ = self.source_of(cfg.tokenizer)
        vocab = self.facts[name].vocab if name else None
        return Facts(vocab=vocab, domains={"": self.domains_of(list(cfg.inputs))})

    def _data_facts(self, path: str) -> Facts:
        name, _ = self.source_of(path)
        return self.facts[name] if name else Facts()

    def _check_mixtures(self, st, cfg, data: Facts) -> None:
        have = data.domains.get("")
        if not have:
            return
        stages = cfg.effective_stages() if hasattr(cfg, "effective_stages") else []
        for i, s in enumerate(stages):
            key = f"stages[{i}].mixture" if cfg.stages else "mixture"
            mix = s.mixture
            named = set(mix.weights) | set(mix.repeat) | ({mix.ramp.domain} if mix.ramp else set())
            for d in sorted(named - have):
                self.problem(st, f"{key}", f"domain {d!r} is not in the token data {cfg.data} "
                                           f"(domains: {', '.join(sorted(have))})")

    def _check_vocab(self, st, model: ModelConfig, data: Facts, key: str = "model.vocab_size") -> None:
        if data.vocab and model.vocab_size < data.vocab:
            self.problem(st, key, f"{model.vocab_size} is smaller than the tokenizer's vocabulary {data.vocab}")

    def _check_len(self, st, key: str, length: int, model: ModelConfig | None, what: str = "") -> None:
        if model is not None and length > model.max_seq_len:
            self.problem(st, key, f"{length}{what} exceeds max_seq_len {model.max_seq_len} of the model it loads")

    def pretrain(self, st, cfg) -> Facts:
        data = self._data_facts(cfg.data)
        src = cfg.init.from_checkpoint
        model = cfg.model
        if src:
            source = self.model_of(src)
            if source is not None:
                given, have = to_dict(cfg.model), to_dict(source)
                diff = sorted(k for k, v in given.items() if k != "preset" and have.get(k) != v)
                if cfg.model != ModelConfig() and diff and not (diff == ["vocab_size"] and data.vocab
                                                                  and data.vocab > source.vocab_size):
                    self.problem(st, "model", f"differs from the source checkpoint's architecture "
                                              f"({cfg.init.from_checkpoint}) in {', '.join(diff)}")
                model = source if cfg.model == ModelConfig() else cfg.model
                if data.vocab and data.vocab > model.vocab_size:
                    model = dataclasses.replace(model, vocab_size=data.vocab)   # grown rows (Skywork)
            elif cfg.model == ModelConfig():
                model = None
        if model is not None:
            self._check_len(st, "train.seq_len", cfg.train.seq_len, model)
            self._check_vocab(st, model, data)
        self._check_mixtures(st, cfg, data)
        return Facts(model=model)

    def grow(self, st, cfg) -> Facts:
        source = self.model_of(cfg.init.from_checkpoint)
        if source is None:
            return Facts()
        n = source.n_layers
        if cfg.block is not None and cfg.block[1] > n:
            self.problem(st, "block", f"{cfg.block} is outside the {n} layers of the source model")
            return Facts()
        size = (cfg.block[1] - cfg.block[0]) if cfg.block else (cfg.add_layers or max(1, n // 2))
        if size > n:
            self.problem(st, "add_layers", f"{size} > the {n} layers of the source model")
        if cfg.seq_len:
            self._check_len(st, "seq_len", cfg.seq_len, source)
        return Facts(model=dataclasses.replace(source, n_layers=n + size))

    def longctx(self, st, cfg) -> Facts:
        from lmforge.stages.longctx import long_model_config
        source = self.model_of(cfg.init.from_checkpoint)
        data = self._data_facts(cfg.data)
        if source is None:
            return Facts()
        try:
            model = long_model_config(cfg, source)
        except ConfigError as e:
            key, _, msg = str(e).partition(": ")
            self.problem(st, key, msg)
            return Facts()
        have = data.domains.get("")
        for d in sorted(set(cfg.domains) - (have or set(cfg.domains))):
            self.problem(st, "domains", f"{d!r} is not in the token data (domains: {', '.join(sorted(have))})")
        self._check_vocab(st, model, data, "data")
        return Facts(model=model)

    def conversations(self, st, cfg) -> Facts:
        source = self.model_of(cfg.init.from_checkpoint)
        if source is not None:
            self._check_len(st, "train.seq_len", cfg.train.seq_len, source)
        return Facts(model=source)

    def eval(self, st, cfg) -> Facts:
        model = self.model_of(cfg.checkpoint)
        if model is not None and cfg.perplexity.data and cfg.perplexity.seq_len:
            self._check_len(st, "perplexity.seq_len", cfg.perplexity.seq_len, model)
        if model is not None and cfg.perplexity.data:
            self._check_vocab(st, model, self._data_facts(cfg.perplexity.data), "perplexity.data")
        return Facts()

    def needle(self, st, cfg) -> Facts:
        model = self.model_of(cfg.checkpoint)
        if model is None or cfg.rope != "model":
            return Facts()
        answer = cfg.value_digits + NEEDLE_ANSWER_SLACK
        longest = max(cfg.lengths)
        if longest + answer > model.max_seq_len:
            self.problem(st, "lengths", f"{longest} (+ up to {answer} answer tokens) exceeds max_seq_len "
                                        f"{model.max_seq_len} of {cfg.checkpoint}: use lengths up to "
                                        f"{model.max_seq_len - answer}, or rope: dynamic|naive to test past it")
        return Facts()

    def export(self, st, cfg) -> Facts:
        return Facts(model=self.model_of(cfg.checkpoint))

    def generic(self, st, cfg) -> Facts:
        """A kind without its own rule: it holds the model of whatever checkpoint it names."""
        init = getattr(cfg, "init", None)
        path = getattr(init, "from_checkpoint", None) or getattr(cfg, "checkpoint", None)
        return Facts(model=self.model_of(path) if isinstance(path, str) else None)

    RULES = {"corpus": "corpus", "data": "data", "tokenizer": "tokenizer", "extend": "extend",
             "encode": "encode", "pretrain": "pretrain", "grow": "grow", "longctx": "longctx",
             "sft": "conversations", "dpo": "conversations", "selfknow": "conversations",
             "eval": "eval", "needle": "needle", "export": "export"}

    def run(self) -> list[str]:
        for st in self.recipe.stages:
            rule = getattr(self, self.RULES.get(st.kind, "generic"))
            self.facts[st.name] = rule(st, st.config)
        self.check_budgets()
        return self.problems

    def check_budgets(self) -> None:
        """Validation splits the data cannot fill (known once the data stage has run)."""
        for st in self.recipe.stages:
            if st.kind != "encode":
                continue
            counts = _domain_counts([p for p in st.config.inputs], self)
            want = st.config.val_docs_per_domain
            for d, n in sorted((counts or {}).items()):
                if want and n <= want and st.config.val_fraction == 0:
                    self.problem(st, "val_docs_per_domain", f"{want} validation documents asked for domain "
                                                            f"{d!r}, which has only {n}: none would be left "
                                                            "to train on")


def _done_counts(out_dir: str) -> dict[str, int] | None:
    try:
        counts = json.loads((Path(out_dir) / "DONE.json").read_text()).get("domain_docs")
    except (OSError, ValueError):
        return None
    return {d: int(n) for d, n in counts.items()} if isinstance(counts, dict) else None


def _domain_counts(paths: list[str], checker: Checker) -> dict[str, int] | None:
    """Documents per domain in `paths` (finished outputs' DONE.json `domain_docs`; for a data stage
    that has not run, its inputs' counts, an upper bound: cleaning only removes), else None."""
    total: dict[str, int] = {}
    for p in paths:
        name, sub = checker.source_of(p)
        if name is None:
            return None
        st = checker.recipe.stage(name)
        counts = _done_counts(st.out_dir)
        if counts is not None and st.kind == "corpus":
            counts = {d: n for d, n in counts.items()
                      if d in (checker.facts[name].domains.get(sub) or set(counts))}
        if counts is None and st.kind == "data":
            inputs = st.config.input if isinstance(st.config.input, list) else [st.config.input]
            counts = _domain_counts([str(x) for x in inputs], checker)
        if counts is None:
            return None
        for d, n in counts.items():
            total[d] = total.get(d, 0) + n
    return total


def check_recipe(recipe: Recipe) -> list[str]:
    """Every cross-stage problem of `recipe`, one line each (empty: it fits together)."""
    from .fidelity import check as fidelity_check   # realised shares and languages vs the header's
    return Checker(recipe).run() + fidelity_check(recipe)


def refuse_problems(recipe: Recipe) -> None:
    """ConfigError with the first problem (and how many more) when the stages do not fit."""
    problems = check_recipe(recipe)
    if problems:
        more = f" (and {len(problems) - 1} more: --check lists them)" if len(problems) > 1 else ""
        raise ConfigError(problems[0] + more)
