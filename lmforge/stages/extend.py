"""The `extend` stage, `lmforge tokenizer extend`: tokens learned from a new corpus added to an existing
tokenizer, old ids kept (lmforge.tokenizer.extend; Skywork). Skips a finished folder unless `overwrite`."""
from __future__ import annotations

from lmforge.stagekit.facts import Facts
from lmforge.stagekit.stage import DONE, Stage
from lmforge.tokenizer.extend import ExtendConfig, extend_folder
from lmforge.tokenizer.train import SIDE_FILE, finished_folder

def recipe_check(checker, st, cfg: ExtendConfig) -> Facts:
    base = checker.facts_of(cfg.base).vocab
    return Facts(vocab=base + cfg.add_tokens if base else None)


STAGE = Stage(kind="extend", config=ExtendConfig, body=extend_folder, finished=finished_folder,
              command="tokenizer extend",
              help="add tokens learned from a new corpus to an existing tokenizer (old ids kept)",
              example="add_tokens=8000", outputs=("tokenizer.json", SIDE_FILE, DONE),
              check=recipe_check)
run = STAGE.run
