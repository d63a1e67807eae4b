"""Real, mostly unique text for the training benches: the Python standard library's own
source, tokenised with a byte-level BPE trained in the same run on the training files; the last
10% of the files (by sorted path) are held out as the validation split."""
from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from lmforge.shards import write_dataset


def stdlib_files(limit_bytes: int) -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files, total = [], 0
    for f in sorted(root.glob("*.py")) + sorted(root.glob("*/*.py")):
        if "test" in f.parts[-2:] or f.name.startswith("test_"):
            continue
        files.append(f)
        total += f.stat().st_size
        if total >= limit_bytes:
            break
    return files


def token_data(folder: Path, vocab: int, limit_bytes: int) -> Path:
    files = stdlib_files(limit_bytes)
    texts = [f.read_text(encoding="utf-8", errors="replace") for f in files]
    cut = int(len(texts) * 0.9)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts[:cut], trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>"],
                                                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                              show_progress=False))
    eos = tok.token_to_id("<|endoftext|>")
    enc = lambda ts: [e.ids + [eos] for e in tok.encode_batch(ts)]
    data = folder / "tokens"
    write_dataset(data, enc(texts[:cut]), vocab, eos_id=eos, split="train")
    write_dataset(data, enc(texts[cut:]), vocab, eos_id=eos, split="val")
    print(f"data: {len(files)} stdlib files, {sum(map(len, texts)) / 1e6:.1f} MB, "
          f"{cut} train / {len(texts) - cut} held out, BPE {vocab}", file=sys.stderr)
    return data
