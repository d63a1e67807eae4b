"""Add special tokens to an existing tokenizer folder (e.g. StableLM 2's negative-class token).

A special token added here:
- takes the next free id (after every existing id, model vocabulary and added tokens), so
  every old id and every old encoding stays as it was;
- is matched as one token wherever its text appears in a string (as `<|im_start|>` is), and
  dropped by `decode(..., skip_special_tokens=True)`;
- is listed with the folder's other special tokens in the transformers files and the side
  file (`lmforge_tokenizer.json`: new `vocab_size` and `padded_vocab_size`).

The new folder is built in a temporary sibling and renamed into place, so a kill leaves the
old folder or the new one, never half of one. The model side (a new embedding / LM-head row,
initialised to the mean of the existing rows) is lmforge.stagekit.vocab.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from lmforge.io.atomic import fsync_dir, temp_sibling


def _hf_name(hf_cfg: dict, key: str) -> str | None:
    v = hf_cfg.get(key)
    return v.get("content") if isinstance(v, dict) else v


def add_special_tokens(src_dir: str | Path, tokens: list[str], out_dir: str | Path) -> dict:
    """Write `out_dir` = the tokenizer folder `src_dir` plus `tokens` as special tokens
    (those it already has keep their ids). Returns the new side info, with `added` =
    {token: id} of the tokens that are new."""
    from tokenizers import AddedToken

    from lmforge.io.atomic import read_json_object

    from .train import CHATML_TEMPLATE, is_complete, load_tokenizer, save_tokenizer, tokenizer_file, \
        tokenizer_info

    src_file = tokenizer_file(src_dir)
    tok = load_tokenizer(src_file)
    info = tokenizer_info(src_file, tok)
    hf_cfg = read_json_object(src_file.parent / "tokenizer_config.json")
    new = [t for t in dict.fromkeys(tokens) if tok.token_to_id(t) is None]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in new])
    specials = list(info.get("special_tokens") or {}) or [
        t["content"] for t in json.loads(tok.to_str()).get("added_tokens", []) if t.get("special")]
    specials += [t for t in tokens if t not in specials]
    out = Path(out_dir)
    tmp = temp_sibling(out)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        side = save_tokenizer(
            tok, tmp, special_tokens=specials, bos_token=_hf_name(hf_cfg, "bos_token"),
            eos_token=_hf_name(hf_cfg, "eos_token"), pad_token=_hf_name(hf_cfg, "pad_token"),
            chat_template=hf_cfg.get("chat_template", CHATML_TEMPLATE), pad_multiple=int(info.get("pad_multiple", 64)),
            model_max_length=int(hf_cfg.get("model_max_length", 4096)),
            extra={"base": str(src_file), "base_vocab_size": info["vocab_size"],
                   "added_special": {t: tok.token_to_id(t) for t in new}})
        if (src_file.parent / "chat_template.jinja").is_file():
            shutil.copy(src_file.parent / "chat_template.jinja", tmp / "chat_template.jinja")
        assert is_complete(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(out.parent)
    return {**side, "added": {t: tok.token_to_id(t) for t in new}}
