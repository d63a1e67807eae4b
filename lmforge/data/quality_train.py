"""Training one quality group: positives, damaged-copy negatives, cross-fitting, refinement.

See quality.py for the method. Features are computed once per text (QualityModel.raw)
and every model of every round is fitted on row subsets of that one matrix.
"""
from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np

from .degrade import degrade
from .quality_model import QualityModel
from .sampling import keep_draw


MAX_SUSPECT = 0.5  # refinement moves at most this share of a group's own documents


def fold_of(seed: int, doc_id: str) -> int:
    """Cross-fitting fold (0 or 1) of a document, fixed by its id."""
    return int(keep_draw(f"fold{seed}", doc_id) >= 0.5)


# dense measures that judge prose only: code's strings, regexes and format specs hold lone
# brackets (with `unbalanced` the planted corpus's good code was kept 91.2 / 92.6% on seeds
# 0 / 3, against 98.5 / 94.1% without it)
PROSE_ONLY_DENSE = ("unbalanced",)


class GroupTrainer:
    def __init__(self, cfg, name: str, shipped: frozenset = frozenset(), code: bool = False):
        self.cfg, self.name = cfg, name  # the name seeds the damage, so groups differ
        self.kinds = list(cfg.negative_kinds)
        self.shipped = shipped  # ids of the shipped references among the group's references
        self.dense_keys = [k for k in cfg.dense_keys if not (code and k in PROSE_ONLY_DENSE)]

    # ---------------------------------------------------------------- negatives

    def synthetic(self, sources: list[tuple[str, str]], n: int) -> list[tuple[str, str, str]]:
        """n damaged copies (source id, text, kind), kinds in turn, sources in turn."""
        out = []
        for j in range(n):
            sid, text = sources[j % len(sources)]
            kind = self.kinds[(j + j // len(sources)) % len(self.kinds)]
            rng = random.Random(f"{self.cfg.seed}:{self.name}:{sid}:{j}")
            pool = ()
            if kind == "markov" and self.cfg.markov_pool:  # other documents, drawn at random
                pool = tuple(sources[rng.randrange(len(sources))][1] for _ in range(self.cfg.markov_pool))
            out.append((sid, degrade(text, kind, rng, pool), kind))
        return out

    def negatives(self, docs: list, refs: list) -> list[tuple[str, str, str]]:
        """Damaged copies, as many as the positives (times negatives_per_positive): of the
        group's documents and, with references, of the references too, so the form that
        sets the corpus apart from the references (short poems beside long classics) is not
        what the classifier learns to reject.

        Damaged corpus documents carry the corpus's vocabulary into the negatives; they
        stand in for half of the group's *own* references only, never for the shipped ones.
        Otherwise a corpus whose topic the shipped references do not share (Python docs
        beside Debian manuals) learns its own topic as low quality: on the planted corpus
        (seed 3) its good docs were kept 46%, 83% with this split (docs/quality-topics.md)."""
        npp = self.cfg.negatives_per_positive
        n = max(1, int(round((len(refs) or len(docs)) * npp)))
        src = self.cfg.damage
        if not refs or src == "corpus":
            return self.synthetic(docs, n)
        if src == "reference":
            return self.synthetic(refs, n)
        own = sum(1 for i, _ in refs if i not in self.shipped)
        n_own = n if own == len(refs) else int(round(own * npp))
        n_doc = n_own - n_own // 2   # without shipped references: half of n, as before
        return self.synthetic(docs, n_doc) + self.synthetic(refs, n - n_doc)

    # ---------------------------------------------------------------- training

    def train(self, members: list[tuple[list, list, list]], folder: Path) -> tuple[dict, np.ndarray]:
        """Train the group's models under `folder`; returns (info, scores of the corpus sample).

        `members`: per member (lang/domain) group, (corpus sample, reference docs, real
        negatives), each a list of (id, text)."""
        cfg = self.cfg
        corpus, refs, negs, own, kinds = [], [], [], [], []
        for docs, rs, real in members:
            use_ref = len(rs) >= cfg.min_reference
            kinds.append("reference" if use_ref else "corpus")
            if not use_ref:
                own += range(len(corpus), len(corpus) + len(docs))
            refs += rs if use_ref else []
            negs += self.negatives(docs, rs if use_ref else []) + [(i, t, "real") for i, t in real]
            corpus += docs
        # one feature matrix: corpus rows, then reference rows, then negative rows
        proto = self.model()
        S, D = proto.raw([t for _, t in corpus] + [t for _, t in refs] + [t for _, t, _ in negs])
        ids = [i for i, _ in corpus] + [i for i, _ in refs] + [i for i, _, _ in negs]
        self.S, self.D, self.ngrams = S, D, True
        self.fold = np.array([fold_of(cfg.seed, i) for i in ids])
        self.kind = ["corpus"] * len(corpus) + ["reference"] * len(refs) + [k for _, _, k in negs]
        nc, nr = len(corpus), len(refs)
        ref_rows = list(range(nc, nc + nr))
        neg_rows = list(range(nc + nr, nc + nr + len(negs)))
        info = {"positives": kinds[0] if len(set(kinds)) == 1 else "mixed"}
        self.C = cfg.C_own if own else cfg.C
        suspects: list[int] = []
        rounds = 1 + (cfg.refine if own else 0)
        for r in range(rounds):
            pos = ref_rows + [i for i in own if i not in set(suspects)]
            neg = neg_rows + suspects
            # the first of several rounds looks at the dense features only: a dozen numbers
            # cannot memorise the group's own junk the way its n-grams can
            self.ngrams = not (r == 0 and rounds > 1 and self.D is not None)
            models, held, scores = self.cross_fit(pos, neg, nc)
            if not own:
                break
            low = [i for i in own if scores[i] < cfg.threshold]
            if len(low) > MAX_SUSPECT * len(own):  # most of a group is not junk: keep the worst
                low = sorted(sorted(low, key=lambda i: scores[i])[:int(MAX_SUSPECT * len(own))])
            info.setdefault("suspects_by_round", []).append(len(low))
            if low == suspects and self.ngrams:
                break
            suspects = low  # two-step PU learning: own documents judged low become negatives
        if not self.ngrams:  # the saved models always see every feature
            self.ngrams = True
            models, held, scores = self.cross_fit(ref_rows + [i for i in own if i not in set(suspects)],
                                                  neg_rows + suspects, nc)
        for k, m in enumerate(models):
            m.save(folder / f"fold-{k}")
        shutil.rmtree(folder / "fold-1", ignore_errors=True) if len(models) == 1 else None
        info.update({"C": self.C, "train": {"positives": len(pos), "negatives": len(neg)}, "folds": len(models),
                     "heldout": held})
        return info, scores

    def model(self) -> QualityModel:
        c = self.cfg
        return QualityModel(c.n_features, c.char_ngrams, c.word_ngrams, dense_keys=self.dense_keys)

    def _fit(self, pos: list[int], neg: list[int]) -> QualityModel:
        rows = np.array(pos + neg)
        y = np.array([1] * len(pos) + [0] * len(neg))
        balanced = any(self.kind[i] in ("real", "corpus") for i in neg)  # real negatives weigh
        C = self.C if self.ngrams else self.cfg.C  # a dozen dense features need little restraint
        return self.model().fit_raw(self._S(rows), None if self.D is None else self.D[rows], y,
                                    C, self.cfg.seed, balanced)

    def _S(self, rows):
        from scipy.sparse import csr_matrix

        return self.S[rows] if self.ngrams else csr_matrix((len(rows), 0))

    def _score(self, m: QualityModel, rows) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return np.zeros(0)
        if not self.ngrams:  # a dense-only model: its coefficients are the dense block's
            return m.score_raw(self._S(rows), self.D[rows])
        return m.score_raw(self.S[rows], None if self.D is None else self.D[rows])

    def cross_fit(self, pos: list[int], neg: list[int], n_corpus: int):
        """Model k trains on fold k and judges fold 1 - k; one model if a fold is empty."""
        f = self.fold
        pf = [[i for i in pos if f[i] == k] for k in (0, 1)]
        nf = [[i for i in neg if f[i] == k] for k in (0, 1)]
        if min(len(x) for x in pf + nf) == 0:
            m = self._fit(pos, neg)
            return [m], {}, self._score(m, range(n_corpus))
        models = [self._fit(pf[k], nf[k]) for k in (0, 1)]
        held = merge_eval([self.evaluate(models[1 - k], pf[k], nf[k]) for k in (0, 1)])
        scores = np.zeros(n_corpus)
        for k in (0, 1):
            rows = [i for i in range(n_corpus) if f[i] == k]
            scores[rows] = self._score(models[1 - k], rows)
        return models, held, scores

    def evaluate(self, model, pos: list[int], neg: list[int]) -> dict:
        if not pos or not neg:
            return {}
        t = self.cfg.threshold
        ps, ns = self._score(model, pos), self._score(model, neg)
        rec = {}
        for k in sorted({self.kind[i] for i in neg}):
            s = [v for v, i in zip(ns, neg) if self.kind[i] == k]
            rec["suspect" if k == "corpus" else k] = round(float(np.mean(np.array(s) < t)), 4)
        acc = (np.sum(ps >= t) + np.sum(ns < t)) / (len(ps) + len(ns))
        return {"docs": len(ps) + len(ns), "accuracy": round(float(acc), 4),
                "positive_recall": round(float(np.mean(ps >= t)), 4), "negative_recall_by_kind": rec}


def merge_eval(evals: list[dict]) -> dict:
    """Docs-weighted accuracy and positive recall, mean recall per kind, over folds."""
    evals = [e for e in evals if e]
    if not evals:
        return {}
    n = sum(e["docs"] for e in evals)
    out = {"docs": n}
    for k in ("accuracy", "positive_recall"):
        out[k] = round(sum(e[k] * e["docs"] for e in evals) / n, 4)
    kinds = sorted({k for e in evals for k in e["negative_recall_by_kind"]})
    out["negative_recall_by_kind"] = {
        k: round(float(np.mean([e["negative_recall_by_kind"][k] for e in evals
                                if k in e["negative_recall_by_kind"]])), 4) for k in kinds}
    return out
