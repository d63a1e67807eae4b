"""`lmforge run RECIPE.yaml`: every stage of the pipeline, in order, resumable.

    name: tiny
    out_dir: runs/tiny            # RUN_DIR (default runs/<name>)
    device: cpu                   # optional: default for each stage's device / train.device
    stages:
      - name: corpus              # kind defaults to the name
        config: {from_sample: true}
      - name: tokens
        kind: encode
        config: {inputs: ["${data}/final"], tokenizer: "${tokenizer}"}

Each stage's config is the stage's own typed config (the YAML it would read on its own);
its out_dir defaults to RUN_DIR/<stage name>, and "${stage}" anywhere in a string is that
stage's out_dir ("${run}" is RUN_DIR). The whole recipe (kinds, modules, references, every
stage config) is checked before the first stage runs. RUN_DIR/recipe.json records each
stage's status as it goes; a rerun skips finished stages and resumes the interrupted one.
"""
__all__ = ["Recipe", "RecipeStage", "load_recipe", "run_recipe"]


def __getattr__(name: str):
    """Imported on use: `lmforge --help` reads lmforge.recipe.registry and must stay on the
    standard library (no yaml, no torch)."""
    if name in ("Recipe", "RecipeStage", "load_recipe"):
        from . import config
        return getattr(config, name)
    if name == "run_recipe":
        from .run import run_recipe
        return run_recipe
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
