"""Is the recipe what its header says? The realised mixture per stage and the languages kept.

A recipe's header maps the report's figures to config keys; nothing used to hold the two
together, and an audit found a recipe whose keys trained other shares than its header's table
(Skywork: curated at .488 instead of .16 once `repeat: 5` multiplied a share that was already
final) and one whose language filter dropped the languages its report trains on (StableLM 2).
A recipe may state the report's figures as data under a top-level `declares:` key:

    declares:
      languages: [en, zh]                  # the data stages' langid.allowed must be this set
      mixture:                             # pretrain stage (or STAGE/curriculum-stage) -> shares
        stage1: {prose+curated: 0.522, zh: 0.396, code: 0.08}    # "a+b": domains summed

`lmforge run R --check` prints, for every recipe, each pretraining (curriculum) stage's
token shares as the sampler will realise them (lmforge.train.mixture.shares: at its start and,
for a ramp, its end) and what changes at each boundary (a curriculum stage after the one before
it, a stage that continues another's checkpoint); a declared share more than TOLERANCE away, or a langid setting that disagrees with
the declared languages or names a language the langid model cannot output, is a problem.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lmforge.config import ConfigError, from_dict
from lmforge.train.mixture import MixtureConfig, StageConfig, shares

TOLERANCE = 0.005      # header tables give shares to 3 decimals


@dataclass
class Declares:
    languages: list[str] = field(default_factory=list)   # what the report trains on (langid codes)
    mixture: dict[str, dict[str, float]] = field(default_factory=dict)   # stage[/curriculum] -> group -> share


@dataclass
class MixRow:
    stage: str            # "recipe stage" or "recipe stage/curriculum stage"
    start: dict[str, float] | None    # shares at the start (None: the data's natural proportions, unknown yet)
    end: dict[str, float] | None
    source: str | None = None         # the stage it continues: a checkpoint's, or the curriculum stage before


def declares_of(recipe) -> Declares:
    raw = getattr(recipe, "declares", None) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{recipe.source}: declares: expected a mapping (languages, mixture)")
    return from_dict(Declares, raw, source=recipe.source, prefix="declares")


def _natural_counts(data_dir: str) -> dict[str, int] | None:
    """Token counts per domain of a finished token folder (None: not encoded yet)."""
    if not (Path(data_dir) / "meta.json").is_file():
        return None
    from lmforge.shards import TokenDataset
    from lmforge.train.mixture import domain_token_counts
    try:
        return domain_token_counts(TokenDataset(data_dir, "train"))
    except (OSError, ValueError):
        return None


def _stage_shares(mix: MixtureConfig, counts: dict[str, int] | None, progress: float) -> dict[str, float] | None:
    if not mix.weights and counts is None:
        return None
    keys = counts if counts is not None else {d: 1 for d in mix.weights}
    return shares(mix, keys, progress)


def mixture_rows(recipe) -> list[MixRow]:
    """Every pretraining (curriculum) stage's shares at its start and end, in recipe order."""
    rows = []
    for st in recipe.stages:
        cfg = st.config
        if st.kind != "pretrain" or not hasattr(cfg, "effective_stages"):
            continue
        stages: list[StageConfig] = cfg.effective_stages()
        counts = None if all(s.mixture.weights for s in stages) else _natural_counts(cfg.data)
        source = _stage_named(recipe, cfg.init.from_checkpoint)
        if not stages:
            rows.append(MixRow(st.name, None, None, source))
        for i, s in enumerate(stages):
            name = st.name if not cfg.stages else f"{st.name}/{s.name or f'stage{i}'}"
            rows.append(MixRow(name, _stage_shares(s.mixture, counts, 0.0), _stage_shares(s.mixture, counts, 1.0),
                               source if i == 0 else rows[-1].stage))
    return rows


def _stage_named(recipe, path: str | None) -> str | None:
    for st in recipe.stages:
        if path and Path(path) == Path(st.out_dir):
            return st.name
    return None


def _fmt(share: dict[str, float] | None) -> str:
    if share is None:
        return "the data's natural token proportions (known once the token data exists)"
    return "  ".join(f"{d} {v:.3f}" for d, v in share.items() if v > 0)


