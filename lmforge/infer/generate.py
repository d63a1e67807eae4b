"""Text generation with a KV cache: greedy or sampled, batched, streamed, with stop strings.

Two levels:
- `generate_ids(model, prompt_ids, ...)`: token ids in, generated ids out. A batch of
  prompts of different lengths is left-padded; padding slots are masked out of attention
  and every row gets its own position ids (0 at its first real token), so a row
  generates what it would generate alone. Finished rows are dropped from the batch.
- `generate(model, tokenizer, prompts, ...)`: strings in, strings out; adds stop strings
  and streaming of decoded text pieces.

Prompts longer than the window (model.cfg.max_seq_len - max_new_tokens, unless
`max_prompt_len` is given) are middle-truncated (lmforge.truncate.truncate_middle).
Greedy output (temperature 0) equals transformers' greedy `generate` on the exported
folder (tests/test_export.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from lmforge.truncate import truncate_middle
from lmforge.model.attention import KVCache

# Tokens that end a sequence when the tokenizer has them (document end, ChatML turn end).
DEFAULT_STOP_TOKENS = ("<|endoftext|>", "<|im_end|>")


def sample_next(logits: torch.Tensor, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Next token per row from logits [B, V]: argmax at temperature 0, else a sample from
    softmax(logits / T) restricted to the top_k tokens and the top_p probability mass."""
    logits = logits.float()
    if temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # drop a token when the mass before it already reaches top_p (the first always stays)
        drop = probs.cumsum(dim=-1) - probs >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def check_sampling_args(max_new_tokens, temperature, top_k, top_p):
    """ValueError for options no sampler takes (the CLI checks them before loading a model)."""
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if not temperature >= 0 or temperature == float("inf"):   # nan fails >= (it would reach softmax)
        raise ValueError(f"temperature must be a number >= 0, got {temperature}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 = off), got {top_k}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def _left_pad(prompts: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    P = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), P), pad_id, dtype=torch.long)
    valid = torch.zeros(len(prompts), P, dtype=torch.bool)
    for i, p in enumerate(prompts):
        ids[i, P - len(p):] = torch.as_tensor(p, dtype=torch.long)
        valid[i, P - len(p):] = True
    return ids.to(device), valid.to(device)


@torch.inference_mode()
def generate_ids(model, prompt_ids: list[list[int]], max_new_tokens: int = 64, temperature: float = 0.0,
                 top_k: int = 0, top_p: float = 1.0, stop_ids: list[int] | None = None, seed: int | None = None,
                 on_token: Callable[[int, int], None] | None = None,
                 should_stop: Callable[[int, list[int]], bool] | None = None,
                 max_prompt_len: int | None = None, pad_id: int = 0) -> list[list[int]]:
    """Generated ids for each prompt (the prompt itself and the stop token not included).

    stop_ids: tokens that end a sequence (e.g. eos, <|im_end|>). on_token(i, id) is called
    for each kept token of prompt i as it is produced; should_stop(i, ids_so_far) -> True
    ends prompt i after that token (used for stop strings). seed makes sampling repeatable.
    """
    check_sampling_args(max_new_tokens, temperature, top_k, top_p)
    if not prompt_ids or any(len(p) == 0 for p in prompt_ids):
        raise ValueError("generate: every prompt needs at least one token")
    window = model.cfg.max_seq_len
    budget = max_prompt_len if max_prompt_len is not None else max(1, window - max_new_tokens)
    prompts = [truncate_middle(list(map(int, p)), budget) for p in prompt_ids]
    out: list[list[int]] = [[] for _ in prompts]
    if max_new_tokens == 0:
        return out
    device = next(model.parameters()).device
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    stop = set(stop_ids or [])
    was_training = model.training
    model.eval()
    try:
        ids, valid = _left_pad(prompts, pad_id, device)
        cache = KVCache.for_model(model, len(prompts), ids.shape[1] + max_new_tokens)
        positions = (valid.long().cumsum(1) - 1).clamp(min=0)
        logits = model.forward_cached(ids, cache, positions, valid, last_only=True)[:, -1]
        next_pos = valid.sum(1)                     # each row's next position id
        rows = list(range(len(prompts)))            # batch row -> prompt index
        for step in range(max_new_tokens):
            tokens = sample_next(logits, temperature, top_k, top_p, generator)
            keep = []
            for r, t in enumerate(tokens.tolist()):
                i = rows[r]
                if t in stop:
                    continue
                out[i].append(t)
                if on_token is not None:
                    on_token(i, t)
                if should_stop is not None and should_stop(i, out[i]):
                    continue
                keep.append(r)
            if not keep or step == max_new_tokens - 1:
                break
            if len(keep) < len(rows):               # drop finished rows from the batch
                index = torch.as_tensor(keep, device=device)
                cache.reorder(index)
                tokens, next_pos = tokens[index], next_pos[index]
                rows = [rows[r] for r in keep]
            logits = model.forward_cached(tokens[:, None], cache, next_pos[:, None], last_only=True)[:, -1]
            next_pos = next_pos + 1
    finally:
        model.train(was_training)
    return out


# ------------------------------------------------------------------ text level


def as_tokenizer(tokenizer):
    """A `tokenizers.Tokenizer`, a transformers fast tokenizer, or a path to a tokenizer folder."""
    if isinstance(tokenizer, (str, Path)):
        from lmforge.tokenizer.train import load_tokenizer
        return load_tokenizer(tokenizer)
    return getattr(tokenizer, "backend_tokenizer", tokenizer)


def default_stop_ids(tok) -> list[int]:
    return [i for i in (tok.token_to_id(s) for s in DEFAULT_STOP_TOKENS) if i is not None]


class _TextStream:
    """Incremental decoding of one sequence: emits text pieces, finds stop strings.

    Text is held back while it ends in an incomplete UTF-8 character (byte-level BPE
    splits characters across tokens) or in what could be the start of a stop string, so
    a streamed stop string is never shown.
    """

    def __init__(self, tok, stop: list[str], emit: Callable[[str], None] | None):
        self.tok, self.stop, self.emit = tok, [s for s in stop if s], emit
        self.text, self.shown, self.stopped = "", 0, False

    def update(self, ids: list[int]) -> bool:
        """New ids of the sequence -> True when a stop string was reached."""
        text = self.tok.decode(ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return False
        self.text = text
        hits = [i for i in (text.find(s, max(0, self.shown - len(s))) for s in self.stop) if i >= 0]
        if hits:
            self.text, self.stopped = text[:min(hits)], True
            self._show(len(self.text))
            return True
        self._show(len(text) - self._held(text))
        return False

    def _held(self, text: str) -> int:
        """Length of the longest suffix of text that is a proper prefix of a stop string."""
        best = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(text)), best, -1):
                if text.endswith(s[:n]):
                    best = n
                    break
        return best

    def _show(self, upto: int) -> None:
        if upto > self.shown:
            if self.emit is not None:
                self.emit(self.text[self.shown:upto])
            self.shown = upto

    def finish(self, ids: list[int]) -> str:
        """The whole text. A sequence cut off (max_new_tokens) inside a character ends in the
        replacement character of its first bytes: that half character is dropped, not shown."""
        if not self.stopped:
            self.text = self.tok.decode(ids, skip_special_tokens=True).rstrip("\ufffd")
            self._show(len(self.text))
        return self.text


