"""Load a model from any checkpoint: one of ours, or a Hugging Face folder.

Two formats are checkpoints everywhere (init.from_checkpoint, eval, needle, grow, generate,
chat, export):

- ours: every training stage saves `trainer.json` with the run config, whose `model` key
  is the ModelConfig, and keeps a copy of the tokenizer folder as `RUN_DIR/tokenizer/`, so
  a step folder is self-contained. A run trained with LoRA also records its `lora` key;
  its model.safetensors holds the base weights and the adapters, merged here on load. The
  folder format itself (finding, validating, reading) is lmforge.checkpoint.
- a Hugging Face folder: config.json + model.safetensors (or a sharded
  model.safetensors.index.json), read by lmforge.model.convert (the architectures it
  knows); the tokenizer is the folder's own tokenizer.json. Pickle weights
  (pytorch_model.bin) are refused: loading them can run code.

`open_source(path)` answers once, for either format: the model config, the weights as a
plain state dict of our Transformer, where the tokenizer is, and whether there is an
optimizer state to continue with (only our own full-weight checkpoints have one).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from lmforge import checkpoint as ckpt
from lmforge.config import ConfigError, from_dict, to_dict
from lmforge.model.config import ModelConfig
from lmforge.model.lora import LoRAConfig, attach_lora, load_base_weights, lora_layers, merge_lora
from lmforge.model.transformer import Transformer

OURS, HF = "lmforge", "hf"

# the format's helpers, re-exported where model loading is what the caller thinks about
run_dir_of = ckpt.run_dir_of
copy_tokenizer = ckpt.copy_tokenizer

_PICKLES = ("*.bin", "*.pt", "*.pth", "*.ckpt")


def is_hf_folder(path: str | Path) -> bool:
    """A Hugging Face model folder: config.json and no marks of our checkpoint format."""
    p = Path(path)
    return (p / "config.json").is_file() and not (p / "meta.json").exists() and not (p / "trainer.json").exists()


def check_hf_weights(path: Path) -> None:
    """safetensors weights present, or a clear refusal (pickle only / nothing)."""
    if (path / "model.safetensors").is_file() or (path / "model.safetensors.index.json").is_file():
        return
    pickles = sorted(p.name for pat in _PICKLES for p in path.glob(pat))
    if pickles:
        raise ConfigError(f"{path}: only pickle weights ({', '.join(pickles[:3])}); lmforge loads safetensors only "
                         "(a pickle can run code): convert them once with transformers, "
                         "AutoModelForCausalLM.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)")
    raise FileNotFoundError(f"{path}: config.json but no model.safetensors (or model.safetensors.index.json)")


def resolve_checkpoint(path: str | Path) -> Path:
    """Our step-N folder as given, the newest complete one under a run folder, or a HF folder."""
    p = Path(path)
    try:
        return ckpt.resolve(p)
    except FileNotFoundError:
        if not is_hf_folder(p):
            why = ckpt.why_none(p)
            raise FileNotFoundError(f"{path}: no complete checkpoint found{f' ({why})' if why else ''} (a step-N "
                                    f"folder with meta.json, a run folder holding checkpoints/, or a Hugging Face "
                                    f"folder with config.json and safetensors weights)") from None
    check_hf_weights(p)
    return p


def hf_model_config(path: str | Path) -> ModelConfig:
    """Our ModelConfig for a HF folder's config.json, without reading the weights."""
    from lmforge.model.convert import model_config_of_hf

    return model_config_of_hf(path)   # ConfigError naming config.json and the key


def _run_config(step_dir: Path) -> dict:
    return ckpt.load_trainer_state(step_dir).get("config", {})   # a corrupt file: CorruptCheckpoint


def model_config_of(step_dir: str | Path) -> ModelConfig:
    """The model config of one of our step folders (trainer.json) or of a HF folder."""
    if is_hf_folder(step_dir):
        return hf_model_config(step_dir)
    model = _run_config(step_dir).get("model")
    if model is None:
        raise ValueError(f"{step_dir}/trainer.json: no model config recorded")
    model = {k: v for k, v in model.items() if k != "preset"}  # already expanded
    return from_dict(ModelConfig, model, source=f"{step_dir}/trainer.json", prefix="config.model")


