"""Topic clustering and per-cluster downsampling (Skywork: cluster embeddings to balance
the distribution; Yi: downsample low-information topics such as ads).

Fit (driver, on a reservoir sample of `fit_docs` documents): TF-IDF over CJK-aware units
(words; CJK characters), and k-means over either those TF-IDF vectors (`backend: tfidf`)
or sentence embeddings (`backend: embedding`, embed.py, optional extra). Each cluster's
top terms are the largest entries of its members' mean TF-IDF vector, on both backends.

Assign (per shard, in parallel): every document goes to its nearest centre,
meta["topic"] = cluster id.

Weights (keep probabilities), per cluster, first match wins:
  1. `weights` by cluster id, 2. `term_weights` when a top term is listed,
  3. with `downsample: auto` (the default), measured on the fitted sample:
     ad cluster         at least `ad_share` of its documents are ad-like (at least
                        `ad_terms_per_100` terms of the shipped ad/spam list per 100 words,
                        counting 1.5 CJK characters as a word, and at least 2): keep `ad_keep`
     low information    its mean information score (distinct-unit ratio over 256 units
                        x (1 - boilerplate line share), textinfo.py) is below
                        `min_information`: keep `low_info_keep`
  4. otherwise 1.
Whether a document is kept is decided by a hash of (seed, document id), so reruns keep
the same documents. `topics.json` in the step folder lists per cluster: size, weight and
why, ad share, information, entropy, boilerplate share, top terms, ad terms found and
sample texts. stats.json adds clusters, cluster_sizes, cluster_weights,
downsampled_clusters and by_lang / by_domain kept shares (groups.py).
"""
from __future__ import annotations

import json
from collections import Counter

import numpy as np

from lmforge.io.atomic import write_json
from lmforge.io.documents import doc_bytes

from .groups import GroupCounts, doc_domain, doc_lang, sum_counts
from .pipeline import Step, iter_shard
from .sampling import keep_draw  # noqa: F401  (old import path: lmforge.data.topics.keep_draw)
from .textinfo import ad_matcher, info_stats
from .topic_model import TopicModel, fit_topic_model


def _sample(inputs, k: int, seed: int) -> list[dict]:
    """A reservoir of k documents (uniform, deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    out: list[dict] = []
    i = 0
    for p in inputs:
        for d in iter_shard(p):
            if len(out) < k:
                out.append(d)
            else:
                j = int(rng.integers(0, i + 1))
                if j < k:
                    out[j] = d
            i += 1
    return out


class TopicsStep(Step):
    def prepare(self, ctx) -> dict:
        cfg = self.cfg
        sample = _sample(ctx.inputs, cfg.fit_docs, cfg.seed)
        if not sample:
            write_json(ctx.work / "weights.json", [], indent=None)
            return {"clusters": 0}
        texts = [d["text"] for d in sample]
        model = fit_topic_model(texts, cfg)
        model.save(ctx.work / "model")
        labels = model.assign(texts)
        ads = ad_matcher(cfg.ad_terms)
        infos = [info_stats(t[:20000], ads) for t in texts]
        found = [ads.found(t[:20000]) for t in texts]
        report = []
        for c in range(model.k):
            members = np.flatnonzero(labels == c)
            row = self.cluster_row(c, model.top_terms[c], [infos[i] for i in members],
                                   [found[i] for i in members], [texts[i] for i in members])
            report.append(row)
        weights = [r["weight"] for r in report]
        write_json(ctx.work / "weights.json", weights, indent=None)
        write_json(ctx.work / "report.json", report, indent=None)
        return {"clusters": model.k, "backend": cfg.backend, "downsample": cfg.downsample,
                "cluster_weights": weights,
                "downsampled_clusters": {str(r["cluster"]): r["reason"] for r in report if r["weight"] < 1}}

    def cluster_row(self, c: int, top: list[str], infos: list[dict], found: list[list[str]],
                    texts: list[str]) -> dict:
        cfg = self.cfg
        ad_like = [len(f) >= 2 and len(f) * 100 / max(1.0, s["words"]) >= cfg.ad_terms_per_100
                   for f, s in zip(found, infos)]
        mean = lambda k: round(float(np.mean([s[k] for s in infos])), 4) if infos else None
        row = {"cluster": c, "sample_size": len(infos), "ad_share": round(float(np.mean(ad_like)), 4)
               if infos else 0.0, "information": mean("information"), "distinct": mean("distinct"),
               "entropy": mean("entropy"), "boilerplate": mean("boilerplate"), "top_terms": top,
               "ad_terms": [t for t, _ in Counter(t for f in found for t in f).most_common(8)],
               "samples": [t[:cfg.sample_chars] for t in texts[:cfg.samples_per_cluster]]}
        row["weight"], row["reason"] = self.weight(c, top, row)
        return row

    def weight(self, cluster: int, top_terms: list[str], row: dict) -> tuple[float, str | None]:
        cfg = self.cfg
        if cluster in cfg.weights:
            return cfg.weights[cluster], "weights"
        hits = [w for t, w in cfg.term_weights.items() if t.lower() in top_terms]
        if hits:
            return min(hits), "term_weights"
        if cfg.downsample == "auto" and row["sample_size"]:
            if row["ad_share"] >= cfg.ad_share:
                return cfg.ad_keep, "ads"
            if row["information"] < cfg.min_information:
                return cfg.low_info_keep, "low_information"
        return 1.0, None

    def open_shard(self, ctx, index):
        weights = json.loads((ctx.work / "weights.json").read_text())
        docs = list(iter_shard(ctx.inputs[index]))
        labels = (TopicModel.load(ctx.work / "model").assign([d["text"] for d in docs])
                  if docs and weights else np.zeros(len(docs), np.int64))
        keep = [not weights or weights[c] >= 1.0 or keep_draw(self.cfg.seed, d["id"]) < weights[c]
                for d, c in zip(docs, labels)]
        counts = GroupCounts()
        for d, c, k in zip(docs, labels, keep):
            counts.add({"by_lang": doc_lang(d), "by_domain": doc_domain(d), "by_cluster": str(int(c))},
                       doc_bytes(d), k)
        counts.save(ctx.work / f"counts-{ctx.inputs[index].name}.json")
        del docs

        def apply(i, doc):
            doc["meta"]["topic"] = int(labels[i])
            if not keep[i]:
                return None, "topic_downsampled"
            return doc, None
        return apply

    def finish(self, ctx) -> dict:
        counts = sum_counts(ctx.work, "counts-*.json")
        by_cluster = counts.pop("by_cluster", {})
        report_path = ctx.work / "report.json"
        if not report_path.exists():
            return counts
        report = json.loads(report_path.read_text())
        for r in report:  # sizes over every document, not only the fitted sample
            c = by_cluster.get(str(r["cluster"]), {"in": {"docs": 0}, "kept": {"docs": 0}})
            r["size"], r["kept"] = c["in"]["docs"], c["kept"]["docs"]
        report = [{k: r[k] for k in ("cluster", "size", "kept", "weight", "reason")} |
                  {k: v for k, v in r.items() if k not in ("cluster", "size", "kept", "weight", "reason")}
                  for r in report]
        write_json(ctx.dir / "topics.json", report)
        return {**counts, "cluster_sizes": [r["size"] for r in report]}
