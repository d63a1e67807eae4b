"""Quality classifier (Skywork), measured within each language and domain.

Skywork's classifier asks "is this text fit to be cited by an encyclopedia", not "is this
English prose". One classifier over a whole corpus learns the second question whenever
its positives come from some domains only (a corpus's reference text is its prose;
nothing else resembles it), so this step trains one classifier per group of documents:

  group      meta lang / meta domain ("en/prose", "zh/zh", "en/code"; `group_by`). A
             group with fewer than `min_group_docs` documents joins the pooled group "*".
  positives  the reference documents (`positive`) of that group when it has at least
             `min_reference` of them; otherwise the group's own documents, which makes
             the classifier a junk detector for that group ("positives": "corpus").
  negatives  damaged copies (degrade.py: word salad, keyword stuffing, boilerplate-heavy
             pages, ad spam, mojibake, repeated lines, minified) of the group's documents
             and, with references, half of them of the references; as many as the
             positives (`negatives_per_positive`), plus the real low-quality documents in
             `negative` of that group. Never the clean corpus pages: in a corpus that
             holds the reference pages, a raw-corpus sample would be the positives' own.
  folds      every document is in one of two folds by id; model k trains on fold k and
             scores fold 1 - k (a document, or its damaged copy, never scores itself).
  refine     with own documents as positives, a first round on the dense features only
             moves own documents scored below the threshold to the negatives, then the
             full model is trained (two-step PU learning; quality_train.py).
  threshold  P(good) >= `threshold` is kept; where that would keep less than
             `min_keep` of the group's sampled documents, the group's threshold is
             lowered to keep exactly that share (recorded).

The step writes meta["quality"] (the group model's probability) and, in mode "filter",
drops documents below their group's threshold as "quality_low". stats.json adds:

  quality_groups   per trained group: positives (reference|corpus|mixed), training counts,
                   held-out accuracy and recall per negative kind, threshold, sampled
                   kept share
  by_lang, by_domain, by_group   in/kept docs and bytes and kept_share per language,
                   per domain, per lang/domain group (groups.py)

Model folder (work/model, reusable as `quality.model`): groups.json + one sub-folder
per group with one or two (cross-fitted) QualityModel folders. docs/quality-topics.md
has the measurements and the limits.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np

from lmforge.io.atomic import write_json
from lmforge.io.documents import ErrorSink, doc_bytes
from lmforge.io.readers import iter_documents

from .groups import GroupCounts, doc_domain, doc_lang, sum_counts
from .pipeline import Step, iter_shard
from .quality_model import QualityModel
from .quality_train import GroupTrainer, fold_of
from .sampling import reservoir, stratified_reservoir  # noqa: F401 (reservoir: old import path)

POOLED = "*"
BATCH = 512


# ------------------------------------------------------------------ a set of group models


class QualitySet:
    """Group models + the map from document group to model; thresholds per group."""

    def __init__(self, group_by: list[str], groups: dict[str, dict], mapping: dict[str, str],
                 folder: Path, seed: int):
        self.group_by, self.groups, self.map, self.folder, self.seed = group_by, groups, mapping, folder, seed
        self._models: dict[str, list[QualityModel]] = {}

    def resolve(self, key: str) -> str:
        """The trained group for a document group (a model reused on another corpus may meet
        groups it was not trained on: same language first, then the largest group)."""
        if key in self.map:
            return self.map[key]
        lang = key.split("/")[0]
        by_size = sorted(self.groups, key=lambda g: -self.groups[g].get("docs", 0))
        same = [g for g in by_size if g.split("/")[0] == lang]
        return (same or by_size)[0]

    def models(self, group: str) -> list[QualityModel]:
        if group not in self._models:
            d = self.folder / self.groups[group]["dir"]
            self._models[group] = [QualityModel.load(d / f"fold-{i}")
                                   for i in range(self.groups[group]["folds"])]
        return self._models[group]

    def score(self, groups: list[str], ids: list[str], texts: list[str]) -> np.ndarray:
        """P(good) for each document, batched per (group, model)."""
        out = np.zeros(len(texts))
        todo: dict[tuple[str, int], list[int]] = {}
        for i, (g, doc_id) in enumerate(zip(groups, ids)):
            # cross-fitted groups: fold f is scored by the model trained on the other fold
            m = 1 - fold_of(self.seed, doc_id) if self.groups[g]["folds"] == 2 else 0
            todo.setdefault((g, m), []).append(i)
        for (g, m), idx in todo.items():
            model = self.models(g)[m]
            for s in range(0, len(idx), BATCH):
                part = idx[s:s + BATCH]
                out[part] = model.score([texts[i] for i in part])
        return out

    def threshold(self, group: str) -> float:
        return self.groups[group]["threshold"]

    def save(self) -> None:
        write_json(self.folder / "groups.json", {"group_by": self.group_by, "seed": self.seed,
                                                  "groups": self.groups, "map": self.map})

    @classmethod
    def load(cls, folder: str | Path, threshold: float = 0.5) -> "QualitySet":
        folder = Path(folder)
        if not (folder / "groups.json").is_file():
            if (folder / "model.json").is_file():  # a single model (before groups): one group
                return cls(["lang"], {POOLED: {"dir": ".", "folds": 0, "single": True, "docs": 0,
                                               "threshold": threshold}}, {}, folder, 0)
            raise FileNotFoundError(f"quality.model: {folder} holds neither groups.json nor model.json")
        meta = json.loads((folder / "groups.json").read_text())
        return cls(meta["group_by"], meta["groups"], meta["map"], folder, meta["seed"])


def _single_models(qs: QualitySet) -> None:
    """A pre-group model folder is itself the model (no fold sub-folders)."""
    for g, info in qs.groups.items():
        if info.get("single"):
            qs._models[g] = [QualityModel.load(qs.folder)]
            info["folds"] = 1


def load_set(folder, threshold: float) -> QualitySet:
    qs = QualitySet.load(folder, threshold)
    _single_models(qs)
    return qs


def _slug(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name) or "_"


def group_threshold(scores: np.ndarray, threshold: float, min_keep: float) -> float:
    """The threshold, lowered where it would keep less than min_keep of these scores."""
    if len(scores) == 0 or min_keep <= 0 or np.mean(scores >= threshold) >= min_keep:
        return threshold
    s = np.sort(scores)[::-1]
    return float(min(threshold, s[max(0, int(np.ceil(min_keep * len(s))) - 1)]))


# ------------------------------------------------------------------ shipped references

SHIPPED_REFERENCES = Path(__file__).parent / "resources" / "quality_refs.jsonl.zst"
CODE_DOMAINS = ("code",)


def shipped_references(path: Path = SHIPPED_REFERENCES) -> dict[str, list[tuple[str, str]]]:
    """{lang: [(id, text)]} of the shipped modern prose references."""
    sink = ErrorSink()
    out: dict[str, list[tuple[str, str]]] = {}
    for d in iter_documents([str(path)], sink):
        out.setdefault(str(d["meta"].get("lang")), []).append((str(d["id"]), d["text"]))
    return out


def _spread(n: int, k: int) -> list[int]:
    """k indices spread evenly over range(n) (all of them when k >= n)."""
    if k >= n:
        return list(range(n))
    return [int(j * n / k) for j in range(k)] if k > 0 else []


def add_shipped_references(refs: dict, ref_counts: dict, groups: list[str], cfg) -> frozenset:
    """Append the shipped references of a language to each corpus group of that language
    whose domain is not code (groups are "lang/domain/..." in group_by order): modern
    expository prose is citable whatever the group's own references are (classics, API docs).
    Returns the ids added (the trainer damages fewer corpus documents for them)."""
    if "lang" not in cfg.group_by:
        return frozenset()
    added: set[str] = set()
    li = cfg.group_by.index("lang")
    shipped = shipped_references()
    for g in groups:
        parts = g.split("/")
        if is_code_group([g], cfg.group_by):
            continue
        extra = shipped.get(parts[li], [])[:cfg.max_train_docs]
        own = ref_counts.get(g, 0)
        if own and cfg.shipped_share < 1:   # beside a group's own references, at most this share
            cap = int(own * cfg.shipped_share / (1 - cfg.shipped_share))
            extra = [extra[j] for j in _spread(len(extra), cap)]
        if extra:
            refs.setdefault(g, []).extend((i, t[:cfg.max_chars]) for i, t in extra)
            ref_counts[g] = ref_counts.get(g, 0) + len(extra)
            added.update(i for i, _ in extra)
    return frozenset(added)


def is_code_group(members: list[str], group_by: list[str]) -> bool:
    """Whether every member group is of a code domain (then prose-only measures are off)."""
    if "domain" not in group_by:
        return False
    di = group_by.index("domain")
    return all(m.split("/")[di] in CODE_DOMAINS for m in members)


# ------------------------------------------------------------------ the step


def _corpus(paths):
    for p in paths:
        yield from iter_shard(p)


class QualityStep(Step):
    def key(self, doc: dict, lang: str | None = None) -> str:
        parts = []
        for k in self.cfg.group_by:
            if k == "lang":
                parts.append(lang or doc_lang(doc))
            elif k == "domain":
                parts.append(doc_domain(doc))
            else:
                parts.append(str(doc["meta"].get(k) or "?"))
        return "/".join(parts)

    def _read(self, paths, sink_path: Path):
        sink = ErrorSink(sink_path)
        docs, counts = stratified_reservoir(iter_documents(paths, sink), self.key,
                                            self.cfg.max_train_docs, self.cfg.seed, self.cfg.max_chars)
        sink.close()
        return docs, counts

    def prepare(self, ctx) -> dict:
        cfg = self.cfg
        folder = ctx.work / "model"
        if cfg.model:
            shutil.copytree(cfg.model, folder, dirs_exist_ok=True)
            qs = load_set(folder, cfg.threshold)
            return {"quality_model": str(folder), "quality_groups": qs.groups, "reused_model": cfg.model}
        corpus, counts = stratified_reservoir(_corpus(ctx.inputs), self.key, cfg.max_train_docs,
                                              cfg.seed, cfg.max_chars)
        refs, ref_counts = self._read(cfg.positive, ctx.work / "positive_rejects.jsonl")
        shipped = add_shipped_references(refs, ref_counts, list(counts), cfg) if cfg.shipped_references \
            else frozenset()
        negs, _ = self._read(cfg.negative, ctx.work / "negative_rejects.jsonl")
        mapping = {k: (k if n >= cfg.min_group_docs else POOLED) for k, n in counts.items()}
        if all(v == POOLED for v in mapping.values()) and len(mapping) == 1:
            mapping = {k: k for k in mapping}  # a single small group needs no pooling
        groups: dict[str, dict] = {}
        for g in sorted(set(mapping.values())):
            members = sorted(k for k, v in mapping.items() if v == g)
            parts = [(corpus.get(k, []), refs.get(k, []), negs.get(k, [])) for k in members]
            trainer = GroupTrainer(cfg, g, shipped, code=is_code_group(members, cfg.group_by))
            info, scores = trainer.train(parts, folder / _slug(g))
            t = group_threshold(scores, cfg.threshold, cfg.min_keep)
            groups[g] = {"dir": _slug(g), "members": members, "docs": sum(counts[k] for k in members),
                         "reference_docs": sum(ref_counts.get(k, 0) for k in members), **info,
                         "threshold": float(t), "sample_kept_share": round(float(np.mean(scores >= t)), 4)
                         if len(scores) else None}
        qs = QualitySet(list(cfg.group_by), groups, mapping, folder, cfg.seed)
        qs.save()
        unused = sorted(k for k in ref_counts if k not in mapping)
        accs = [(g["heldout"]["accuracy"], g["heldout"]["docs"]) for g in groups.values() if g["heldout"]]
        out = {"quality_model": str(folder), "quality_groups": groups,
               "reference_groups_unused": {k: ref_counts[k] for k in unused}}
        if accs:
            out["heldout_accuracy"] = round(sum(a * n for a, n in accs) / sum(n for _, n in accs), 4)
        return out

    def open_shard(self, ctx, index):
        cfg = self.cfg
        qs = load_set(ctx.work / "model", cfg.threshold)
        docs = list(iter_shard(ctx.inputs[index]))
        langs = [doc_lang(d) for d in docs]
        groups = [qs.resolve(self.key(d, l)) for d, l in zip(docs, langs)]
        scores = qs.score(groups, [str(d["id"]) for d in docs], [d["text"][:cfg.max_chars] for d in docs])
        keep = [cfg.mode == "tag" or s >= qs.threshold(g) for s, g in zip(scores, groups)]
        coherence = self._coherence(docs, langs, keep)
        # mode tag records the measure and removes nothing
        incoherent = [cfg.mode != "tag" and c is not None and c < cfg.coherence_min[l]
                      for c, l in zip(coherence, langs)]
        counts = GroupCounts()
        for d, l, k, bad in zip(docs, langs, keep, incoherent):
            counts.add({"by_lang": l, "by_domain": doc_domain(d), "by_group": self.key(d, l)},
                       doc_bytes(d), k and not bad)
        counts.save(ctx.work / f"counts-{ctx.inputs[index].name}.json")
        del docs

        def apply(i, doc):
            doc["meta"]["quality"] = round(float(scores[i]), 5)
            if coherence[i] is not None:
                doc["meta"]["coherence"] = round(coherence[i], 4)
            if not keep[i]:
                return None, "quality_low"
            if incoherent[i]:
                return None, "incoherent"
            return doc, None
        return apply

    def _coherence(self, docs: list, langs: list, keep: list) -> list:
        """Adjacent-passage similarity of the kept non-code documents whose language has a
        `coherence_min` (None for the others): the embedding costs, so only where it decides."""
        mins = self.cfg.coherence_min
        todo = [i for i, (d, l, k) in enumerate(zip(docs, langs, keep))
                if k and l in mins and doc_domain(d) not in CODE_DOMAINS]
        out: list = [None] * len(docs)
        if todo:
            from .coherence import adjacent_similarity

            for i, v in zip(todo, adjacent_similarity([docs[i]["text"][:self.cfg.max_chars] for i in todo])):
                out[i] = v
        return out

    def finish(self, ctx) -> dict:
        return sum_counts(ctx.work, "counts-*.json")


__all__ = ["QualityModel", "QualitySet", "QualityStep", "GroupTrainer", "group_threshold",
           "load_set", "reservoir"]
