"""A stage's source with special tokens added: the tokenizer folder (lmforge.tokenizer.special)
and the model (one more embedding / LM-head row per new token).

The model config's `vocab_size` becomes the tokenizer's id count when that grew past it;
the padded size (a multiple of pad_vocab_multiple) grows only when the new ids do not fit
in the padding. Either way each new token's rows are set to the mean of the rows of the
ids before it (Hewitt, "Initializing new word embeddings"; as `lmforge pretrain` does when the
vocabulary grows): an "average token", so the model's outputs barely move before training.
A row that already existed but belonged to no token (a model built with room) is
initialised the same way, since it was never trained as an input.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from lmforge import checkpoint as ckpt
from lmforge.model import Transformer
from lmforge.stagekit.source import Source
from lmforge.tokenizer.extend import new_embedding_rows

ROW_PARAMS = ("embed_tokens.weight", "lm_head.weight")


def with_special_tokens(src: Source, tokens: list[str], out_dir: str | Path) -> tuple[Source, dict[str, int]]:
    """(the source with `tokens` in its tokenizer, saved at out_dir/tokenizer, and its model
    config grown to hold them; {token: id} of the tokens new to the source tokenizer). A
    complete out_dir/tokenizer made from the same source is reused (a resumed stage)."""
    from lmforge.tokenizer.special import add_special_tokens
    from lmforge.tokenizer.train import is_complete, load_tokenizer, tokenizer_info

    dst = Path(out_dir) / "tokenizer"
    if dst.resolve() == Path(src.tokenizer_dir).resolve():
        raise ValueError(f"{dst}: the source's own tokenizer folder cannot be extended in place")
    old_n = tokenizer_info(src.tokenizer_dir, src.tok)["vocab_size"]
    reusable = is_complete(dst) and tokenizer_info(dst).get("base_vocab_size") == old_n and all(
        load_tokenizer(dst).token_to_id(t) is not None for t in tokens)
    if not reusable:
        add_special_tokens(src.tokenizer_dir, tokens, dst)
    tok, info = load_tokenizer(dst), tokenizer_info(dst)
    ids = {t: tok.token_to_id(t) for t in tokens}
    for t, i in ids.items():   # one token wherever its text appears
        if tok.encode(t, add_special_tokens=False).ids != [i]:
            raise ValueError(f"{dst}: {t!r} does not encode as its one special id {i}")
    model_cfg = src.model_cfg
    if info["vocab_size"] > model_cfg.vocab_size:
        model_cfg = dataclasses.replace(model_cfg, vocab_size=info["vocab_size"])
    return Source(src.step_dir, model_cfg, dst, tok, info, src.chat), {t: i for t, i in ids.items() if i >= old_n}


@torch.no_grad()
def load_with_new_rows(model: Transformer, step_dir: Path, old_cfg, new_ids: list[int]) -> None:
    """`model` (the grown config) gets the weights of the checkpoint at `step_dir` (built with
    `old_cfg`); the embedding and LM-head rows of `new_ids` = the mean of the rows before the
    first new id."""
    old = Transformer(old_cfg)
    ckpt.load_weights(step_dir, old)
    own, state = model.state_dict(), old.state_dict()
    if set(own) != set(state):
        raise ValueError(f"{step_dir}: parameters differ from the grown model's "
                         f"({sorted(set(own) ^ set(state))[:4]})")
    first = min(new_ids) if new_ids else 0
    for name, w in state.items():
        target = own[name]
        if name in ROW_PARAMS:                 # [padded vocab, d]: the padding may have grown
            n = min(target.shape[0], w.shape[0])
            target[:n] = w[:n]
            if new_ids:
                target[new_ids] = new_embedding_rows(w[:first], len(new_ids)).to(target.dtype)
        else:
            target.copy_(w)
