"""`lmforge character`: build a role-play character package on a chat model (Index-1.9B-character).

    lmforge character --set card=examples/character/lin.yaml --set checkpoint=runs/x/dpo --set out_dir=runs/x/character

Reads the card (lmforge.infer.character: name, persona, few-shot examples, a knowledge
folder), cuts the knowledge into passages and indexes them with BM25 (jieba for Chinese),
checks the chat model and its tokenizer load and that the card's prompt fits the window,
and writes the package `lmforge chat CKPT --character OUT` loads:

    out_dir/card.json, passages.jsonl, bm25/ (the index), character.json (checkpoint,
    tokenizer, passages, files, prompt tokens of the example turns), DONE.json.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lmforge.config import ConfigError, check
from lmforge.io.account import Account
from lmforge.io.atomic import write_json
from lmforge.stagekit.runner import reject_sink
from lmforge.stagekit.stage import DONE, Stage
from lmforge.stagekit.source import InitConfig, load_source


@dataclass
class CharacterConfig:
    card: str = ""                  # character card YAML
    checkpoint: str = ""            # the chat model (step dir or run dir)
    tokenizer: str = ""             # "" = the one beside the checkpoint
    out_dir: str = "runs/character"

    def __post_init__(self):
        check(bool(self.card), "card", "set the character card YAML (e.g. examples/character/lin.yaml)")
        check(bool(self.checkpoint), "checkpoint", "set the chat model checkpoint (or run dir)")


def body(cfg: CharacterConfig, progress: bool = True) -> dict:
    from lmforge.infer.character import Character

    out = Path(cfg.out_dir)
    src = load_source(InitConfig(from_checkpoint=cfg.checkpoint), cfg.tokenizer)
    errors = reject_sink(out)      # the knowledge folder's bad records, each with its file and line
    try:
        char = Character.load(cfg.card, errors)
    except FileNotFoundError as e:
        raise ConfigError(f"card: {e}") from None
    finally:
        errors.close()
    first = char.card.examples[0]["user"] if char.card.examples else char.card.name
    prompt = src.tok.encode(char.prompt_text(first), add_special_tokens=False).ids
    window = src.model_cfg.max_seq_len
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "card.json", {**char.to_json(), "knowledge": ""})
    if char.index is not None:
        char.index.save(out)
    else:
        (out / "passages.jsonl").write_text("")
    passages = char.index.passages if char.index is not None else []
    info = {"name": char.card.name, "checkpoint": str(src.step_dir), "tokenizer": str(src.tokenizer_dir),
            "passages": len(passages), "files": len({p["source"] for p in passages}),
            "example_prompt_tokens": len(prompt), "window": window,
            "fits_window": len(prompt) < window}
    write_json(out / "character.json", info)
    if char.index is not None:
        docs = char.index.documents
        info["account"] = Account("character knowledge", docs + errors.total, docs, dict(errors.counts),
                                  errors.path, "documents").line()
    if progress and not info["fits_window"]:
        print(f"note: the card's prompt takes {len(prompt)} tokens of a {window}-token window; "
              f"prompts will be middle-truncated")
    return (info)


STAGE = Stage(kind="character", config=CharacterConfig, body=body,
              help="build a role-play character package: card + BM25 index of its knowledge folder, checked "
                   "against the chat model",
              example="card=examples/character/lin.yaml",
              outputs=("card.json", "passages.jsonl", "character.json", DONE))
run = STAGE.run
