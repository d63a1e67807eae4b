"""Shared helpers for the alignment tests: a tiny tokenizer, a tiny 'pretrained' checkpoint,
synthetic conversations and preference pairs (plus a sanity test of the helpers)."""
import json
import random
from pathlib import Path

import torch

from lmforge.config import to_dict
from lmforge.model import ModelConfig, Transformer
from lmforge.model.load import copy_tokenizer
from lmforge.tokenizer.train import CHATML_TEMPLATE, save_tokenizer, train_bpe
from lmforge.train.checkpoint import save as save_checkpoint
from lmforge.train.optim import OptimConfig, build_optimizer

SPECIALS = ["<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>"]
COLORS = ["red", "blue", "green", "yellow", "black", "white", "orange", "purple"]
THINGS = ["sky", "grass", "sun", "snow", "coal", "cherry", "plum", "lemon", "sea", "leaf", "night", "milk"]


def color_of(thing: str) -> str:
    return COLORS[sum(map(ord, thing)) % len(COLORS)]


def conversation(rng: random.Random, turns: int = 1, system: bool = False) -> dict:
    msgs = [{"role": "system", "content": "You answer questions about colors."}] if system else []
    for _ in range(turns):
        t = rng.choice(THINGS)
        msgs += [{"role": "user", "content": f"What color is the {t}?"},
                 {"role": "assistant", "content": f"The {t} is {color_of(t)}."}]
    return {"messages": msgs}


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def make_tokenizer(folder: Path, vocab: int = 400) -> Path:
    rng = random.Random(0)
    texts = [json.dumps(conversation(rng, rng.randint(1, 3), rng.random() < 0.3)) for _ in range(200)]
    texts += ["The quick brown fox jumps over the lazy dog. 12345 日本語 text."] * 5
    tok = train_bpe(texts, vocab, SPECIALS)
    save_tokenizer(tok, folder, special_tokens=SPECIALS, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                   pad_token="<|pad|>", chat_template=CHATML_TEMPLATE, pad_multiple=64)
    return folder


def tiny_model_cfg(vocab: int, seq: int = 128) -> ModelConfig:
    return ModelConfig(vocab_size=vocab, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=seq)


def make_source(tmp_path: Path, seed: int = 0) -> tuple[Path, Path]:
    """(run folder with checkpoints/step-1 + tokenizer/, tokenizer folder)."""
    tok_dir = make_tokenizer(tmp_path / "tok")
    vocab = json.loads((tok_dir / "lmforge_tokenizer.json").read_text())["vocab_size"]
    cfg = tiny_model_cfg(vocab)
    torch.manual_seed(seed)
    model = Transformer(cfg)
    opt = build_optimizer(model, OptimConfig(lr=1e-3))
    model(torch.randint(0, vocab, (1, 8))).float().logsumexp(-1).mean().backward()
    opt.step()  # so the source has optimizer state to load
    opt.zero_grad()
    run = tmp_path / "pretrained"
    save_checkpoint(run / "checkpoints", 1, model, opt, {"config": {"model": to_dict(cfg)}})
    copy_tokenizer(tok_dir, run)
    return run, tok_dir


def make_sft_file(path: Path, n: int = 40, seed: int = 0, max_turns: int = 3) -> Path:
    rng = random.Random(seed)
    return write_jsonl(path, [conversation(rng, rng.randint(1, max_turns), rng.random() < 0.3) for _ in range(n)])


def losses(out: Path, key: str = "loss") -> list[float]:
    recs = [json.loads(l) for l in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return [r[key] for r in recs if key in r and "step" in r and "lr" in r]


def test_helpers_make_a_loadable_source(tmp_path):
    from lmforge.model.load import load_checkpoint, tokenizer_dir_of

    run, tok_dir = make_source(tmp_path)
    model, step_dir = load_checkpoint(run)
    assert tokenizer_dir_of(step_dir) is not None
    assert model.cfg.vocab_size <= 400
