"""Shared builders for the eval/export/generate tests: a real tokenizer, a token dataset
encoded with it, and a tiny pretrain run (checkpoint + tokenizer folder + metrics)."""
import json
from pathlib import Path

import torch

from lmforge import config
from lmforge.shards import ShardWriter, write_meta
from lmforge.tokenizer.train import save_tokenizer, train_bpe, vocab_len

SPECIALS = ["<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>"]
TEXTS = [
    "The quick brown fox jumps over the lazy dog. " * 3,
    "def add(a, b):\n    return a + b\n",
    "Numbers like 12345 and 678 are split into digits.",
    "床前明月光，疑是地上霜。举头望明月，低头思故乡。",
    "A journey of a thousand miles begins with a single step.",
    "import os\nprint(os.getcwd())\n",
] * 4


def make_tokenizer(folder) -> Path:
    folder = Path(folder)
    tok = train_bpe(TEXTS, vocab_size=320, special_tokens=SPECIALS, min_frequency=1)
    save_tokenizer(tok, folder, special_tokens=SPECIALS, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                   pad_token="<|pad|>", chat_template=None)
    return folder


def make_text_dataset(folder, tok_dir, docs: dict[str, list[str]], val: dict[str, list[str]] | None = None) -> Path:
    """Token dataset from texts by domain (train split, optional val split), eos appended."""
    from lmforge.tokenizer.train import load_tokenizer
    folder, tok = Path(folder), load_tokenizer(tok_dir)
    vocab, eos = vocab_len(tok), tok.token_to_id("<|endoftext|>")
    domains = sorted(set(docs) | set(val or {}))
    entries = []
    for split, texts in (("train", docs), ("val", val or {})):
        if not texts:
            continue
        w = ShardWriter(folder, f"{split}-00000", vocab, split)
        for dom, items in texts.items():
            for t in items:
                w.add(tok.encode(t).ids + [eos], domains.index(dom))
        entries.append(w.close())
    write_meta(folder, entries, vocab, domains, eos, extra={"tokenizer": str(Path(tok_dir) / "tokenizer.json")})
    return folder


TINY = ["model.d_model=32", "model.n_layers=2", "model.n_heads=4", "model.n_kv_heads=2",
        "model.max_seq_len=64", "train.seq_len=32", "train.micro_batch_size=2", "train.grad_accum=1",
        "train.optim.lr=3e-3", "train.eval_batches=1", "train.eval_every=2"]


def tiny_run(tmp_path, steps=4, extra=()) -> Path:
    """A finished pretrain run folder (checkpoints/, tokenizer/, metrics.jsonl, mixture.json)."""
    from lmforge.stages.pretrain import PretrainConfig, run
    tmp_path = Path(tmp_path)
    tok_dir = make_tokenizer(tmp_path / "tok")
    data = make_text_dataset(tmp_path / "tokens", tok_dir, {"prose": TEXTS[0::2], "code": TEXTS[1::2]},
                             val={"prose": TEXTS[0:2], "code": TEXTS[1:3]})
    vocab = json.loads((data / "meta.json").read_text())["vocab_size"]
    out = tmp_path / "pretrain"
    cfg = config.load(PretrainConfig, None, [f"data={data}", f"out_dir={out}", f"model.vocab_size={vocab}",
                                             f"train.steps={steps}", *TINY, *extra])
    torch.manual_seed(0)
    run(cfg, progress=False)
    return out


def test_tiny_run_is_complete(tmp_path):
    out = tiny_run(tmp_path, steps=2)
    assert (out / "tokenizer" / "tokenizer.json").is_file()
    assert list((out / "checkpoints").glob("step-*/meta.json"))
    assert (out / "metrics.jsonl").read_text().strip()
