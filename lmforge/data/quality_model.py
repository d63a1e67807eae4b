"""One quality classifier: hashed n-grams + dense information features, logistic regression.

Features: hashed word 1-2-grams and character 2-4-grams (character n-grams carry CJK
text, which has no spaces), each block l2-normalised, from scikit-learn's stateless
HashingVectorizer; plus the dense block of textinfo.dense_features (distinct-unit
ratio, entropy, duplicate/boilerplate/short lines, ad-term density, symbols, mojibake,
length), which lets the model judge damage it has not seen word for word. Saved
without pickle: `weights.npz` (coef, intercept) + `model.json` (feature parameters,
training figures).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lmforge.io.atomic import atomic_open, write_json

from .textinfo import DENSE, dense_features

DENSE_SCALE = 0.5  # a standardised dense feature counts about as much as a strong n-gram
PARAMS = ("kind", "n_features", "char_ngrams", "word_ngrams", "dense", "dense_keys")


class QualityModel:
    def __init__(self, n_features: int = 1 << 18, char_ngrams=(2, 4), word_ngrams=(1, 2),
                 coef: np.ndarray | None = None, intercept: float = 0.0, info: dict | None = None,
                 dense: bool = True, dense_keys=DENSE):
        from sklearn.feature_extraction.text import HashingVectorizer

        self.n_features, self.char_ngrams, self.word_ngrams = n_features, tuple(char_ngrams), tuple(word_ngrams)
        self.dense, self.dense_keys = dense, tuple(dense_keys)
        common = dict(n_features=n_features, alternate_sign=False, norm="l2", lowercase=True)
        self._word = HashingVectorizer(analyzer="word", ngram_range=self.word_ngrams,
                                       token_pattern=r"(?u)\b\w+\b", **common)
        self._char = HashingVectorizer(analyzer="char_wb", ngram_range=self.char_ngrams, **common)
        self.coef, self.intercept, self.info = coef, float(intercept), dict(info or {})
        self.dense_mean = self.dense_std = None  # standardisation of the dense block (fit)

    def dense_block(self, texts: list[str]) -> np.ndarray:
        return np.array([dense_features(t, self.dense_keys) for t in texts], dtype=np.float64).reshape(len(texts), -1)

    def raw(self, texts: list[str]):
        """(hashed n-gram matrix, raw dense block or None): what fit_raw / score_raw take,
        so a trainer can compute features once and fit several models on row subsets."""
        from scipy.sparse import hstack

        S = hstack([self._word.transform(texts), self._char.transform(texts)]).tocsr()
        return S, (self.dense_block(texts) if self.dense else None)

    def _matrix(self, S, D):
        from scipy.sparse import csr_matrix, hstack

        if D is None:
            return S
        if self.dense_mean is not None:  # z-scores: the model weighs them like the n-grams
            D = (D - self.dense_mean) / self.dense_std * DENSE_SCALE
        return hstack([S, csr_matrix(D)]).tocsr()

    def features(self, texts: list[str]):
        return self._matrix(*self.raw(texts))

    def fit_raw(self, S, D, y: np.ndarray, C: float = 1.0, seed: int = 0, balanced: bool = False):
        from sklearn.linear_model import LogisticRegression

        if D is not None:
            self.dense_mean, self.dense_std = D.mean(0), D.std(0) + 1e-3
        clf = LogisticRegression(C=C, solver="liblinear", max_iter=1000, random_state=seed,
                                 class_weight="balanced" if balanced else None)
        clf.fit(self._matrix(S, D), y)
        self.coef, self.intercept = clf.coef_[0].astype(np.float32), float(clf.intercept_[0])
        return self

    def fit(self, pos: list[str], neg: list[str], heldout: float = 0.0, C: float = 1.0,
            seed: int = 0, balanced: bool = False) -> dict:
        """Train on pos (label 1) and neg (label 0); with heldout > 0, hold out that share
        at random and report its accuracy. Returns the training figures (also in .info)."""
        S, D = self.raw(pos + neg)
        y = np.array([1] * len(pos) + [0] * len(neg))
        order = np.random.default_rng(seed).permutation(len(y))
        n_test = int(len(y) * heldout) if heldout > 0 else 0
        test, train = order[:n_test], order[n_test:]
        self.fit_raw(S[train], None if D is None else D[train], y[train], C, seed, balanced)
        self.info = {"positives": len(pos), "negatives": len(neg), "train_docs": int(len(train))}
        if n_test:
            p = self.score_raw(S[test], None if D is None else D[test])
            self.info["heldout_docs"] = n_test
            self.info["heldout_accuracy"] = float(((p >= 0.5) == y[test]).mean())
        return self.info

    def score_raw(self, S, D) -> np.ndarray:
        return self.score_features(self._matrix(S, D))

    def score_features(self, X) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(X @ self.coef + self.intercept)))

    def score(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0)
        return self.score_raw(*self.raw(texts))

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        extra = {"dense_mean": self.dense_mean, "dense_std": self.dense_std} if self.dense_mean is not None else {}
        with atomic_open(folder / "weights.npz", "wb") as f:
            np.savez(f, coef=self.coef, intercept=np.array([self.intercept]), **extra)
        write_json(folder / "model.json", {
            "kind": "hashed-ngram-logreg", "n_features": self.n_features,
            "char_ngrams": list(self.char_ngrams), "word_ngrams": list(self.word_ngrams),
            "dense": self.dense, "dense_keys": list(self.dense_keys), **self.info})

    @classmethod
    def load(cls, folder: str | Path) -> "QualityModel":
        folder = Path(folder)
        meta = json.loads((folder / "model.json").read_text())
        w = np.load(folder / "weights.npz", allow_pickle=False)
        info = {k: v for k, v in meta.items() if k not in PARAMS}
        m = cls(meta["n_features"], meta["char_ngrams"], meta["word_ngrams"], w["coef"],
                float(w["intercept"][0]), info, dense=meta.get("dense", False),
                dense_keys=meta.get("dense_keys", DENSE))  # saved before the keys were: DENSE
        if "dense_mean" in w:
            m.dense_mean, m.dense_std = w["dense_mean"], w["dense_std"]
        return m
