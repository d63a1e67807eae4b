"""The fitted topic model: TF-IDF terms + k-means centres over TF-IDF or embeddings.

Saved without pickle (model/terms.json, model/arrays.npz, model/meta.json) so every
worker process can load it and assign its own shards. The TF-IDF transform is computed
here from the saved vocabulary and idf (sublinear tf, l2 norm), which equals scikit-
learn's TfidfVectorizer(sublinear_tf=True) on the same vocabulary (tested).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lmforge.io.atomic import atomic_open, write_json
from scipy.sparse import csr_matrix

from .text import units


def _tokens(text: str) -> list[str]:
    return units(text, lowercase=True)


def fit_tfidf(texts: list[str], max_features: int):
    from sklearn.feature_extraction.text import TfidfVectorizer

    def vectorizer(min_df, max_df):
        return TfidfVectorizer(tokenizer=_tokens, token_pattern=None, lowercase=False,
                               max_features=max_features, sublinear_tf=True, min_df=min_df,
                               max_df=max_df)
    try:  # ignore very rare and very common terms ...
        vec = vectorizer(2, 0.7)
        X = vec.fit_transform(texts)
    except ValueError:  # ... unless that leaves nothing (tiny or uniform corpora)
        vec = vectorizer(1, 1.0)
        X = vec.fit_transform(texts)
    return vec, X


class TopicModel:
    def __init__(self, backend: str, terms: list[str], idf: np.ndarray, centers: np.ndarray,
                 top_terms: list[list[str]], embed_chars: int = 2000):
        self.backend, self.terms, self.idf, self.centers = backend, terms, idf, centers
        self.top_terms, self.embed_chars = top_terms, embed_chars
        self.index = {t: i for i, t in enumerate(terms)}

    @property
    def k(self) -> int:
        return len(self.centers)

    def tfidf(self, texts: list[str]) -> csr_matrix:
        rows, cols, vals = [], [], []
        for r, t in enumerate(texts):
            counts: dict[int, int] = {}
            for tok in _tokens(t):
                j = self.index.get(tok)
                if j is not None:
                    counts[j] = counts.get(j, 0) + 1
            if not counts:
                continue
            js = np.fromiter(counts, dtype=np.int64)
            v = (1.0 + np.log(np.fromiter(counts.values(), dtype=np.float64))) * self.idf[js]
            v /= np.linalg.norm(v)
            rows += [r] * len(js)
            cols += js.tolist()
            vals += v.tolist()
        return csr_matrix((vals, (rows, cols)), shape=(len(texts), len(self.terms)))

    def vectors(self, texts: list[str]):
        if self.backend == "embedding":
            from .embed import embed

            return embed(texts, max_chars=self.embed_chars)
        return self.tfidf(texts)

    def assign(self, texts: list[str], batch: int = 1024) -> np.ndarray:
        """The nearest centre (Euclidean, as k-means) of each text."""
        out = np.zeros(len(texts), np.int64)
        c2 = (self.centers ** 2).sum(1)
        for s in range(0, len(texts), batch):
            X = self.vectors(texts[s:s + batch])
            d = c2[None, :] - 2 * np.asarray(X @ self.centers.T)  # + |x|^2, the same for all
            out[s:s + batch] = d.argmin(1)
        return out

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_open(folder / "arrays.npz", "wb") as f:
            np.savez(f, idf=self.idf, centers=self.centers)
        write_json(folder / "terms.json", self.terms, indent=None)
        write_json(folder / "meta.json", {"backend": self.backend, "top_terms": self.top_terms,
                                          "embed_chars": self.embed_chars}, indent=None)

    @classmethod
    def load(cls, folder: Path) -> "TopicModel":
        a = np.load(folder / "arrays.npz", allow_pickle=False)
        meta = json.loads((folder / "meta.json").read_text())
        terms = json.loads((folder / "terms.json").read_text())
        return cls(meta["backend"], terms, a["idf"], a["centers"], meta["top_terms"], meta["embed_chars"])


def fit_topic_model(texts: list[str], cfg) -> TopicModel:
    from sklearn.cluster import KMeans

    vec, X = fit_tfidf(texts, cfg.max_features)
    terms = vec.get_feature_names_out().tolist()
    k = min(cfg.clusters, len(texts))
    if cfg.backend == "embedding":
        from .embed import embed

        V = embed(texts, max_chars=cfg.embed_chars)
    else:
        V = X
    km = KMeans(n_clusters=k, n_init=3, random_state=cfg.seed).fit(V)
    centers = np.asarray(km.cluster_centers_, dtype=np.float64)
    labels = km.labels_
    top = []
    for c in range(k):  # a cluster's terms: its members' mean TF-IDF (= its centre on tfidf)
        members = np.flatnonzero(labels == c)
        mean = np.asarray(X[members].mean(0)).ravel() if len(members) else np.zeros(len(terms))
        top.append([terms[j] for j in np.argsort(-mean)[:cfg.top_terms] if mean[j] > 0])
    return TopicModel(cfg.backend, terms, vec.idf_.astype(np.float64), centers, top, cfg.embed_chars)
