"""Extend an existing BPE tokenizer with tokens learned from a new corpus.

Skywork-13B extended Llama's 32000 tokens with Chinese characters and words. Here:
train a BPE on the new corpus with the *old* tokenizer's normalizer and pre-tokenizer,
then append, in the order the new BPE learned them, the first `n_new` tokens the old
vocabulary lacks: a new single symbol (e.g. a Han character where the old model fell
back to bytes) is added as is, a new merged token is added together with its merge
rule. Old tokens keep their ids, new ones take ids after the old maximum, and the new
merges rank after all old merges, so:

- any old id sequence decodes exactly as before (nothing about old tokens changed);
- BPE applies the old merges first, in the old order, and only then the new ones, so a
  new encoding is an old encoding with some adjacent tokens merged further.

The model side: `new_embedding_rows(old_weight, n_new)` gives the rows to append to the
embedding (and untied LM head) for the new ids, initialised to the mean of the existing
rows (Hewitt, "Initializing new word embeddings"): a new token starts as an "average
token", so the model's outputs barely move before training, unlike a random init.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from lmforge.config import check, to_dict
from lmforge.io.atomic import copy_file


@dataclass
class ExtendConfig:
    """`lmforge tokenizer extend`: old tokenizer + new documents -> extended tokenizer folder."""
    base: str = ""                  # tokenizer folder or tokenizer.json to extend
    inputs: list[str] = field(default_factory=list)  # new-corpus document files or folders
    out_dir: str = ""
    add_tokens: int = 1000          # how many new tokens at most
    min_frequency: int = 2
    max_bytes: int = 0
    pad_multiple: int = 64
    overwrite: bool = False

    def __post_init__(self):
        check(bool(self.base), "base", "required (the tokenizer to extend)")
        check(bool(self.inputs), "inputs", "give at least one document file or folder")
        check(bool(self.out_dir), "out_dir", "required (the folder to write)")
        check(self.add_tokens >= 1, "add_tokens", "must be >= 1")
        check(self.min_frequency >= 1, "min_frequency", "must be >= 1")
        check(self.pad_multiple >= 1, "pad_multiple", "must be >= 1")


def _uses_byte_level(node) -> bool:
    """Does a (nested) pre-tokenizer/normalizer spec contain a ByteLevel step?"""
    if isinstance(node, dict):
        return node.get("type") == "ByteLevel" or any(_uses_byte_level(v) for v in node.values())
    if isinstance(node, list):
        return any(_uses_byte_level(v) for v in node)
    return False


def _pair(m) -> tuple[str, str]:
    """Merges are serialised as ["a", "b"] (tokenizers >= 0.20) or "a b" (older files)."""
    return tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1))


def _learn(base_json: dict, texts: Iterable[str], vocab_size: int, min_frequency: int,
           show_progress: bool) -> dict:
    """Train a fresh BPE with the base's normalizer/pre-tokenizer; returns its model json."""
    from tokenizers import Tokenizer, pre_tokenizers, trainers

    model = base_json["model"]
    learner = Tokenizer.from_str(json.dumps(base_json))
    byte_level = _uses_byte_level(base_json.get("pre_tokenizer"))
    kwargs = {}
    if model.get("continuing_subword_prefix"):
        kwargs["continuing_subword_prefix"] = model["continuing_subword_prefix"]
    if model.get("end_of_word_suffix"):
        kwargs["end_of_word_suffix"] = model["end_of_word_suffix"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet() if byte_level else [],
        show_progress=show_progress and sys.stdout.isatty(), **kwargs)   # off a terminal: bare newlines
    learner.train_from_iterator(texts, trainer)
    return json.loads(learner.to_str())["model"]


