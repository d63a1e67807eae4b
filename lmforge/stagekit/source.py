"""Where a stage starts from: a checkpoint (its weights and architecture) and its tokenizer."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lmforge import checkpoint as ckpt
from lmforge.config import ConfigError
from lmforge.model.config import ModelConfig
from lmforge.model.load import model_config_of


@dataclass
class InitConfig:
    """Start a new run from another run's weights (not a resume: fresh schedule and loader)."""
    from_checkpoint: str | None = None   # a step-N folder, or a run folder (its latest checkpoint)
    load_optimizer: bool = False


def source_checkpoint(path: str | None, key: str = "init.from_checkpoint") -> tuple[Path, ModelConfig]:
    """(step folder, its model config), or a ConfigError naming `key`."""
    try:
        step_dir = ckpt.resolve(path)
        return step_dir, model_config_of(step_dir)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"{key}: {e}") from None


@dataclass
class Source:
    step_dir: Path
    model_cfg: ModelConfig
    tokenizer_dir: Path
    tok: object
    info: dict


def load_source(init: InitConfig, tokenizer: str, chatml: bool = True) -> Source:
    """The checkpoint to start from, its model config and its tokenizer; ConfigError if unusable."""
    from lmforge.tokenizer.train import load_tokenizer, tokenizer_info

    step_dir, model_cfg = source_checkpoint(init.from_checkpoint)
    tok_dir = Path(tokenizer) if tokenizer else ckpt.tokenizer_dir_of(step_dir)
    if tok_dir is None or not (tok_dir / "tokenizer.json").is_file():
        raise ConfigError(f"tokenizer: no tokenizer folder given and none beside {step_dir} (set tokenizer=DIR)")
    tok, info = load_tokenizer(tok_dir), tokenizer_info(tok_dir)
    if info["vocab_size"] > model_cfg.vocab_size:
        raise ConfigError(f"tokenizer: {tok_dir} has {info['vocab_size']} ids, the model only {model_cfg.vocab_size}")
    for t in ("<|im_start|>", "<|im_end|>") if chatml else ():
        if tok.token_to_id(t) is None:
            raise ConfigError(f"tokenizer: {tok_dir} has no ChatML token {t}")
    if chatml and info.get("pad_id") is None:
        raise ConfigError(f"tokenizer: {tok_dir} has no pad token")
    return Source(step_dir, model_cfg, tok_dir, tok, info)
