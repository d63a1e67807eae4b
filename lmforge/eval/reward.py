"""A reward model from a Hugging Face folder scores SFT conversations (Index-1.9B filtered its
SFT set by reward-model scores).

The folder holds a sequence-classification model (`AutoModelForSequenceClassification`:
a score head over the last non-padding token, as reward models such as Skywork-Reward or
InternLM2-Reward are published) in safetensors, and its tokenizer. It is loaded with
`transformers` (an optional dependency: `pip install -e ".[dev]"`), never with pickle
(`use_safetensors=True`) and never with the folder's own code (`trust_remote_code=False`).

A conversation is rendered with the tokenizer's chat template when it has one, else as
ChatML, truncated from the left to `max_length` tokens (the reply at the end is what is
judged). The score is the head's logit `label` (0 for the usual one-logit head).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from lmforge.align.chat_template import render
from lmforge.config import ConfigError


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ConfigError("scoring.model: a reward model needs the `transformers` package, which is not "
                          "installed (pip install -e '.[dev]', or the transformers version pinned in "
                          "pyproject.toml)") from None
    return transformers


class RewardModel:
    def __init__(self, folder: str | Path, device: str = "cpu", max_length: int = 2048, batch_size: int = 8,
                 label: int | None = None):
        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise ConfigError(f"scoring.model: {folder} is not a Hugging Face model folder (no config.json)")
        if not any(folder.glob("*.safetensors")):
            raise ConfigError(f"scoring.model: {folder} has no *.safetensors weights (only safetensors are loaded)")
        tf = _transformers()
        self.tok = tf.AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
        self.model = tf.AutoModelForSequenceClassification.from_pretrained(
            folder, use_safetensors=True, trust_remote_code=False).to(device).eval()
        n = self.model.config.num_labels
        if label is None and n != 1:
            raise ConfigError(f"scoring.label: {folder} has {n} output labels; say which logit is the reward")
        self.label = 0 if label is None else label
        if not -n <= self.label < n:
            raise ConfigError(f"scoring.label: {self.label} is not one of the model's {n} labels")
        if self.tok.pad_token is None:   # batching needs a pad token; the model pools its last other token
            self.tok.pad_token = self.tok.eos_token or self.tok.unk_token
        if self.model.config.pad_token_id is None and self.tok.pad_token_id is not None:
            self.model.config.pad_token_id = self.tok.pad_token_id
        self.tok.padding_side, self.tok.truncation_side = "right", "left"
        self.device, self.max_length = device, max_length
        self.batch_size = batch_size if self.model.config.pad_token_id is not None else 1

    def text(self, messages: list[dict]) -> str:
        if getattr(self.tok, "chat_template", None):
            return self.tok.apply_chat_template(messages, tokenize=False)
        return render(messages)

    def __call__(self, conversations: Sequence[list[dict]]) -> list[float]:
        import torch

        texts = [self.text(m) for m in conversations]
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = [0.0] * len(texts)
        with torch.inference_mode():
            for s in range(0, len(order), self.batch_size):
                idx = order[s:s + self.batch_size]
                enc = self.tok([texts[i] for i in idx], return_tensors="pt", padding=True, truncation=True,
                               max_length=self.max_length, add_special_tokens=True).to(self.device)
                logits = self.model(**enc).logits.float()[:, self.label].cpu().tolist()
                for i, v in zip(idx, logits):
                    out[i] = float(v)
        return out
