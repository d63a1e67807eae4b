"""A distillation teacher for a training stage: loaded, checked against the student, wrapped
around the stage's objective (`distill:` in pretrain and sft configs); or a cache of its top-k
logits (`distill.teacher_cache`, pretraining), checked against the student's data."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from lmforge.config import ConfigError
from lmforge.model.config import ModelConfig
from lmforge.model.load import open_source, tokenizer_dir_of
from lmforge.shards import TokenDataset
from lmforge.train.objectives.distill import CachedDistillObjective, DistillConfig, DistillObjective
from lmforge.train.teacher_cache import TeacherCache


def _vocab(path: Path | None) -> dict | None:
    if path is None:
        return None
    from lmforge.tokenizer.train import load_tokenizer
    folder = path.parent if path.suffix == ".json" else path
    if not (folder / "tokenizer.json").is_file():
        return None
    return load_tokenizer(folder).get_vocab()


def check_same_tokenizer(teacher_tok: Path | None, student_tok: Path | None, teacher: str) -> None:
    """Distillation compares distributions id by id: the two vocabularies must be the same map."""
    a, b = _vocab(teacher_tok), _vocab(student_tok)
    if a is None or b is None:
        which = "teacher" if a is None else "student"
        print(f"warning: distill.teacher: no tokenizer found for the {which}; only the vocabulary sizes "
              f"were compared", file=sys.stderr)
        return
    if a != b:
        diff = sum(1 for t, i in a.items() if b.get(t) != i) + len(set(b) - set(a))
        raise ConfigError(f"distill.teacher: {teacher} has another tokenizer than the student "
                          f"({teacher_tok} vs {student_tok}: {diff} tokens differ); distillation needs the same one")


def attach_teacher(objective, cfg: DistillConfig, student: ModelConfig, device: torch.device,
                   student_tokenizer: Path | None):
    if cfg.teacher_cache:
        return attach_cache(objective, cfg, student)
    try:
        src = open_source(cfg.teacher)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"distill.teacher: {e}") from None
    if src.model_cfg.vocab_size != student.vocab_size:
        raise ConfigError(f"distill.teacher: {src.path} has {src.model_cfg.vocab_size} token ids, the student "
                          f"{student.vocab_size}; distillation needs the same tokenizer")
    check_same_tokenizer(tokenizer_dir_of(src.path), student_tokenizer, cfg.teacher)
    return DistillObjective(objective, src.build(device), cfg, student.vocab_size)


def attach_cache(objective, cfg: DistillConfig, student: ModelConfig):
    """The LM objective with cached teacher logits; every mismatch one line naming the key."""
    where = f"distill.teacher_cache: {cfg.teacher_cache}"
    if not isinstance(getattr(objective, "train_set", None), TokenDataset) or not hasattr(objective, "loader"):
        raise ConfigError(f"{where}: cached teacher logits are for pretraining on token shards; "
                          f"this stage distils from a live teacher (distill.teacher)")
    try:
        cache = TeacherCache(cfg.teacher_cache)
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise ConfigError(f"distill.teacher_cache: {e}") from None
    if cache.vocab_size != student.vocab_size:
        raise ConfigError(f"{where}: {cache.vocab_size} token ids, the student {student.vocab_size}; "
                          f"distillation needs the same tokenizer")
    if cache.temperature != cfg.temperature:
        raise ConfigError(f"{where}: written at temperature {cache.temperature}, distill.temperature is "
                          f"{cfg.temperature} (the mass outside the top k at another temperature is not in the "
                          f"cache); set it to {cache.temperature} or write the cache again")
    why = cache.check_matches(objective.train_set)
    if why:
        raise ConfigError(f"{where}: {why}")
    return CachedDistillObjective(objective, cache, cfg, student.vocab_size)
