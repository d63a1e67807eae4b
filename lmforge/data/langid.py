"""Language identification with py3langid (offline model): tag meta["lang"], filter.

The top language's normalised probability goes to meta["lang_score"]. A document in
a language outside `allowed` is dropped as "lang_<code>" (so stats show which
languages were removed); one whose score is below `min_score` as "lang_uncertain".
`aliases` folds labels first (default wuu -> zh: the model calls classical Chinese Wu).
"""
from __future__ import annotations

from functools import lru_cache

from .pipeline import Step


@lru_cache(maxsize=1)
def identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def detect(text: str, max_chars: int = 2000) -> tuple[str, float]:
    lang, score = identifier().classify(text[:max_chars])
    return lang, float(score)


class LangidStep(Step):
    def open_shard(self, ctx, index):
        allowed = set(self.cfg.allowed)

        def apply(i, doc):
            if not doc["text"].strip():
                return None, "lang_empty"
            lang, score = detect(doc["text"], self.cfg.max_chars)
            lang = self.cfg.aliases.get(lang, lang)
            doc["meta"]["lang"], doc["meta"]["lang_score"] = lang, round(score, 4)
            if allowed and lang not in allowed:
                return None, f"lang_{lang}"
            if score < self.cfg.min_score:
                return None, "lang_uncertain"
            return doc, None
        return apply


def supported_languages() -> set[str]:
    """The language codes py3langid's shipped model can output (an `allowed` code outside
    this set can never be detected, so every document in that language would be dropped)."""
    return set(identifier().nb_classes)