def extend_tokenizer(base, texts: Iterable[str], n_new: int, min_frequency: int = 2,
                     show_progress: bool = False):
    """Return (extended Tokenizer, list of added tokens in id order). `base` is a BPE Tokenizer."""
    from tokenizers import Tokenizer

    base_json = json.loads(base.to_str())
    model = base_json["model"]
    if model.get("type") != "BPE":
        raise ValueError(f"can only extend a BPE tokenizer, got {model.get('type')!r}")
    vocab: dict[str, int] = model["vocab"]
    added_contents = {t["content"] for t in base_json.get("added_tokens", [])}
    next_id = max(list(vocab.values()) + [t["id"] for t in base_json.get("added_tokens", [])]) + 1
    learned = _learn(base_json, texts, len(vocab) + n_new, min_frequency, show_progress)

    prefix = model.get("continuing_subword_prefix") or ""
    merge_of = {}
    for m in learned["merges"]:
        a, b = _pair(m)
        merge_of[a + (b[len(prefix):] if prefix and b.startswith(prefix) else b)] = (a, b)
    new_tokens, new_merges = [], []
    for tok, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1]):
        if len(new_tokens) >= n_new:
            break
        if tok in vocab or tok in added_contents:
            continue
        if tok in merge_of:  # parts have lower learned ids: already old or just added
            a, b = merge_of[tok]
            assert a in vocab and b in vocab, (a, b)
            new_merges.append((a, b))
        vocab[tok] = next_id
        next_id += 1
        new_tokens.append(tok)
    as_lists = not model["merges"] or isinstance(model["merges"][0], list)
    model["merges"] += [list(p) if as_lists else f"{p[0]} {p[1]}" for p in new_merges]
    return Tokenizer.from_str(json.dumps(base_json)), new_tokens


def new_embedding_rows(old_weight, n_new: int):
    """Rows to append to an embedding / LM-head weight for `n_new` added tokens.

    `old_weight` is the existing [vocab, dim] tensor; returns an [n_new, dim] tensor (same
    dtype and device) whose rows all equal the mean of the old rows, computed in float32
    so a bf16 table is averaged without rounding drift. Usage, when the trainer loads a
    checkpoint for an extended tokenizer:

        emb = torch.cat([emb, new_embedding_rows(emb, new_vocab - emb.shape[0])])

    Padding rows (beyond the real vocabulary, up to a multiple of 64) can be filled the
    same way; they are never targets, so their value only matters for the softmax's
    normaliser, which the mean keeps ordinary.
    """
    import torch

    if old_weight.dim() != 2 or old_weight.shape[0] == 0:
        raise ValueError(f"expected a non-empty [vocab, dim] weight, got shape {tuple(old_weight.shape)}")
    if n_new < 0:
        raise ValueError(f"n_new must be >= 0, got {n_new}")
    mean = old_weight.detach().float().mean(dim=0, keepdim=True)
    return mean.expand(n_new, -1).to(old_weight.dtype).clone()


def extend_folder(cfg: ExtendConfig, progress: bool = True) -> dict:
    """A tokenizer folder like `train` writes (the `extend` stage, lmforge.stages.extend)."""
    from lmforge.io.documents import ErrorSink

    from lmforge.io.atomic import read_json_object

    from .train import iter_texts, load_tokenizer, save_tokenizer, tokenizer_file, tokenizer_info, vocab_len

    out = Path(cfg.out_dir)
    base_file = tokenizer_file(cfg.base)
    base = load_tokenizer(base_file)
    info = tokenizer_info(base_file, base)
    out.mkdir(parents=True, exist_ok=True)
    errors = ErrorSink(out / "rejects.jsonl")
    seen: dict = {}
    tok, added = extend_tokenizer(base, iter_texts(cfg.inputs, errors, cfg.max_bytes, seen),
                                  cfg.add_tokens, cfg.min_frequency, show_progress=progress)
    errors.close()
    # keep the base's transformers files (chat template, specials) when it has them
    hf_cfg = read_json_object(base_file.parent / "tokenizer_config.json")

    def name(key):
        v = hf_cfg.get(key)
        return v.get("content") if isinstance(v, dict) else v

    specials = list(info.get("special_tokens") or {}) or [
        t["content"] for t in json.loads(base.to_str()).get("added_tokens", []) if t.get("special")]
    side = save_tokenizer(
        tok, out, special_tokens=specials, bos_token=name("bos_token"), eos_token=name("eos_token"),
        pad_token=name("pad_token"), chat_template=hf_cfg.get("chat_template"),
        pad_multiple=cfg.pad_multiple, model_max_length=int(hf_cfg.get("model_max_length", 4096)),
        extra={"kind": "extended BPE", "base": str(base_file), "base_vocab_size": vocab_len(base),
               "n_added": len(added), "added_tokens_sample": added[:50],
               "trained_on": {**seen, "reader_errors": dict(errors.counts)}, "config": to_dict(cfg)})
    if (base_file.parent / "chat_template.jinja").is_file():
        copy_file(base_file.parent / "chat_template.jinja", out / "chat_template.jinja")
    return side
