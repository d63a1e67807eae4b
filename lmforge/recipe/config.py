"""Reading a recipe: stages, `${stage}` references, overrides; everything checked up front.

`load_recipe(path, overrides)` returns a `Recipe` whose stages carry their typed config
(built with `lmforge.config.from_dict`, so a bad key fails as
"recipe.yaml: stages[3].config.train.lr: ..."), or raises ConfigError before any work.

A recipe is a graph: a stage depends on every stage its config names as `${stage}`
(`${run}`, the run folder, means every earlier stage: the report reads them all), plus
any listed under `after:`. Two stages that start from the same one are two branches
(Index's pure and boost decays from one stable checkpoint); `--target STAGE` runs only
what STAGE needs.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.config import ConfigError, blame_set, from_dict, parse_override, read_yaml, set_key, to_dict

from .registry import load_stage

REF = re.compile(r"\$\{([^}]*)\}")
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
TOP_KEYS = ("name", "out_dir", "device", "stages", "declares")   # declares: lmforge.recipe.fidelity
STAGE_KEYS = ("name", "kind", "config", "after")


@dataclass
class RecipeStage:
    name: str
    kind: str
    out_dir: str
    config: Any            # the stage's typed config
    stage: Any             # its descriptor (lmforge.stagekit.stage.Stage): stage.run(cfg, progress)
    deps: list[str] = dataclasses.field(default_factory=list)   # stages it reads, in recipe order

    def fingerprint(self) -> str:
        blob = json.dumps(to_dict(self.config), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class Recipe:
    name: str
    run_dir: str
    source: str
    stages: list[RecipeStage]
    device: str | None = None
    smoke: dict | None = None     # set by --smoke: the factors every stage was shrunk by
    declares: dict | None = None  # the report's figures as data (lmforge.recipe.fidelity checks them)

    def stage(self, name: str) -> RecipeStage:
        return self.stages[self.index(name)]

    def needs(self, name: str) -> list[str]:
        """`name` and every stage it depends on, directly or not, in recipe order."""
        seen: set[str] = set()
        todo = [name]
        while todo:
            n = todo.pop()
            if n not in seen:
                seen.add(n)
                todo += self.stage(n).deps
        return [s.name for s in self.stages if s.name in seen]

    def index(self, name: str) -> int:
        for i, s in enumerate(self.stages):
            if s.name == name:
                return i
        raise ConfigError(f"{self.source}: no stage named {name!r} (stages: "
                          f"{', '.join(s.name for s in self.stages)})")


def apply_recipe_overrides(data: dict, overrides: list[str], source: str,
                           by_stage: dict[str, dict[str, str]] | None = None) -> dict:
    """`--set stages.NAME.config.a.b=v` (a stage by name) or `--set device=cuda` (top level).
    `by_stage` collects {stage: {dotted key under config: the --set text}} so that a bad
    value is blamed on `--set`, not on the recipe file."""
    for text in overrides or []:
        parts, value = parse_override(text)
        node: Any = data
        if parts[0] == "stages":
            if len(parts) < 3:
                raise ConfigError(f"--set {text!r}: expected stages.NAME.KEY=VALUE")
            named = [s for s in data.get("stages") or [] if isinstance(s, dict) and s.get("name") == parts[1]]
            if not named:
                raise ConfigError(f"--set {text!r}: {source} has no stage named {parts[1]!r}")
            node, parts = named[0], parts[2:]
            if by_stage is not None and parts[0] == "config" and len(parts) > 1:
                by_stage.setdefault(named[0]["name"], {})[".".join(parts[1:])] = text
        set_key(node, parts, value, f"--set {text!r}")
    return data


def expand(value: Any, dirs: dict[str, str], key: str, source: str, refs: set[str] | None = None) -> Any:
    """Replace `${stage}` in every string of a config tree by that stage's out_dir (the names
    found are added to `refs`)."""
    if isinstance(value, dict):
        return {k: expand(v, dirs, f"{key}.{k}", source, refs) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v, dirs, f"{key}[{i}]", source, refs) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        ref = m.group(1)
        if ref not in dirs:
            known = ", ".join(k for k in dirs if k != "run") or "none"
            raise ConfigError(f"{source}: {key}: ${{{ref}}} names no earlier stage (earlier: {known}; "
                              "or ${run} for the run folder)")
        if refs is not None:
            refs.add(ref)
        return dirs[ref]
    if "${" in REF.sub("", value):   # `${data/final`: a typo that would become a folder named "${data"
        raise ConfigError(f"{source}: {key}: {value!r} has a '${{' without its '}}' (a stage is named as ${{stage}})")
    return REF.sub(sub, value)


def _field_type(cls: type, name: str):
    if not dataclasses.is_dataclass(cls) or name not in {f.name for f in dataclasses.fields(cls)}:
        return None
    return typing.get_type_hints(cls)[name]


def apply_device(cfg: dict, cls: type, device: str | None) -> dict:
    """The recipe's `device` as the default of a stage's `device` or `train.device`."""
    if device is None:
        return cfg
    if _field_type(cls, "device") is not None:
        cfg.setdefault("device", device)
    train = _field_type(cls, "train")
    if train is not None and _field_type(train, "device") is not None:
        sub = cfg.get("train")
        if sub is None or isinstance(sub, dict):
            cfg["train"] = {"device": device, **(sub or {})}
    return cfg


def _stage_entry(raw: Any, i: int, source: str) -> tuple[str, str, dict, list[str]]:
    where = f"{source}: stages[{i}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with name, kind, config")
    unknown = [k for k in raw if k not in STAGE_KEYS]
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key (known keys: {', '.join(STAGE_KEYS)})")
    name = raw.get("name")
    if not isinstance(name, str) or not NAME.match(name) or name == "run":
        raise ConfigError(f"{where}.name: expected a folder-safe name (letters, digits, _ . -), got {name!r}")
    kind = raw.get("kind", name)
    if not isinstance(kind, str):
        raise ConfigError(f"{where}.kind: expected a string, got {kind!r}")
    cfg = raw.get("config") or {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"{where}.config: expected a mapping, got {cfg!r}")
    after = raw.get("after") or []
    if isinstance(after, str):
        after = [after]
    if not isinstance(after, list) or not all(isinstance(a, str) for a in after):
        raise ConfigError(f"{where}.after: expected a list of stage names, got {after!r}")
    return name, kind, cfg, after


def build_recipe(data: dict, source: str = "<recipe>", set_keys: dict[str, dict[str, str]] | None = None) -> Recipe:
    unknown = [k for k in data if k not in TOP_KEYS]
    if unknown:
        raise ConfigError(f"{source}: {unknown[0]}: unknown key (known keys: {', '.join(TOP_KEYS)})")
    name = data.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise ConfigError(f"{source}: name: expected a folder-safe recipe name, got {name!r}")
    run_dir = data.get("out_dir") or f"runs/{name}"
    device = data.get("device")
    if not isinstance(run_dir, str) or (device is not None and not isinstance(device, str)):
        raise ConfigError(f"{source}: out_dir and device must be strings")
    raws = data.get("stages")
    if not isinstance(raws, list) or not raws:
        raise ConfigError(f"{source}: stages: expected a non-empty list of stages")
    dirs: dict[str, str] = {"run": run_dir}
    stages: list[RecipeStage] = []
    for i, raw in enumerate(raws):
        sname, kind, cfg, after = _stage_entry(raw, i, source)
        if sname in dirs:
            raise ConfigError(f"{source}: stages[{i}].name: stage {sname!r} appears twice")
        for a in after:
            if a not in dirs or a == "run":
                raise ConfigError(f"{source}: stages[{i}].after: {a!r} names no earlier stage")
        stage = load_stage(kind, f"{source}: stages[{i}] ({sname})")
        key = f"stages[{i}].config"
        refs: set[str] = set(after)
        cfg = expand(copy.deepcopy(cfg), dirs, key, source, refs)
        if "run" in refs:
            refs.discard("run")
            refs |= {s.name for s in stages}
        cfg.setdefault(stage.out_key, str(Path(run_dir) / sname))
        cfg = apply_device(cfg, stage.config, device)
        try:
            typed = from_dict(stage.config, cfg, source=source, prefix=key)
        except ConfigError as e:
            raise blame_set(e, f"{source}: {key}.", (set_keys or {}).get(sname, {}), f"stage {sname}: ") from None
        out_dir = str(stage.out_dir(typed))
        dirs[sname] = out_dir
        deps = [s.name for s in stages if s.name in refs]
        stages.append(RecipeStage(sname, kind, out_dir, typed, stage, deps))
    return Recipe(name, run_dir, source, stages, device, declares=data.get("declares"))


def load_recipe(path: str | Path, overrides: list[str] | None = None, smoke: bool = False) -> Recipe:
    """Read, override, resolve and type-check a recipe (no stage runs). `smoke`: every stage
    shrunk (lmforge.recipe.smoke) and the run folder moved to RUN_DIR-smoke."""
    source = str(path)
    set_keys: dict[str, dict[str, str]] = {}
    data = apply_recipe_overrides(read_yaml(path), overrides or [], source, set_keys)
    if smoke and isinstance(data, dict):
        name = data.get("name")
        data["out_dir"] = (data.get("out_dir") or f"runs/{name}") + "-smoke"
    recipe = build_recipe(data, source, set_keys)
    if smoke:
        from .smoke import smoke_recipe
        smoke_recipe(recipe)
    return recipe
