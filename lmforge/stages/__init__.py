"""The stages: each module holds one stage's typed config and declares the stage as
`STAGE = lmforge.stagekit.stage.Stage(...)` (config class, body, CLI help and example, outputs,
hooks); `STAGE.run(cfg, progress=True) -> dict` is the stage contract (lock out_dir, skip when
finished, resume when interrupted, DONE.json last), and `run = STAGE.run` in each module.
Stage modules use the layers below them (lmforge.stagekit, lmforge.train, the libraries) and
never one another, so each reads top to bottom on its own. The registry is
lmforge.recipe.registry.STAGES; docs/architecture.md has the map.
"""