def lora_of(step_dir: Path) -> LoRAConfig | None:
    """The adapters a step folder of ours holds (a run trained with `lora:`), else None."""
    lora = _run_config(step_dir).get("lora")
    return None if lora is None else from_dict(LoRAConfig, lora, source=f"{step_dir}/trainer.json",
                                               prefix="config.lora")


def tokenizer_dir_of(path: str | Path) -> Path | None:
    """The tokenizer of a checkpoint: RUN_DIR/tokenizer for ours, the folder itself for HF."""
    p = Path(path)
    if is_hf_folder(p):
        return p if (p / "tokenizer.json").is_file() else None
    return ckpt.tokenizer_dir_of(p)


@dataclass(frozen=True)
class ModelSource:
    """A checkpoint to start from or to load, in either format."""
    path: Path                       # our step-N folder, or the HF folder
    format: str                      # OURS or HF
    model_cfg: ModelConfig
    lora: LoRAConfig | None = None   # adapters stored beside the base weights (merged on load)

    @property
    def tokenizer_dir(self) -> Path | None:
        return tokenizer_dir_of(self.path)

    @property
    def has_optimizer(self) -> bool:
        """An optimizer state that fits a full-weight model of this config."""
        return self.format == OURS and self.lora is None and (
            (self.path / "optimizer.pt").is_file() or ckpt.is_sharded(self.path))

    def why_no_optimizer(self) -> str:
        if self.format == HF:
            return f"{self.path} is a Hugging Face folder: it has no optimizer state"
        if self.lora is not None:
            return f"{self.path} was trained with LoRA: its optimizer state is for the adapters only"
        return f"{self.path} has no optimizer state"

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Plain weights of our Transformer (HF names converted, adapters merged)."""
        if self.format == HF:
            from lmforge.model.convert import load_hf
            return load_hf(self.path).state_dict()
        if self.lora is not None:
            model = attach_lora(Transformer(self.model_cfg), self.lora)
            ckpt.load_weights(self.path, model)
            return merge_lora(model).state_dict()
        sd = ckpt.read_safetensors(self.path / "model.safetensors")
        if self.model_cfg.tie_embeddings:   # saved once under one of the two names
            w = sd.get("embed_tokens.weight", sd.get("lm_head.weight"))
            sd.update({"embed_tokens.weight": w, "lm_head.weight": w})
        return sd

    def load_into(self, model: torch.nn.Module) -> None:
        """These weights into `model` (same shapes); a model with (fresh) adapters keeps them."""
        if self.format == OURS and self.lora is None and not lora_layers(model):
            ckpt.load_weights(self.path, model)   # strict; safetensors restores tied weights
            return
        sd = self.state_dict()   # a damaged or unparseable file: CorruptCheckpoint / ConfigError as raised
        try:
            load_base_weights(model, sd)
        except (ValueError, RuntimeError) as e:
            raise ValueError(f"{self.path}: {e}") from None

    def build(self, device: str | torch.device = "cpu") -> Transformer:
        """A plain Transformer with these weights, in eval mode."""
        model = Transformer(self.model_cfg)
        self.load_into(model)
        return model.to(device).eval()


def open_source(path: str | Path) -> ModelSource:
    """The checkpoint at `path` (see module doc); FileNotFoundError / ValueError if unusable."""
    p = resolve_checkpoint(path)
    if is_hf_folder(p):
        return ModelSource(p, HF, hf_model_config(p))
    return ModelSource(p, OURS, model_config_of(p), lora_of(p))


def load_weights(path: str | Path, model: torch.nn.Module) -> None:
    """The weights of any checkpoint (ours, a LoRA run's merged, a HF folder's) into `model`."""
    open_source(path).load_into(model)


def config_diff(given: ModelConfig, saved: ModelConfig) -> list[str]:
    """`key given (checkpoint: saved)` for every field that differs (preset aside: expanded)."""
    a, b = to_dict(given), to_dict(saved)
    return [f"{k} {a[k]!r} (checkpoint: {b.get(k)!r})" for k in sorted(a) if k != "preset" and a[k] != b.get(k)]


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[Transformer, Path]:
    """(model in eval mode with the checkpoint's weights, the step or HF folder it came from)."""
    src = open_source(path)
    return src.build(device), src.path