def describe(recipe) -> str:
    """The realised-mixture table `--check` prints."""
    rows = mixture_rows(recipe)
    if not rows:
        return "mixture: no pretraining stage"
    last_end = {}
    lines = ["mixture (token shares the sampler realises; ramps: start -> end):"]
    for r in rows:
        if r.start == r.end:
            lines.append(f"  {r.stage:<22} {_fmt(r.start)}")
        else:
            lines.append(f"  {r.stage:<22} start {_fmt(r.start)}")
            lines.append(f"  {'':<22} end   {_fmt(r.end)}")
        before = last_end.get(r.source) if r.source else None
        if before and r.start:
            moved = [f"{d} {before.get(d, 0):.3f} -> {r.start.get(d, 0):.3f}"
                     for d in sorted(set(before) | set(r.start))
                     if abs(before.get(d, 0) - r.start.get(d, 0)) >= TOLERANCE]
            lines.append(f"  {'':<22} at the boundary from {r.source}: {', '.join(moved) or 'no change'}")
        last_end[r.stage] = last_end[r.stage.split("/")[0]] = r.end
    return "\n".join(lines)


def _grouped(share: dict[str, float], groups: list[str]) -> dict[str, float]:
    return {g: sum(share.get(d.strip(), 0.0) for d in g.split("+")) for g in groups}


def check_mixtures(recipe, declared: Declares) -> list[str]:
    problems = []
    rows = mixture_rows(recipe)
    for key, want in declared.mixture.items():
        matched = [r for r in rows if r.stage == key or r.stage.split("/")[0] == key]
        where = f"{recipe.source}: declares.mixture.{key}"
        if not matched:
            problems.append(f"{where}: no pretraining stage of that name (stages: "
                            f"{', '.join(r.stage for r in rows) or 'none'})")
            continue
        for r in matched:
            if r.start is None:
                continue      # natural proportions: nothing to compare before the data exists
            got = _grouped(r.start, list(want))
            off = [f"{g} {got[g]:.3f} (declared {w:.3f})" for g, w in want.items() if abs(got[g] - w) > TOLERANCE]
            left = sorted(d for d, v in r.start.items()
                          if v > TOLERANCE and not any(d in g.split("+") for g in want))
            if off or left:
                extra = f"; not declared: {', '.join(left)}" if left else ""
                problems.append(f"{where}: {r.stage} realises {', '.join(off) or 'the declared shares'}{extra}")
    return problems


def check_languages(recipe, declared: Declares) -> list[str]:
    problems = []
    data_stages = [st for st in recipe.stages if st.kind == "data" and "langid" in getattr(st.config, "steps", [])]
    if not data_stages:
        return problems
    from lmforge.data.langid import supported_languages
    known = supported_languages()
    for st in data_stages:
        lid = st.config.langid
        key = f"{recipe.source}: stages.{st.name}.config.langid.allowed"
        unknown = sorted(set(lid.allowed) - known - set(lid.aliases.values()))
        if unknown:
            problems.append(f"{key}: {', '.join(unknown)} cannot be detected by the langid model "
                            "(py3langid's codes: ISO 639-1 where there is one)")
        if declared.languages and set(lid.allowed) != set(declared.languages) and lid.allowed:
            missing = sorted(set(declared.languages) - set(lid.allowed))
            extra = sorted(set(lid.allowed) - set(declared.languages))
            problems.append(f"{key}: {lid.allowed} vs the recipe's declared languages {declared.languages}"
                            + (f" (drops {', '.join(missing)})" if missing else "")
                            + (f" (keeps {', '.join(extra)}, not declared)" if extra else ""))
    return problems


def describe_languages(recipe) -> str:
    parts = [f"{st.name}: {', '.join(st.config.langid.allowed) or 'all (tag only)'}"
             for st in recipe.stages if st.kind == "data" and "langid" in getattr(st.config, "steps", [])]
    return "languages kept: " + ("; ".join(parts) if parts else "no langid step")


def check(recipe) -> list[str]:
    """The fidelity problems of `recipe`, one line each (empty: it matches what it declares)."""
    declared = declares_of(recipe)
    return check_mixtures(recipe, declared) + check_languages(recipe, declared)
