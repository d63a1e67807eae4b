"""Which model a folder means: `lmforge generate/chat/export FOLDER` accept more than a step folder.

- a step-N folder or a Hugging Face folder: itself;
- a run folder of one training stage: its newest complete checkpoint;
- a recipe run folder (RUN_DIR with recipe.json): the model of its last stage that has one,
  in recipe order (so the export when the recipe exports, else the last trained stage),
  preferring stages recorded as done.

`pick_model` returns the folder and a one-line note saying what it picked (None when the
folder was a model itself), which the commands print to stderr.
"""
from __future__ import annotations

import json
from pathlib import Path

from lmforge import checkpoint as ckpt


def _is_hf(path: Path) -> bool:
    return (path / "config.json").is_file() and not (path / "meta.json").exists() and \
        ((path / "model.safetensors").is_file() or (path / "model.safetensors.index.json").is_file())


def _model_in(path: Path, hf: bool) -> Path | None:
    if hf and _is_hf(path):
        return path
    try:
        return ckpt.resolve(path)
    except FileNotFoundError:
        return None


def _stage_dir(run_dir: Path, out_dir: str) -> Path:
    """A stage's out_dir as recorded (relative to where `lmforge run` ran), else the folder of
    that name inside the run folder (the run was started from elsewhere, or moved)."""
    p = Path(out_dir)
    if p.exists() or p.is_absolute():
        return p
    return run_dir / p.name


def _from_recipe(run_dir: Path, hf: bool) -> tuple[Path, str]:
    try:
        ledger = json.loads((run_dir / "recipe.json").read_text(encoding="utf-8"))
        stages = ledger.get("stages", [])
    except (OSError, ValueError, AttributeError) as e:
        raise FileNotFoundError(f"{run_dir}/recipe.json: unreadable ({e})") from None
    found = []
    for st in reversed(stages):
        if not isinstance(st, dict) or not st.get("out_dir"):
            continue
        model = _model_in(_stage_dir(run_dir, st["out_dir"]), hf)
        if model is not None:
            found.append((st.get("status") == "done", st, model))
    if not found:
        raise FileNotFoundError(f"{run_dir}: a recipe run folder, but none of its stages has a model yet "
                                f"(run `lmforge run {ledger.get('recipe') or 'RECIPE.yaml'}` first)")
    done, st, model = next((f for f in found if f[0]), found[0])
    what = "exported model" if _is_hf(model) else "newest checkpoint"
    status = "" if done else f"; stage {st['name']} has not finished ({st.get('status')})"
    return model, (f"using {model}: the {what} of stage {st.get('name')} ({st.get('kind')}), the last stage of "
                   f"{run_dir} with a model{status}")


def pick_model(path: str | Path, hf: bool = True) -> tuple[Path, str | None]:
    """(the model folder `path` means, a note on what was picked or None). hf=False: only our
    checkpoints count (what `lmforge export` reads; a Hugging Face folder is refused saying so)."""
    p = Path(path)
    if ckpt.is_complete(p):
        return p, None
    if (p / "recipe.json").is_file():
        return _from_recipe(p, hf)
    try:
        step = ckpt.resolve(p)
    except FileNotFoundError:
        if (p / "config.json").is_file():
            if hf:
                return p, None     # a Hugging Face folder (its own problems are the loader's to name)
            raise FileNotFoundError(
                f"{path}: a Hugging Face folder, and `lmforge export` reads lmforge checkpoints: "
                f"`--format gguf` converts a Hugging Face folder, `lmforge import` makes it a checkpoint") from None
        why = ckpt.why_none(p)
        raise FileNotFoundError(
            f"{path}: no model found{f' ({why})' if why else ''}: give a step-N folder, a stage's run folder (its newest checkpoint), "
            f"a recipe run folder (with recipe.json: its last model){', or a Hugging Face folder' if hf else ''}"
        ) from None
    return step, f"using {step}: the newest complete checkpoint of {p}"
