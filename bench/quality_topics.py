"""Quality and topics throughput on the corpus built from the committed sample (one core).

    .venv/bin/python bench/quality_topics.py [--max-chars 10000]

Rows, each over the same documents (Python docs, stdlib code, Chinese poetry), with the
ratio to the same-run baseline (reading the documents back from jsonl.zst):

    read                  baseline: decode the shard
    dense features        textinfo.dense_features (the quality model's dense block)
    quality scoring       hashed n-grams + dense block + a trained group model
    topic assign, tfidf   TF-IDF rows + nearest of 20 centres
    topic assign, embed   all-MiniLM-L6-v2 embedding + nearest centre (if lmforge[embed])
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from lmforge.config import load
from lmforge.corpus import build_corpus
from lmforge.data.config import QualityConfig, TopicsConfig
from lmforge.data.pipeline import iter_shard
from lmforge.data.quality_train import GroupTrainer
from lmforge.data.textinfo import dense_features
from lmforge.data.topic_model import fit_topic_model


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-chars", type=int, default=10_000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    build_corpus(tmp, sources=["pydocs", "poetry", "stdlib"], from_sample=True, log=lambda m: None)
    shards = sorted((tmp / "docs").glob("*.jsonl.zst"))
    docs = [d for p in shards for d in iter_shard(p)]
    texts = [d["text"][:args.max_chars] for d in docs]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    rows = [("read", timed(lambda: [d for p in shards for d in iter_shard(p)]))]
    rows.append(("dense features", timed(lambda: [dense_features(t) for t in texts])))
    cfg = load(QualityConfig, data={"positive": ["x"]})
    trainer = GroupTrainer(cfg, "bench")
    corpus = [(d["id"], t) for d, t in zip(docs, texts)][:300]
    trainer.train([(corpus, [], [])], tmp / "model")
    from lmforge.data.quality_model import QualityModel

    model = QualityModel.load(tmp / "model" / "fold-0")
    rows.append(("quality scoring", timed(lambda: model.score(texts))))
    tcfg = TopicsConfig(clusters=20)
    tm = fit_topic_model(texts[:1000], tcfg)
    rows.append(("topic assign, tfidf", timed(lambda: tm.assign(texts))))
    from lmforge.data import embed

    if embed.available():
        em = fit_topic_model(texts[:200], TopicsConfig(clusters=20, backend="embedding"))
        rows.append(("topic assign, embed", timed(lambda: em.assign(texts))))
    base = rows[0][1]
    print(f"{len(texts)} documents, {mb:.2f} MB (first {args.max_chars} characters of each)\n")
    print(f"| {'what':<22} | {'seconds':>8} | {'docs/s':>8} | {'MB/s':>7} | {'x read':>7} |")
    print(f"|{'-' * 24}|{'-' * 10}|{'-' * 10}|{'-' * 9}|{'-' * 9}|")
    for name, s in rows:
        print(f"| {name:<22} | {s:8.2f} | {len(texts) / s:8.0f} | {mb / s:7.2f} | {s / base:7.1f} |")


if __name__ == "__main__":
    main()
