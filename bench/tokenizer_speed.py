"""Tokenizer throughput: `lmforge tokenizer encode` vs a plain `tokenizers` loop, same run.

Text: the Python standard library's .py files (code), /usr/share/doc copyright and
changelog files (English prose) and generated Chinese sentences, cut into documents;
whatever of it exists, up to --mb. Each row is the best of --repeat runs. Rows (all on the same documents, same tokenizer):
  - tokenizers loop:           `tok.encode(text)` per document, one process, in memory (baseline)
  - tokenizers encode_batch:   one call per 256 documents, one process, rayon threads, in memory
  - lmforge encode (N workers): end to end: read jsonl, encode in N processes, write shards
    (1 worker = in-process `encode_batch_fast`, which itself uses rayon threads)
The lmforge rows include reading and writing, which the baselines do not. Also: BPE
training time, reported per 10 MB of text (linear extrapolation from --train-mb).

    python bench/tokenizer_speed.py                 # ~8 MB, well under a minute on 2 cores
    python bench/tokenizer_speed.py --mb 50 --train-mb 20 --vocab 32000
"""
from __future__ import annotations

import os
import sys

# This file is named like the stdlib module `tokenize` (which `dataclasses` -> `inspect`
# -> `linecache` import): take the script's own folder off sys.path before anything else.
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

import argparse
import gzip
import json
import random
import tempfile
import time
from pathlib import Path

from lmforge.shards import TokenDataset
from lmforge.stages.encode import run as run_encode
from lmforge.tokenizer.encode import EncodeConfig
from lmforge.tokenizer.train import CHATML_TEMPLATE, save_tokenizer, train_bpe

SPECIALS = ["<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>"]
HAN = ("的一是不了人我在有他这中大来上个国到说们为子和你地出道也时年得就那要下以生会自着去之过家学"
       "对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面")


def _read(path: Path) -> str:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return data.decode("utf-8", "replace")


def corpus(mb: float, seed: int = 0) -> list[dict]:
    """Documents of about `mb` MB: a third code, a third English docs, a third Chinese."""
    budget = int(mb * 1e6 / 3)
    rng = random.Random(seed)
    docs: list[dict] = []

    def take(kind, files):
        used = 0
        for f in files:
            if used >= budget:
                break
            try:
                text = _read(f)
            except OSError:
                continue
            if text.strip():
                docs.append({"id": str(f), "text": text, "meta": {"domain": kind}})
                used += len(text.encode())
        return used

    import sysconfig
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    take("code", sorted(stdlib.rglob("*.py")))
    doc_dir = Path("/usr/share/doc")
    take("prose", sorted(p for p in doc_dir.rglob("*") if p.is_file() and (
        p.name in ("copyright", "changelog.gz", "changelog.Debian.gz", "NEWS.gz", "README")))
         if doc_dir.is_dir() else [])
    used, i = 0, 0
    while used < budget:  # generated Chinese (no offline Chinese corpus is assumed here)
        text = "。".join("".join(rng.choice(HAN) for _ in range(rng.randint(8, 30)))
                        for _ in range(rng.randint(20, 200))) + "。"
        docs.append({"id": f"zh-{i}", "text": text, "meta": {"domain": "zh"}})
        used += len(text.encode())
        i += 1
    rng.shuffle(docs)
    return docs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=8.0, help="MB of text to encode")
    ap.add_argument("--train-mb", type=float, default=4.0, help="MB of text to train the BPE on")
    ap.add_argument("--vocab", type=int, default=16000)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeat", type=int, default=2, help="best of this many runs per row (noisy machines)")
    args = ap.parse_args()

    docs = corpus(args.mb)
    nbytes = sum(len(d["text"].encode()) for d in docs)
    texts = [d["text"] for d in docs]
    tmp = Path(tempfile.mkdtemp(prefix="lmforge-bench-tok-"))
    with open(tmp / "docs.jsonl", "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
    print(f"{len(docs)} documents, {nbytes / 1e6:.2f} MB, {os.cpu_count()} CPU cores, tmp {tmp}")

    train_texts, tb = [], 0
    for t in texts:
        if tb >= args.train_mb * 1e6:
            break
        train_texts.append(t)
        tb += len(t.encode())
    t0 = time.perf_counter()
    tok = train_bpe(train_texts, args.vocab, SPECIALS)
    train_s = time.perf_counter() - t0
    save_tokenizer(tok, tmp / "tok", special_tokens=SPECIALS, bos_token=SPECIALS[0], eos_token=SPECIALS[0],
                   pad_token=SPECIALS[1], chat_template=CHATML_TEMPLATE)

    def best(fn):
        times, result = [], None
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - t0)
        return min(times), result

    rows = []
    s, n_loop = best(lambda: sum(len(tok.encode(t, add_special_tokens=False).ids) for t in texts))
    rows.append(("tokenizers loop (tok.encode, 1 process)", s))
    s, n_batch = best(lambda: sum(len(e.ids) for i in range(0, len(texts), 256)
                                  for e in tok.encode_batch(texts[i:i + 256], add_special_tokens=False)))
    rows.append(("tokenizers encode_batch (1 process, rayon)", s))
    assert n_batch == n_loop
    for w in sorted({1, args.workers}):
        out = tmp / f"tokens-{w}"
        cfg = EncodeConfig(inputs=[str(tmp / "docs.jsonl")], tokenizer=str(tmp / "tok"), out_dir=str(out),
                           workers=w, val_docs_per_domain=0, overwrite=True)
        s, stats = best(lambda: run_encode(cfg, progress=False))
        rows.append((f"lmforge encode ({w} worker{'s' if w > 1 else ''}, read+write)", s))
        # same tokens as the baseline, plus one eos per document
        assert TokenDataset(out).n_tokens == stats["train_tokens"] == n_loop + len(docs), stats

    base = rows[0][1]
    print(f"\nencode: {nbytes / 1e6:.2f} MB, {n_loop} tokens ({nbytes / n_loop:.2f} bytes/token), vocab {args.vocab}")
    w = max(len(r[0]) for r in rows)
    print(f"{'method'.ljust(w)}  {'seconds':>8}  {'MB/s':>7}  {'vs loop':>8}")
    for name, s in rows:
        print(f"{name.ljust(w)}  {s:8.2f}  {nbytes / 1e6 / s:7.2f}  {base / s:7.2f}x")
    print(f"\nBPE training: {tb / 1e6:.2f} MB in {train_s:.2f} s = {train_s * 10e6 / tb:.1f} s per 10 MB "
          f"(vocab {args.vocab}, linear extrapolation)")


if __name__ == "__main__":
    main()
