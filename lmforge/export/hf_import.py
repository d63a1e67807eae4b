"""A Hugging Face folder -> our checkpoint format (`lmforge import HF_DIR OUT`), the inverse of export.

    OUT/checkpoints/step-0/   model.safetensors (float32, our parameter names, vocab padded),
                              trainer.json (run config: the model config, source), meta.json last
    OUT/tokenizer/            the folder's tokenizer.json and HF files + lmforge_tokenizer.json
    OUT/import.json           what was imported (written last: a rerun skips)

Every stage also takes the HF folder directly (lmforge.model.load); importing once saves
the conversion on each start and gives a run folder like any other (e.g. for `lmforge
report`, or to keep the weights in float32). No optimizer state: continue with
`init.load_optimizer: false`.
"""
from __future__ import annotations

from pathlib import Path

from safetensors.torch import save_model

from lmforge import checkpoint as ckpt
from lmforge.config import to_dict
from lmforge.io.atomic import read_json, write_json
from lmforge.align.chat_format import read_template
from lmforge.model.load import HF, open_source, tokenizer_dir_of
from lmforge.tokenizer.adopt import adopt_tokenizer

DONE = "import.json"


def import_hf(hf_dir: str | Path, out_dir: str | Path, tokenizer: str | Path | None = None) -> dict:
    """Write OUT (see module doc); returns the summary. A finished OUT is skipped."""
    out = Path(out_dir)
    if (out / DONE).is_file():
        return {**read_json(out / DONE), "skipped": True}
    src = open_source(hf_dir)
    if src.format != HF:
        raise ValueError(f"{hf_dir}: already an lmforge checkpoint ({src.path}); use it as it is")
    tok_dir = Path(tokenizer) if tokenizer else tokenizer_dir_of(src.path)
    if tok_dir is None:
        raise FileNotFoundError(f"{hf_dir}: no tokenizer.json in the folder; pass --tokenizer DIR")
    if ckpt.latest(out / "checkpoints") is not None:
        raise ValueError(f"{out}: already holds checkpoints but no {DONE}; choose a new OUT")
    info = adopt_tokenizer(tok_dir, out / "tokenizer")
    if info["vocab_size"] > src.model_cfg.vocab_size:
        raise ValueError(f"{tok_dir}: the tokenizer has {info['vocab_size']} ids, the model only "
                         f"{src.model_cfg.vocab_size}")
    model = src.build()
    tmp = ckpt.temp_dir(out / "checkpoints", 0)
    save_model(model, str(tmp / "model.safetensors"))
    state = {"config": {"model": to_dict(src.model_cfg)}, "objective_name": "import",
             "source": str(src.path.resolve()), "tokens_seen": 0, "bad_steps": 0}
    step = ckpt.commit(tmp, 0, state)
    summary = {"source": str(src.path.resolve()), "checkpoint": str(step), "tokenizer": str(out / "tokenizer"),
               "n_params": sum(p.numel() for p in model.parameters()), "model": to_dict(src.model_cfg),
               "pad_is_eos": info.get("pad_is_eos", False), "has_chatml": info["has_chatml"],
               "has_chat_template": read_template(out / "tokenizer") is not None}
    write_json(out / DONE, summary)
    return summary
