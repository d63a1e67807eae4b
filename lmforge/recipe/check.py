"""Cross-stage checks of a whole recipe, before any work (`lmforge run R --check`, and every run).

Each stage's config is already valid on its own (typed, checked when the recipe loads). What
can still fail hours later is how stages fit together, so this walks the graph in order and
tracks, per stage, what it will produce:

    model     the ModelConfig its checkpoint will hold (pretrain's own or its source's, grown by
              `grow`, with the RoPE/length overrides of `longctx`)
    vocab     a tokenizer's vocabulary size (the configured bound)
    domains   the document domains a corpus/data/encode output will hold (None: unknown until
              it runs; a finished output is read from disk)

Each stage kind's rule is its descriptor's `check` hook (lmforge.stagekit.facts), in the stage's
own module; it checks, naming the stage and key in one line each: every training length against the
maximum positions of the model that stage loads (needle prompts + answer too), the model's
vocabulary against the tokenizer's, every mixture domain against the token data that stage
reads, a stage's declared model against its source checkpoint's architecture, and budgets
that cannot be met (a validation split larger than the documents the data holds).
"""
from __future__ import annotations

import json
from pathlib import Path

from lmforge.config import ConfigError
from lmforge.model.config import ModelConfig
from lmforge.stagekit.facts import Facts, source_model

from .config import Recipe, RecipeStage


class Checker:
    """Walks the recipe in order; each stage's descriptor hook (`Stage.check`, see
    lmforge.stagekit.facts) checks its config against what earlier stages will produce."""

    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self.facts: dict[str, Facts] = {}
        self.problems: list[str] = []

    # -- what the hooks call ---------------------------------------------------------------

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

    def facts_of(self, path: str) -> Facts:
        name, _ = self.source_of(path)
        return self.facts[name] if name else Facts()

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

    def domain_counts(self, paths: list[str]) -> dict[str, int] | None:
        """Documents per domain in `paths` (finished outputs' DONE.json `domain_docs`, only the
        domains of the subfolder read; for a stage that has not run, its `counts_from` inputs'
        counts, an upper bound: cleaning only removes), else None."""
        total: dict[str, int] = {}
        for p in paths:
            name, sub = self.source_of(p)
            if name is None:
                return None
            facts = self.facts[name]
            counts = _done_counts(self.recipe.stage(name).out_dir)
            allowed = facts.domains.get(sub)
            if counts is not None and allowed:
                counts = {d: n for d, n in counts.items() if d in allowed}
            if counts is None and facts.counts_from:
                counts = self.domain_counts(facts.counts_from)
            if counts is None:
                return None
            for d, n in counts.items():
                total[d] = total.get(d, 0) + n
        return total

    def check_mixtures(self, st, cfg, data: Facts) -> None:
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

    def check_vocab(self, st, model: ModelConfig, data: Facts, key: str = "model.vocab_size") -> None:
        if data.vocab and model.vocab_size < data.vocab:
            self.problem(st, key, f"{model.vocab_size} is smaller than the tokenizer's vocabulary {data.vocab}")

    def check_len(self, st, key: str, length: int, model: ModelConfig | None, what: str = "") -> None:
        if model is not None and length > model.max_seq_len:
            self.problem(st, key, f"{length}{what} exceeds max_seq_len {model.max_seq_len} of the model it loads")

    def problem_from(self, st, e: ConfigError) -> None:
        """A stage's own "key: message" ConfigError as a problem of that stage."""
        key, _, msg = str(e).partition(": ")
        self.problem(st, key, msg)

    def run(self) -> list[str]:
        for st in self.recipe.stages:
            rule = st.stage.check or source_model
            self.facts[st.name] = rule(self, st, st.config)
        return self.problems


def _done_counts(out_dir: str) -> dict[str, int] | None:
    try:
        counts = json.loads((Path(out_dir) / "DONE.json").read_text()).get("domain_docs")
    except (OSError, ValueError):
        return None
    return {d: int(n) for d, n in counts.items()} if isinstance(counts, dict) else None


def check_recipe(recipe: Recipe) -> list[str]:
    """Every cross-stage problem of `recipe`, one line each (empty: it fits together)."""
    from .fidelity import check as fidelity_check   # realised shares and languages vs the header's
    return Checker(recipe).run() + fidelity_check(recipe)

