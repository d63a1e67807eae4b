"""Checkpoint -> a Hugging Face folder transformers loads offline (the `export` stage is
lmforge.stages.export).

    config.json              the architecture (below), bos/eos/pad ids from the tokenizer
    model.safetensors        Norm-Head folded into lm_head.weight, padded vocab rows sliced off
    generation_config.json   eos = <|endoftext|> and the turn end of the chat format (<|im_end|>,
                             Llama 3's <|eot_id|>, ...), so generate() stops at a turn end
    tokenizer.json, tokenizer_config.json, special_tokens_map.json, chat_template.jinja: the
                             tokenizer's own chat template unchanged (ChatML for ours)
                             from the run's tokenizer folder
    lmforge_export.json      where it came from (checkpoint, step, arch)
    DONE.json                the stage summary, written last (a rerun skips)

Which transformers architecture: the first of llama, qwen2, qwen3, mistral, phi3, glm,
stablelm, gemma that computes the same logits (model/hf_archs.py, docs/models.md): full
rotary -> LlamaForCausalLM; partial rotary (StableLM 2's 25%) -> Phi3ForCausalLM, or
GlmForCausalLM with rope scaling (Phi3Config refuses it), or StableLmForCausalLM with
LayerNorm. tokenizer_config.json's model_max_length is the model's usable length
(convert.hf_max_length: a Dynamic-NTK model's extended length, see docs/models.md).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from lmforge.io.atomic import copy_file, read_json_object, write_json
from lmforge.model.convert import export_arch, hf_max_length, save_hf
from lmforge.model.load import load_checkpoint, resolve_checkpoint, tokenizer_dir_of
from lmforge.tokenizer.train import CHATML_TEMPLATE, CHATML_TEMPLATE_V1, load_tokenizer, tokenizer_info

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DONE = "DONE.json"


def _write_json(path: Path, obj) -> None:
    write_json(path, obj, indent=2)


def export_tokenizer(tok_dir: Path, out: Path, model_max_length: int | None = None) -> dict:
    """Copy the tokenizer files. The chat template travels unchanged (chat_template.jinja
    copied, tokenizer_config.json's kept); a folder with none gets ChatML only when its
    vocabulary has the ChatML tokens (our tokenizers; an older one's template is upgraded).
    model_max_length: the model's usable length (convert.hf_max_length), replacing the tokenizer's."""
    from lmforge.align.chat_format import chat_format, end_of_turn_id, has_chatml

    copy_file(tok_dir / "tokenizer.json", out / "tokenizer.json")
    (out / "chat_template.jinja").unlink(missing_ok=True)
    if (tok_dir / "chat_template.jinja").is_file():
        copy_file(tok_dir / "chat_template.jinja", out / "chat_template.jinja")
    info = tokenizer_info(tok_dir)
    tok = load_tokenizer(tok_dir)
    names = {k: tok.id_to_token(info[f"{k}_id"]) for k in ("bos", "eos", "pad") if info.get(f"{k}_id") is not None}
    cfg_path = tok_dir / "tokenizer_config.json"
    hf_cfg = read_json_object(cfg_path)
    hf_cfg.setdefault("tokenizer_class", "PreTrainedTokenizerFast")
    own = (tok_dir / "chat_template.jinja").is_file() or (
        hf_cfg.get("chat_template") and hf_cfg["chat_template"] != CHATML_TEMPLATE_V1)
    if not own and has_chatml(tok):
        hf_cfg["chat_template"] = CHATML_TEMPLATE   # the current one has the TRL generation markers
    hf_cfg.setdefault("clean_up_tokenization_spaces", False)
    if model_max_length is not None:
        hf_cfg["model_max_length"] = model_max_length
    for k, v in names.items():
        hf_cfg.setdefault(f"{k}_token", v)
    _write_json(out / "tokenizer_config.json", hf_cfg)
    sp_path = tok_dir / "special_tokens_map.json"
    specials = (json.loads(sp_path.read_text(encoding="utf-8")) if sp_path.is_file()
                else {f"{k}_token": v for k, v in names.items()})
    _write_json(out / "special_tokens_map.json", specials)
    im_end = end_of_turn_id(chat_format(out, tok), tok)   # <|im_end|>, <|eot_id|>, <end_of_turn>, ...
    return {"bos_token_id": info.get("bos_id"), "eos_token_id": info.get("eos_id"),
            "pad_token_id": info.get("pad_id"), "im_end_id": im_end}


def usable_tokenizer_dir(source, tok_dir: Path | None, given: bool) -> Path:
    """The tokenizer folder an export writes from, read once before anything is written: a
    missing or damaged one is refused in one line (naming --tokenizer's folder when it was
    given) instead of leaving weights without a usable tokenizer under the output name."""
    if tok_dir is None or not (tok_dir / "tokenizer.json").is_file():
        if given:
            raise FileNotFoundError(f"{tok_dir}: no tokenizer.json in the --tokenizer folder")
        raise FileNotFoundError(f"{source}: no tokenizer folder found beside the checkpoint "
                                f"(RUN_DIR/tokenizer/tokenizer.json); pass --tokenizer DIR")
    tokenizer_info(tok_dir, load_tokenizer(tok_dir))   # DataError naming a damaged file
    return tok_dir


def export(checkpoint: str | Path, out_dir: str | Path, dtype: str | None = None,
           tokenizer: str | Path | None = None) -> Path:
    """Write the HF folder for a checkpoint (step-N folder or run folder). Returns out_dir.

    Always rewrites (no skip); the export stage skips a finished folder.
    """
    export_info(checkpoint, out_dir, dtype, tokenizer)
    return Path(out_dir)


def export_info(checkpoint, out_dir, dtype=None, tokenizer=None, model=None) -> dict:
    """Write the folder; returns what was written (arch, dtype, step, n_params, ...).
    model: write this model instead of the checkpoint's (the base of a LoRA checkpoint,
    lmforge.export.adapter); the checkpoint still gives the tokenizer, step and provenance."""
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype: {dtype!r} is not one of {', '.join(DTYPES)}")
    if model is None:
        model, step_dir = load_checkpoint(checkpoint)
    else:
        step_dir = resolve_checkpoint(checkpoint)
    tok_dir = usable_tokenizer_dir(checkpoint, Path(tokenizer) if tokenizer else tokenizer_dir_of(step_dir),
                                   bool(tokenizer))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for marker in (DONE, "lmforge_export.json"):
        (out / marker).unlink(missing_ok=True)
    arch = export_arch(model.cfg)
    save_hf(model, out, DTYPES[dtype] if dtype else None, arch=arch)
    ids = export_tokenizer(tok_dir, out, hf_max_length(model.cfg))
    config = json.loads((out / "config.json").read_text())
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        config[key] = ids[key]
    _write_json(out / "config.json", config)
    eos = [i for i in dict.fromkeys((ids["eos_token_id"], ids["im_end_id"])) if i is not None]
    _write_json(out / "generation_config.json", {
        "bos_token_id": ids["bos_token_id"], "eos_token_id": eos[0] if len(eos) == 1 else eos or None,
        "pad_token_id": ids["pad_token_id"], "do_sample": False})
    meta = json.loads((step_dir / "meta.json").read_text()) if (step_dir / "meta.json").is_file() else {}
    info = {"checkpoint": str(step_dir.resolve()), "step": meta.get("step"), "tokenizer": str(tok_dir.resolve()),
            "arch": config["architectures"][0], "dtype": config["dtype"],
            "n_params": sum(p.numel() for p in model.parameters())}
    _write_json(out / "lmforge_export.json", info)
    return info
