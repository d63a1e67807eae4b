"""The `tokenizer` stage, `lmforge tokenizer train`: a byte-level BPE tokenizer trained on documents
(lmforge.tokenizer.train). A finished folder (its lmforge_tokenizer.json) skips unless `overwrite`."""
from __future__ import annotations

import dataclasses

from lmforge.stagekit.facts import Facts
from lmforge.stagekit.stage import DONE, Stage
from lmforge.tokenizer.train import SIDE_FILE, TokenizerConfig, finished_folder, train_folder


def recipe_check(checker, st, cfg: TokenizerConfig) -> Facts:
    return Facts(vocab=cfg.vocab_size)


def smoke_settings(cfg: TokenizerConfig, sizes: dict) -> TokenizerConfig:
    return dataclasses.replace(cfg, vocab_size=sizes["vocab"], max_bytes=0)


STAGE = Stage(kind="tokenizer", config=TokenizerConfig, body=train_folder, finished=finished_folder,
              command="tokenizer train", help="train a byte-level BPE tokenizer on documents",
              example="vocab_size=32000", outputs=("tokenizer.json", SIDE_FILE, DONE),
              check=recipe_check, smoke=smoke_settings)
run = STAGE.run
