"""The stage registry: one line per stage kind, its module lmforge.stages.<kind>.

Each module declares its stage as `STAGE = lmforge.stagekit.stage.Stage(...)` (config class,
run body, CLI help and example, outputs, hooks); the recipe, the command line, `--check`,
`--smoke` and the docs all read that descriptor. Adding a stage kind is its module plus one
line here. Modules are imported only when a stage of that kind is used; `declared(kind)`
reads a descriptor's literal fields without importing (`lmforge --help`, `config list`).
"""
from __future__ import annotations

import ast
import importlib
import sys
from functools import lru_cache
from pathlib import Path

STAGES: list[str] = [   # pipeline order (the order of `lmforge --help` and docs/config.md)
    "corpus",
    "data",
    "tokenizer",
    "extend",
    "encode",
    "distillcache",
    "pretrain",
    "grow",
    "longctx",
    "sftdata",
    "sftgrid",
    "sft",
    "dpo",
    "selfknow",
    "longsft",
    "eval",
    "needle",
    "longstudy",
    "export",
    "character",
    "findings",
    "report",
]
# kinds declared outside lmforge.stages: a finding runs other stages, so it sits a layer above them
MODULES: dict[str, str] = {"findings": "lmforge.findings.stage"}


def module_of(kind: str) -> str:
    return MODULES.get(kind, f"lmforge.stages.{kind}")


def load_stage(kind: str, where: str):
    """The `Stage` of `kind`, or a one-line ConfigError naming `where`."""
    from lmforge.config import ConfigError
    if kind not in STAGES:
        raise ConfigError(f"{where}: unknown kind {kind!r} (known: {', '.join(STAGES)})")
    module = module_of(kind)
    try:
        stage = importlib.import_module(module).STAGE
    except ModuleNotFoundError as e:
        if e.name and (module == e.name or module.startswith(e.name + ".")):
            raise ConfigError(f"{where}: kind {kind!r} needs module {module}, which is not in this tree yet") from None
        raise
    except AttributeError as e:
        raise ConfigError(f"{where}: kind {kind!r}: {module} declares no STAGE ({e})") from None
    return stage


@lru_cache(maxsize=None)
def declared(kind: str) -> dict:
    """The literal keyword fields of `STAGE = Stage(...)` in kind's module, read from its source
    without importing it (stage modules import torch; `lmforge --help` must not). `config` is
    the config class's name, `config_module` the module defining it. tests/test_architecture.py
    checks these against the imported STAGE."""
    path = Path(__file__).resolve().parent.parent.parent.joinpath(*module_of(kind).split(".")).with_suffix(".py")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "STAGE" for t in node.targets):
            out = {}
            for kw in node.value.keywords:
                if kw.arg == "config" and isinstance(kw.value, ast.Name):
                    out["config"] = kw.value.id
                    out["config_module"] = _defined_in(tree, kw.value.id, module_of(kind))
                elif kw.arg == "args" and isinstance(kw.value, ast.Tuple):
                    out["args"] = [_literal_call(c) for c in kw.value.elts]
                else:
                    try:
                        out[kw.arg] = ast.literal_eval(kw.value)
                    except ValueError:
                        continue    # a function or a computed value: known after import only
            return out
    raise LookupError(f"{path}: no `STAGE = Stage(...)` declaration")


def _literal_call(node: ast.AST) -> dict:
    """`Arg("--data", "data", "help", append=True)` as {"args": [...], "kwargs": {...}}."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Arg"):
        raise ValueError("an option that is not a literal Arg(...)")
    return {"args": [ast.literal_eval(a) for a in node.args],
            "kwargs": {k.arg: ast.literal_eval(k.value) for k in node.keywords}}


def _defined_in(tree: ast.Module, name: str, module: str) -> str:
    """The module a top-level name of `tree` (the source of `module`) comes from."""
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == name for a in node.names):
            return node.module if not node.level else f"{module.rsplit('.', node.level)[0]}.{node.module}"
    return module


def command_words(kind: str) -> list[str]:
    """The CLI words of a stage kind (`tokenizer train`), read without importing it."""
    return (declared(kind).get("command") or kind).split()


if __name__ == "__main__":  # python -m lmforge.recipe.registry: which kinds import here
    from lmforge.config import ConfigError
    for k in STAGES:
        try:
            load_stage(k, k)
            print(f"{k}: ok")
        except ConfigError as e:
            print(e, file=sys.stderr)
