"""Where a stage starts from: a checkpoint of ours or a Hugging Face folder (its weights and
architecture, lmforge.model.load) and its tokenizer."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lmforge.config import ConfigError
from lmforge.model.config import ModelConfig
from lmforge.model.load import open_source, tokenizer_dir_of


@dataclass
class InitConfig:
    """Start a new run from another run's weights (not a resume: fresh schedule and loader)."""
    from_checkpoint: str | None = None   # a step-N folder, a run folder (its latest checkpoint) or a HF folder
    load_optimizer: bool = False         # only from one of our own full-weight checkpoints


def source_checkpoint(path: str | None, key: str = "init.from_checkpoint",
                      load_optimizer: bool = False) -> tuple[Path, ModelConfig]:
    """(step folder or Hugging Face folder, its model config), or a ConfigError naming `key`
    (also when `load_optimizer` asks for an optimizer state the source does not have)."""
    try:
        src = open_source(path)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"{key}: {e}") from None
    if load_optimizer and not src.has_optimizer:
        raise ConfigError(f"init.load_optimizer: {src.why_no_optimizer()}; set init.load_optimizer=false")
    return src.path, src.model_cfg


@dataclass
class Source:
    step_dir: Path               # our step folder, or a Hugging Face folder
    model_cfg: ModelConfig
    tokenizer_dir: Path
    tok: object
    info: dict
    chat: object = None          # its chat format (lmforge.align.chat_format), None for a base tokenizer


def source_tokenizer(step_dir: Path, tokenizer: str | None, vocab_size: int | None = None):
    """(folder, tokenizer, info) of `tokenizer`, else of the folder beside `step_dir`; ConfigError
    when there is none, or when it has more ids than `vocab_size` (the model's rows)."""
    from lmforge.tokenizer.train import load_tokenizer, tokenizer_info

    tok_dir = Path(tokenizer) if tokenizer else tokenizer_dir_of(step_dir)
    if tok_dir is None or not (tok_dir / "tokenizer.json").is_file():
        raise ConfigError(f"tokenizer: no tokenizer folder given and none beside {step_dir} (set tokenizer=DIR)")
    tok = load_tokenizer(tok_dir)
    info = tokenizer_info(tok_dir, tok)
    if vocab_size is not None and info["vocab_size"] > vocab_size:
        raise ConfigError(f"tokenizer: {tok_dir} has {info['vocab_size']} ids, the model only {vocab_size}")
    return tok_dir, tok, info


def load_source(init: InitConfig, tokenizer: str, chatml: bool = True, own_format: bool = False) -> Source:
    """The checkpoint to start from, its model config and its tokenizer; ConfigError if unusable.
    chatml: the stage trains on conversations, so the tokenizer needs a chat format (its own
    template, or ChatML) and a pad id (eos stands in where none is declared: tokenizer_info).
    own_format: the stage formats conversations through Source.chat (SFT, DPO); the others
    build ChatML text themselves and still need a ChatML tokenizer."""
    from lmforge.align.chat_format import chat_format

    step_dir, model_cfg = source_checkpoint(init.from_checkpoint, load_optimizer=init.load_optimizer)
    tok_dir, tok, info = source_tokenizer(step_dir, tokenizer, model_cfg.vocab_size)
    chat = chat_format(tok_dir, tok)
    if chatml and chat is None:
        raise ConfigError(f"tokenizer: {tok_dir} has no chat template and no ChatML tokens <|im_start|>/<|im_end|> "
                          f"(give a tokenizer folder with a chat_template, or one of ours, with tokenizer=DIR)")
    if chatml and not own_format and (chat is None or chat.kind != "chatml"):
        raise ConfigError(f"tokenizer: {tok_dir} has no ChatML token <|im_start|>/<|im_end|> or its own chat "
                          "template is not ChatML (this stage writes ChatML; sft and dpo take the tokenizer's "
                          "own template)")
    if chatml and info.get("pad_id") is None:
        raise ConfigError(f"tokenizer: {tok_dir} has neither a pad token nor an eos token to pad with")
    return Source(step_dir, model_cfg, tok_dir, tok, info, chat)
