"""Adopt a released tokenizer (a Hugging Face folder's tokenizer.json) as one of our tokenizer folders.

The files are copied as they are (so the ids are the released model's), and the side file
`lmforge_tokenizer.json` is written last from what the HF files declare: bos/eos/pad ids
(pad = eos when none is declared, as TRL and LLaMA-Factory do), the special tokens, the
vocabulary size. A slow SentencePiece `tokenizer.model` alone is not read: save the fast
tokenizer once with transformers (`AutoTokenizer.from_pretrained(d).save_pretrained(d)`).
"""
from __future__ import annotations

import shutil
from pathlib import Path

from lmforge.io.atomic import write_json
from lmforge.tokenizer.train import SIDE_FILE, load_tokenizer, tokenizer_info

HF_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
            "generation_config.json")


def adopt_tokenizer(src: str | Path, dst: str | Path) -> dict:
    """Copy the HF tokenizer files of `src` into `dst` and write the side file; returns it."""
    src, dst = Path(src), Path(dst)
    if not (src / "tokenizer.json").is_file():
        hint = " (only a slow tokenizer.model: save the fast one with transformers first)" \
            if (src / "tokenizer.model").is_file() else ""
        raise FileNotFoundError(f"{src}: no tokenizer.json{hint}")
    tok = load_tokenizer(src)   # an unreadable file: DataError naming it (exit 5)
    info = tokenizer_info(src, tok)
    dst.mkdir(parents=True, exist_ok=True)
    (dst / SIDE_FILE).unlink(missing_ok=True)   # incomplete until rewritten below
    for name in HF_FILES:
        if (src / name).is_file() and (src / name).resolve() != (dst / name).resolve():
            shutil.copy2(src / name, dst / name)
    info = {**info, "kind": "adopted", "source": str(src.resolve()),
            "has_chatml": all(tok.token_to_id(t) is not None for t in ("<|im_start|>", "<|im_end|>"))}
    write_json(dst / SIDE_FILE, info, indent=1)
    return info
