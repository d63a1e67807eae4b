"""`lmforge export CHECKPOINT OUT/`: a Hugging Face folder transformers loads offline.

    config.json              LlamaForCausalLM (or Phi3ForCausalLM for partial rotary), with
                             bos/eos/pad ids from the tokenizer (lmforge.model.convert.save_hf)
    model.safetensors        Norm-Head folded, padded vocab rows sliced off
    generation_config.json   eos = <|endoftext|> and <|im_end|>, so generate() stops at a turn end
    tokenizer.json, tokenizer_config.json (ChatML chat template), special_tokens_map.json
                             from the run's tokenizer folder
    lmforge_export.json      where it came from (checkpoint, step), written last
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from lmforge.model.convert import save_hf
from lmforge.model.load import load_checkpoint, tokenizer_dir_of
from lmforge.tokenizer.train import CHATML_TEMPLATE, load_tokenizer, tokenizer_info

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def export_tokenizer(tok_dir: Path, out: Path) -> dict:
    """Copy the tokenizer files; make sure the transformers side has the ChatML template."""
    shutil.copy2(tok_dir / "tokenizer.json", out / "tokenizer.json")
    info = tokenizer_info(tok_dir)
    tok = load_tokenizer(tok_dir)
    names = {k: tok.id_to_token(info[f"{k}_id"]) for k in ("bos", "eos", "pad") if info.get(f"{k}_id") is not None}
    cfg_path = tok_dir / "tokenizer_config.json"
    hf_cfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}
    hf_cfg.setdefault("tokenizer_class", "PreTrainedTokenizerFast")
    hf_cfg.setdefault("chat_template", CHATML_TEMPLATE)
    hf_cfg.setdefault("clean_up_tokenization_spaces", False)
    for k, v in names.items():
        hf_cfg.setdefault(f"{k}_token", v)
    _write_json(out / "tokenizer_config.json", hf_cfg)
    sp_path = tok_dir / "special_tokens_map.json"
    specials = (json.loads(sp_path.read_text(encoding="utf-8")) if sp_path.is_file()
                else {f"{k}_token": v for k, v in names.items()})
    _write_json(out / "special_tokens_map.json", specials)
    im_end = tok.token_to_id("<|im_end|>")
    return {"bos_token_id": info.get("bos_id"), "eos_token_id": info.get("eos_id"),
            "pad_token_id": info.get("pad_id"), "im_end_id": im_end}


def export(checkpoint: str | Path, out_dir: str | Path, dtype: str | None = None,
           tokenizer: str | Path | None = None) -> Path:
    """Write the HF folder for a checkpoint (step-N folder or run folder). Returns out_dir."""
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype: {dtype!r} is not one of {', '.join(DTYPES)}")
    model, step_dir = load_checkpoint(checkpoint)
    tok_dir = Path(tokenizer) if tokenizer else tokenizer_dir_of(step_dir)
    if tok_dir is None or not (tok_dir / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{checkpoint}: no tokenizer folder found beside the checkpoint "
                                f"(RUN_DIR/tokenizer/tokenizer.json); pass --tokenizer DIR")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "lmforge_export.json").unlink(missing_ok=True)
    save_hf(model, out, DTYPES[dtype] if dtype else None)
    ids = export_tokenizer(tok_dir, out)
    config = json.loads((out / "config.json").read_text())
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        config[key] = ids[key]
    _write_json(out / "config.json", config)
    eos = [i for i in dict.fromkeys((ids["eos_token_id"], ids["im_end_id"])) if i is not None]
    _write_json(out / "generation_config.json", {
        "bos_token_id": ids["bos_token_id"], "eos_token_id": eos[0] if len(eos) == 1 else eos or None,
        "pad_token_id": ids["pad_token_id"], "do_sample": False})
    meta = json.loads((step_dir / "meta.json").read_text()) if (step_dir / "meta.json").is_file() else {}
    _write_json(out / "lmforge_export.json", {"checkpoint": str(step_dir.resolve()), "step": meta.get("step"),
                                              "tokenizer": str(tok_dir.resolve())})
    return out