def generate(model, tokenizer, prompts: list[str] | list[list[int]], max_new_tokens: int = 64,
             temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, stop: list[str] | None = None,
             seed: int | None = None, on_token: Callable[[int, str], None] | None = None,
             stop_ids: list[int] | None = None, max_prompt_len: int | None = None) -> list[str]:
    """Generated text for each prompt (strings, or already tokenized id lists).

    Stops at a stop token (default: <|endoftext|> and <|im_end|> when the tokenizer has
    them; `stop_ids` overrides) or at any string in `stop` (the returned text ends just
    before it). Special tokens such as <|im_start|> inside a string prompt are encoded
    as their ids, so a ChatML-formatted prompt works as is. on_token(i, piece) streams
    the decoded text of prompt i piece by piece; the pieces of i concatenate to its result.
    """
    tok = as_tokenizer(tokenizer)
    ids = [tok.encode(p, add_special_tokens=False).ids if isinstance(p, str) else list(p) for p in prompts]
    streams = [_TextStream(tok, list(stop or []), (lambda piece, i=i: on_token(i, piece)) if on_token else None)
               for i in range(len(ids))]
    needs_text = bool(stop) or on_token is not None
    out = generate_ids(
        model, ids, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
        stop_ids=default_stop_ids(tok) if stop_ids is None else stop_ids, seed=seed,
        should_stop=(lambda i, new: streams[i].update(new)) if needs_text else None,
        max_prompt_len=max_prompt_len, pad_id=_pad_id(tok))
    return [streams[i].finish(new) for i, new in enumerate(out)]


def _pad_id(tok) -> int:
    for s in ("<|pad|>", "<|endoftext|>"):
        i = tok.token_to_id(s)
        if i is not None:
            return i
    return 0


def load_for_generation(path: str | Path, device: str = "cpu"):
    """(model, tokenizer) from a checkpoint / run folder, or a Hugging Face (e.g. exported) folder."""
    from lmforge.model.load import load_checkpoint, tokenizer_dir_of
    from lmforge.tokenizer.train import load_tokenizer
    model, step_dir = load_checkpoint(path, device)
    tok_dir = tokenizer_dir_of(step_dir)
    if tok_dir is None:
        raise FileNotFoundError(f"{path}: no tokenizer.json beside the checkpoint (RUN_DIR/tokenizer/ for a run, "
                                f"the folder itself for a Hugging Face folder)")
    return model, load_tokenizer(tok_dir)
