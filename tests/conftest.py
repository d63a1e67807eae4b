import os

import numpy as np
import pytest
import torch

from lmforge.shards import write_dataset

# Two cores on CI: keep torch from oversubscribing them, and make runs repeatable.
torch.set_num_threads(min(2, os.cpu_count() or 1))


def make_token_dataset(folder, n_docs=60, vocab=128, seed=0, domains=("prose", "code"), min_len=3, max_len=90,
                       val_docs=6):
    """A small token dataset with learnable structure: each document counts up from a random
    start in steps of 1 or 2 (mod the vocab), so the next token follows from the last two."""
    rng = np.random.default_rng(seed)
    def doc():
        start, stride = int(rng.integers(0, vocab - 3)), int(rng.integers(1, 3))
        n = int(rng.integers(min_len, max_len))
        return [3 + (start + stride * k) % (vocab - 3) for k in range(n)] + [1]  # 1 = eos
    train = [(doc(), i % len(domains)) for i in range(n_docs)]
    val = [(doc(), i % len(domains)) for i in range(val_docs)]
    write_dataset(folder, train, vocab, list(domains), eos_id=1, split="train")
    write_dataset(folder, val, vocab, list(domains), eos_id=1, split="val")
    return folder


@pytest.fixture
def token_data(tmp_path):
    return make_token_dataset(tmp_path / "tokens")


def crash_after_checkpoint(build, cfg, steps: int, out) -> None:
    """Train `steps` steps of `build(cfg)`'s trainer, save a checkpoint, and stop there (a crash
    right after it); what the half run logged is dropped, as a resume would find it."""
    trainer = build(cfg, progress=False)
    for _ in range(steps):
        trainer.train_step()
        trainer.step += 1
    trainer.save_checkpoint()
    del trainer
    (out / "metrics.jsonl").write_text("")
