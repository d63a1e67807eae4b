"""Quality classifier (Skywork): reference-quality text vs a sample of the raw corpus.

Features: hashed word n-grams + hashed character n-grams (character n-grams carry CJK
text, which has no spaces), l2-normalised, from scikit-learn's HashingVectorizer (stateless:
only its parameters need saving). Model: logistic regression. Saved without pickle:
`weights.npz` (coef, intercept) + `model.json` (feature parameters, held-out accuracy).

The step trains on `quality.positive` (or loads `quality.model`), writes the held-out
accuracy to stats, scores every document into meta["quality"] (P(reference-like)) and,
in mode "filter", drops documents below the threshold as "quality_low".
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lmforge.io.atomic import atomic_open, write_json

from lmforge.io.documents import ErrorSink
from .pipeline import Step, iter_shard
from lmforge.io.readers import iter_documents


class QualityModel:
    def __init__(self, n_features: int = 1 << 18, char_ngrams=(2, 4), word_ngrams=(1, 2),
                 coef: np.ndarray | None = None, intercept: float = 0.0, info: dict | None = None):
        from sklearn.feature_extraction.text import HashingVectorizer

        self.n_features, self.char_ngrams, self.word_ngrams = n_features, tuple(char_ngrams), tuple(word_ngrams)
        common = dict(n_features=n_features, alternate_sign=False, norm="l2", lowercase=True)
        self._word = HashingVectorizer(analyzer="word", ngram_range=self.word_ngrams,
                                       token_pattern=r"(?u)\b\w+\b", **common)
        self._char = HashingVectorizer(analyzer="char_wb", ngram_range=self.char_ngrams, **common)
        self.coef, self.intercept, self.info = coef, float(intercept), dict(info or {})

    def features(self, texts: list[str]):
        from scipy.sparse import hstack

        return hstack([self._word.transform(texts), self._char.transform(texts)]).tocsr()

    def fit(self, pos: list[str], neg: list[str], heldout: float = 0.2, C: float = 1.0,
            seed: int = 0) -> dict:
        from sklearn.linear_model import LogisticRegression

        texts = pos + neg
        y = np.array([1] * len(pos) + [0] * len(neg))
        order = np.random.default_rng(seed).permutation(len(texts))
        n_test = max(1, int(len(texts) * heldout))
        test, train = order[:n_test], order[n_test:]
        X = self.features(texts)
        clf = LogisticRegression(C=C, solver="liblinear", max_iter=1000)
        clf.fit(X[train], y[train])
        self.coef, self.intercept = clf.coef_[0].astype(np.float32), float(clf.intercept_[0])
        acc = float(((self.score_features(X[test]) >= 0.5) == y[test]).mean())
        self.info = {"train_docs": int(len(train)), "heldout_docs": int(n_test),
                     "positives": len(pos), "negatives": len(neg), "heldout_accuracy": acc}
        return self.info

    def score_features(self, X) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(X @ self.coef + self.intercept)))

    def score(self, texts: list[str]) -> np.ndarray:
        return self.score_features(self.features(texts))

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_open(folder / "weights.npz", "wb") as f:
            np.savez(f, coef=self.coef, intercept=np.array([self.intercept]))
        write_json(folder / "model.json", {
            "kind": "hashed-ngram-logreg", "n_features": self.n_features,
            "char_ngrams": list(self.char_ngrams), "word_ngrams": list(self.word_ngrams), **self.info})

    @classmethod
    def load(cls, folder: str | Path) -> "QualityModel":
        folder = Path(folder)
        meta = json.loads((folder / "model.json").read_text())
        w = np.load(folder / "weights.npz", allow_pickle=False)
        info = {k: v for k, v in meta.items()
                if k not in ("kind", "n_features", "char_ngrams", "word_ngrams")}
        return cls(meta["n_features"], meta["char_ngrams"], meta["word_ngrams"],
                   w["coef"], float(w["intercept"][0]), info)


def reservoir(docs, k: int, seed: int) -> list[str]:
    """k texts sampled uniformly from a stream (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    out: list[str] = []
    for i, d in enumerate(docs):
        if len(out) < k:
            out.append(d["text"])
        else:
            j = int(rng.integers(0, i + 1))
            if j < k:
                out[j] = d["text"]
    return out


def _corpus(paths):
    for p in paths:
        yield from iter_shard(p)


class QualityStep(Step):
    def prepare(self, ctx) -> dict:
        cfg = self.cfg
        if cfg.model:
            model = QualityModel.load(cfg.model)
        else:
            sink = ErrorSink(ctx.work / "positive_rejects.jsonl")
            pos = reservoir(iter_documents(cfg.positive, sink), cfg.max_train_docs, cfg.seed)
            sink.close()
            if len(pos) < 2:
                raise ValueError(f"quality.positive: found {len(pos)} usable documents in "
                                 f"{cfg.positive}; need at least 2")
            n_neg = min(cfg.max_train_docs, max(1, int(len(pos) * cfg.negatives_per_positive)))
            neg = reservoir(_corpus(ctx.inputs), n_neg, cfg.seed + 1)
            model = QualityModel(cfg.n_features, cfg.char_ngrams, cfg.word_ngrams)
            model.fit(pos, neg, cfg.heldout_fraction, cfg.C, cfg.seed)
        model.save(ctx.work / "model")
        return {"quality_model": str(ctx.work / "model"), **model.info}

    def open_shard(self, ctx, index):
        model = QualityModel.load(ctx.work / "model")

        def apply(i, doc):
            q = float(model.score([doc["text"]])[0])
            doc["meta"]["quality"] = round(q, 5)
            if self.cfg.mode == "filter" and q < self.cfg.threshold:
                return None, "quality_low"
            return doc, None
        return apply
