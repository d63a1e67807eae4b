"""The stages: each module holds one stage's typed config and its `run(cfg, progress=True) -> dict`
(the stage contract: write into out_dir, skip when DONE.json is there, resume when interrupted).
Stage modules use the layers below them (lmforge.stagekit, lmforge.train, the libraries) and
never one another, so each reads top to bottom on its own. docs/architecture.md has the map.
"""
