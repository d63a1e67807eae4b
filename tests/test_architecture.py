"""The house layout (docs/architecture.md): each layer imports only the layers below it, the
stage files never import one another, and the CLI starts without torch.

Every `import` counts, also those inside functions: a lazy import is still a dependency."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "lmforge"

# (layer, module prefixes); a module belongs to the longest prefix that matches it.
LAYERS = [
    (1, ["lmforge", "lmforge.config", "lmforge.shards", "lmforge.checkpoint", "lmforge.device", "lmforge.workers",
         "lmforge.truncate", "lmforge.io", "lmforge.numfmt"]),
    (2, ["lmforge.model", "lmforge.data", "lmforge.tokenizer", "lmforge.align"]),
    (3, ["lmforge.train", "lmforge.infer", "lmforge.eval", "lmforge.grow", "lmforge.export", "lmforge.report",
         "lmforge.corpus"]),
    (4, ["lmforge.stagekit"]),
    (5, ["lmforge.stages"]),
    (6, ["lmforge.findings"]),
    (7, ["lmforge.recipe"]),
    (8, ["lmforge.cli"]),
    (9, ["lmforge.__main__"]),
]
BASE = {p for p in LAYERS[0][1]}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def place(module: str) -> tuple[int, str]:
    """(layer, group): modules of one group may import each other; the base layer is one group,
    every stage module is its own group."""
    best = None
    for layer, prefixes in LAYERS:
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > len(best[1])):
                best = (layer, p)
    assert best is not None, f"{module}: not placed in any layer (add it to LAYERS and docs/architecture.md)"
    layer, prefix = best
    if layer == 1:
        return 1, "base"
    if prefix == "lmforge.stages":
        return 5, module
    return layer, prefix


def imports_of(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("lmforge")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.startswith("lmforge"):
                found.add(name)
                found |= {f"{name}.{a.name}" for a in node.names if (ROOT.parent / f"{name}.{a.name}".replace(
                    ".", "/")).with_suffix(".py").exists() or (ROOT.parent / f"{name}.{a.name}".replace(".", "/")).is_dir()}
    return found


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in ROOT.rglob("*.py")}


def violations() -> list[str]:
    out = []
    for mod, path in sorted(all_modules().items()):
        layer, group = place(mod)
        for target in sorted(imports_of(path, mod)):
            if target == "lmforge" or target == mod:
                continue
            t_layer, t_group = place(target)
            if t_layer < layer or t_group == group:
                continue
            out.append(f"{mod} (layer {layer}) imports {target} (layer {t_layer}, {t_group})")
    return out


def test_every_module_imports_only_layers_below_it():
    bad = violations()
    assert not bad, "layering violations:\n" + "\n".join(bad)


def test_the_checker_catches_an_upward_import(tmp_path, monkeypatch):
    # plant a model -> train import in a copy of the rule's input and see it reported
    fake = ROOT / "model" / "_planted_for_test.py"
    fake.write_text("from lmforge.train.trainer import Trainer\n")
    try:
        assert any("lmforge.model._planted_for_test" in v and "lmforge.train.trainer" in v for v in violations())
    finally:
        fake.unlink()
    fake = ROOT / "stages" / "_planted_for_test.py"
    fake.write_text("from lmforge.stages.sft import SFTConfig\n")
    try:
        assert any("lmforge.stages._planted_for_test" in v for v in violations())  # stage -> stage
    finally:
        fake.unlink()


def test_no_import_cycles_between_modules():
    """No module reaches itself through imports (an edge to a package that contains the
    importing module is left out: `from lmforge.model import X` inside lmforge.model.*)."""
    mods = all_modules()
    graph = {m: {t for t in imports_of(p, m) if t in mods and t != m and not m.startswith(t + ".")}
             for m, p in mods.items()}
    done: set[str] = set()

    def visit(m: str, stack: list[str]) -> None:
        if m in stack:
            pytest.fail("import cycle: " + " -> ".join(stack[stack.index(m):] + [m]))
        if m in done:
            return
        for t in sorted(graph[m]):
            visit(t, stack + [m])
        done.add(m)

    for m in sorted(graph):
        visit(m, [])


@pytest.mark.parametrize("code", [
    "from lmforge.cli import build_parser; build_parser(['--help'])",
    "from lmforge.cli import build_parser; build_parser(['data', '--help'])",
    "import lmforge.data.pipeline, lmforge.data.quality, lmforge.data.topics, lmforge.data.dedup.minhash, "
    "lmforge.data.dedup.substring, lmforge.data.extract, lmforge.data.langid, lmforge.data.filters",
])
def test_cli_and_data_steps_do_not_import_torch(code):
    out = subprocess.run([sys.executable, "-c", code + "; import sys; print('torch' in sys.modules)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("code", [
    "from lmforge.cli import main; main(['config', 'list'])",
    "from lmforge.cli import build_parser; build_parser(['tokenizer', 'encode', '--help'])",
    "from lmforge.cli import build_parser; build_parser(['sft', '--help'])",
    "from lmforge.cli import build_parser; build_parser(['report', '--help'])",
])
def test_config_list_and_tokenizer_commands_do_not_import_torch(code):
    out = subprocess.run([sys.executable, "-c", code + "; import sys; print('torch' in sys.modules)"],
                         capture_output=True, text=True, check=True, cwd=ROOT.parent)
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_every_registered_stage_has_a_descriptor_a_command_and_a_config_doc():
    """Each kind of lmforge.recipe.registry.STAGES: its module declares STAGE (its fields as the
    registry reads them without importing), `lmforge COMMAND` exists and reaches Stage.run, and
    docs/config.md documents its config."""
    import importlib

    from lmforge.cli import build_parser
    from lmforge.recipe.registry import STAGES, declared, module_of
    from lmforge.stagekit.stage import Arg, Stage
    config_md = (ROOT.parent / "docs" / "config.md").read_text(encoding="utf-8")
    for kind in STAGES:
        stage = importlib.import_module(module_of(kind)).STAGE
        assert isinstance(stage, Stage) and stage.kind == kind, kind
        seen = declared(kind)
        assert seen["kind"] == kind and seen["help"] == stage.help and seen["config"] == stage.config.__name__
        assert seen["example"] == stage.example and (seen.get("command") or kind) == (stage.command or kind)
        assert [Arg(*a["args"], **a["kwargs"]) for a in seen.get("args", [])] == list(stage.args), kind
        assert seen["config_module"] == stage.config.__module__, kind
        run = importlib.import_module(module_of(kind)).run
        assert getattr(run, "__self__", None) is stage or kind == "needle", kind   # needle: + a test model
        parser, words = build_parser(stage.words), stage.words
        sub = parser
        for w in words:
            sub = next(a for a in sub._actions if a.__class__.__name__ == "_SubParsersAction").choices[w]
        assert sub.format_help(), kind
        assert f"\n## {kind}\n\n`{stage.config.__module__}.{stage.config.__name__}`" in config_md, kind


def test_stage_commands_run_the_stage_contract(tmp_path, monkeypatch):
    """The generic command of a stage runs that stage's descriptor through Stage.run (not a copy of
    its code): a body swapped into lmforge.stages.data.STAGE is what `lmforge data` runs, under
    the contract (DONE.json written)."""
    import dataclasses

    import lmforge.stages.data as data_stage
    from lmforge.cli import main
    seen = []
    monkeypatch.setattr(data_stage, "STAGE", dataclasses.replace(
        data_stage.STAGE, body=lambda cfg, progress: seen.append(cfg.output) or {"docs": 1}))
    assert main(["data", "--set", "input=x", "--out", str(tmp_path / "o"), "--quiet"]) == 0
    assert seen == [str(tmp_path / "o")] and (tmp_path / "o" / "DONE.json").read_text().strip().startswith("{")


def test_adding_a_stage_kind_touches_its_module_and_one_registry_line(tmp_path):
    """docs/architecture.md's example, done: a new stage module plus one line in STAGES gives a
    recipe kind, a command and a config listing (the module is written to a temporary copy)."""
    import shutil
    copy = tmp_path / "lmforge"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "stages" / "wordcount.py").write_text((ROOT.parent / "docs" / "architecture.md").read_text(
        encoding="utf-8").split("```python\n# lmforge/stages/wordcount.py\n", 1)[1].split("```", 1)[0])
    reg = copy / "recipe" / "registry.py"
    reg.write_text(reg.read_text().replace('    "report",\n]', '    "report",\n    "wordcount",\n]'))
    (tmp_path / "in.txt").write_text("one two three\nfour five\n")
    code = ("from lmforge.cli import main; import sys; "
            f"sys.exit(main(['wordcount', '--set', 'input={tmp_path / 'in.txt'}', '--set', "
            f"'out_dir={tmp_path / 'wc'}']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "[wordcount] done" in out.stdout and '"words": 5' in (tmp_path / "wc" / "DONE.json").read_text()
    listed = subprocess.run([sys.executable, "-m", "lmforge", "config", "list"], capture_output=True, text=True,
                            cwd=tmp_path, env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert "wordcount" in listed.stdout
