"""Typed config of `lmforge data CONFIG.yaml`.

    input: [raw/]                 files or folders (jsonl, jsonl.gz/zst, parquet, csv, txt, md, html,
                                  warc, warc.gz, wet.gz), or URLs (s3://bucket/raw/*.jsonl; lmforge.io.fs)
    text_field: content           jsonl/parquet/csv: which key holds the text (default: text)
    output: runs/data             or a URL (s3://bucket/data)
    steps: [extract, filters, langid, quality, minhash, substring, topics, code]
    filters: {min_units: 50}      each step's settings live under its own name,
    minhash: {threshold: 0.7}     so `--set minhash.threshold=0.6` works

Steps run in the listed order; each may appear once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..config import check

StepName = Literal["extract", "filters", "langid", "quality", "minhash", "substring", "topics",
                   "code", "decontam"]


@dataclass
class ExtractConfig:
    backend: Literal["resiliparse", "trafilatura"] = "resiliparse"
    main_content: bool = True  # drop navigation, headers, footers
    min_chars: int = 1  # an extraction shorter than this is rejected as extract_empty

    def __post_init__(self):
        check(self.min_chars >= 0, "min_chars", "must be >= 0")


@dataclass
class FilterConfig:
    """Heuristic filters (Gopher / C4 rules, CJK-aware). A threshold of null disables a rule.

    "units" are words for space-separated scripts and characters for CJK text; per-script
    rules: cjk_unit_share, cjk_chars_per_word (docs/quality-topics.md).
    """
    min_units: int | None = 50
    max_units: int | None = 200_000
    min_mean_word_len: float | None = 3.0  # over non-CJK words only
    # mean word length judges space-delimited text only: not a text whose units are at
    # least this share CJK characters (its non-CJK words are options, formats, numbers)
    cjk_unit_share: float = 0.3
    # in such text the repetition n-gram rules use n x this many characters for n words
    cjk_chars_per_word: float = 1.5
    max_mean_word_len: float | None = 10.0
    max_symbol_ratio: float | None = 0.25  # non-alphanumeric, non-punctuation chars / non-space chars
    max_digit_ratio: float | None = 0.3
    min_alpha_word_ratio: float | None = 0.8  # Gopher: 80% of words contain a letter
    max_bullet_line_ratio: float | None = 0.9
    max_ellipsis_line_ratio: float | None = 0.3
    max_dup_line_ratio: float | None = 0.30  # Gopher repetition thresholds
    max_dup_para_ratio: float | None = 0.30
    max_dup_line_char_ratio: float | None = 0.20
    max_dup_para_char_ratio: float | None = 0.20
    max_top_ngram_ratio: dict[int, float] = field(default_factory=lambda: {2: 0.20, 3: 0.18, 4: 0.16})
    max_dup_ngram_ratio: dict[int, float] = field(default_factory=lambda: {
        5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10})
    remove_boilerplate_lines: bool = True
    boilerplate_patterns: list[str] = field(default_factory=lambda: list(DEFAULT_BOILERPLATE))
    max_boilerplate_line_ratio: float | None = 0.5  # more than this -> the page is boilerplate

    def __post_init__(self):
        for name in ("max_symbol_ratio", "max_digit_ratio", "min_alpha_word_ratio",
                     "max_bullet_line_ratio", "max_ellipsis_line_ratio", "max_dup_line_ratio",
                     "max_dup_para_ratio", "max_dup_line_char_ratio", "max_dup_para_char_ratio",
                     "max_boilerplate_line_ratio", "cjk_unit_share"):
            v = getattr(self, name)
            check(v is None or 0.0 <= v <= 1.0, name, f"must be in [0, 1], got {v}")
        for name in ("max_top_ngram_ratio", "max_dup_ngram_ratio"):
            for n, v in getattr(self, name).items():
                check(n >= 1 and 0.0 <= v <= 1.0, f"{name}.{n}", "needs n >= 1 and a ratio in [0, 1]")
        check(1.0 <= self.cjk_chars_per_word <= 4.0, "cjk_chars_per_word", "must be in [1, 4]")
        if self.min_units is not None and self.max_units is not None:
            check(self.min_units <= self.max_units, "min_units", "must be <= max_units")
        import re

        for i, p in enumerate(self.boilerplate_patterns):
            try:
                re.compile(p)
            except re.error as e:
                check(False, f"boilerplate_patterns[{i}]", f"invalid regex: {e}")


DEFAULT_BOILERPLATE = (
    r"(?i)\b(accept|use|uses) (all )?cookies\b", r"(?i)\bcookie (policy|settings)\b",
    r"(?i)\bprivacy policy\b", r"(?i)\bterms (of use|of service|and conditions)\b",
    r"(?i)\ball rights reserved\b", r"(?i)^\s*(sign in|log ?in|sign up|register|subscribe)\s*$",
    r"(?i)\benable javascript\b", r"(?i)^\s*(share|tweet|like)( this)?\s*[:|]?\s*$",
    r"(?i)\bclick here\b", r"(?i)^\s*(home|menu|next|previous|back to top)\s*$",
    r"版权所有", r"免责声明", r"^\s*(登录|注册|首页|返回顶部)\s*$",
)


@dataclass
class LangidConfig:
    allowed: list[str] = field(default_factory=lambda: ["en", "zh"])  # empty: tag only
    min_score: float = 0.5  # normalised probability of the top language
    max_chars: int = 2000  # identify on the first characters only (speed)
    # labels folded into another before filtering: py3langid calls classical Chinese
    # (poetry, the classics) "wuu" (Wu); this corpus's Chinese is Mandarin or classical
    aliases: dict[str, str] = field(default_factory=lambda: {"wuu": "zh"})

    def __post_init__(self):
        check(0.0 <= self.min_score <= 1.0, "min_score", "must be in [0, 1]")
        check(self.max_chars > 0, "max_chars", "must be > 0")


@dataclass
class QualityConfig:
    """Skywork's quality classifier, one per language/domain group (quality.py):
    positives = reference text of the group (else the group's own documents),
    negatives = damaged copies of the group's documents (+ real low-quality `negative`)."""
    positive: list[str] = field(default_factory=list)  # files/folders of reference-quality text
    negative: list[str] = field(default_factory=list)  # files/folders of real low-quality text
    model: str | None = None  # a trained model folder to reuse instead of training
    # add the shipped modern expository prose (resources/quality_refs.jsonl.zst: Debian
    # Reference and New Maintainers' Guide, en + zh, GPL-2+) to the references of every
    # non-code group of the same language (docs/quality-topics.md has the held-out figures)
    shipped_references: bool = True
    # beside a group's own references the shipped ones are at most this share of them
    # (1: all); a group without references of its own gets all of them
    shipped_share: float = 1.0
    group_by: list[str] = field(default_factory=lambda: ["lang", "domain"])  # meta keys
    min_group_docs: int = 50  # smaller groups are pooled into one group "*"
    min_reference: int = 20  # fewer reference docs in a group: its own docs are the positives
    negatives_per_positive: float = 1.0  # synthetic damaged copies per positive
    refine: int = 1  # rounds moving own-document positives that score low to the negatives
    damage: Literal["both", "corpus", "reference"] = "both"  # whose copies are damaged
    negative_kinds: list[str] = field(default_factory=lambda: list(NEGATIVE_KINDS))  # damage kinds used for synthetic negatives (degrade.py)
    # the markov kind's chain also runs over this many other documents of the group (topic
    # drift, as a spinner fed several pages writes; 0: the document's own tokens only)
    markov_pool: int = 4
    # the dense measures beside the n-grams (textinfo.py); unbalanced (brackets and quotes
    # left open or closed unopened: Markov-chained / spliced text) is skipped in code groups
    dense_keys: list[str] = field(default_factory=lambda: list(DENSE_ALL))
    # per language, the least mean cosine of adjacent passages (sentence embeddings,
    # coherence.py) a kept non-code document must reach: spliced / Markov text fails it.
    # Needs the embed extra; {} = off. docs/quality-topics.md: en 0.3 (Chinese separates poorly)
    coherence_min: dict[str, float] = field(default_factory=dict)
    max_train_docs: int = 20_000  # per group and class
    max_chars: int = 10_000  # characters of a document used to train and score
    n_features: int = 1 << 18
    char_ngrams: list[int] = field(default_factory=lambda: [2, 4])
    word_ngrams: list[int] = field(default_factory=lambda: [1, 2])
    C: float = 4.0  # inverse regularisation where references are the positives ...
    C_own: float = 0.3  # ... and where a group's own documents are (strong: its junk is among them)
    threshold: float = 0.5  # P(good) below this is low quality ...
    min_keep: float = 0.0  # ... unless a group would keep less than this share of its documents
    mode: Literal["filter", "tag"] = "filter"
    seed: int = 0

    def __post_init__(self):
        check(0.0 <= self.threshold <= 1.0, "threshold", "must be in [0, 1]")
        check(0.0 <= self.min_keep <= 1.0, "min_keep", "must be in [0, 1]")
        check(0.0 < self.shipped_share <= 1.0, "shipped_share", "must be in (0, 1]")
        check(self.negatives_per_positive > 0, "negatives_per_positive", "must be > 0")
        check(self.n_features >= 16, "n_features", "must be >= 16")
        for name in ("char_ngrams", "word_ngrams"):
            v = getattr(self, name)
            check(len(v) == 2 and 1 <= v[0] <= v[1], name, "must be [min_n, max_n] with 1 <= min <= max")
        check(self.C > 0 and self.C_own > 0, "C", "C and C_own must be > 0")
        check(len(self.group_by) >= 1, "group_by", "name at least one meta key (e.g. [lang, domain])")
        check(self.min_group_docs >= 1, "min_group_docs", "must be >= 1")
        check(self.refine >= 0, "refine", "must be >= 0")
        check(self.min_reference >= 1, "min_reference", "must be >= 1")
        check(self.max_train_docs >= 2, "max_train_docs", "must be >= 2")
        check(self.max_chars >= 100, "max_chars", "must be >= 100")
        check(self.markov_pool >= 0, "markov_pool", "must be >= 0")
        check(all(-1.0 <= v <= 1.0 for v in self.coherence_min.values()), "coherence_min",
              "each value is a cosine similarity in [-1, 1]")
        if self.coherence_min:
            from .embed import EMBED_MISSING, available

            check(available(), "coherence_min", EMBED_MISSING)
        unknown = [k for k in self.dense_keys if k not in DENSE_ALL]
        check(not unknown and len(set(self.dense_keys)) == len(self.dense_keys), "dense_keys",
              f"choose distinct names from {list(DENSE_ALL)}, got {self.dense_keys}")
        bad = [k for k in self.negative_kinds if k not in NEGATIVE_KINDS]
        check(not bad and len(self.negative_kinds) > 0, "negative_kinds",
              f"choose from {list(NEGATIVE_KINDS)}, got {self.negative_kinds}")


DENSE_BASE = ("distinct", "entropy", "dup_lines", "boilerplate", "ad_density", "short_lines",
              "symbols", "garble", "alnum", "dense_lines")  # the dense block before issue 35
DENSE_ALL = (*DENSE_BASE, "unbalanced")
# the damage kinds before issue 35; markov / listed (machine-garbled text, keyword lists)
# were added for text nobody tuned to (docs/quality-topics.md has the held-out figures)
BASE_NEGATIVE_KINDS = ("shuffled", "stuffed", "boilerplate", "spam", "garbled", "repeated", "minified")
NEGATIVE_KINDS = (*BASE_NEGATIVE_KINDS, "markov", "listed")


@dataclass
class MinhashConfig:
    """MinHash LSH near-duplicate removal. Which word-edit rate each threshold catches, and
    why the defaults are 0.7 / 5-grams / fn_weight 0.9: docs/dedup.md."""
    threshold: float = 0.7  # estimated Jaccard of word 5-gram sets regarded as duplicate
    num_perm: int = 128
    ngram: int = 5  # word n-grams; CJK characters count as words (character n-grams)
    bands: int | None = None  # bands/rows default to the optimum for the threshold and weights
    rows: int | None = None
    # weights of missed pairs above / candidates below the threshold when picking bands x
    # rows: verification drops false candidates, so misses are the costlier error
    fp_weight: float = 0.1
    fn_weight: float = 0.9
    verify: bool = True  # drop LSH candidate pairs whose signature similarity < threshold
    max_bucket: int = 100  # all pairs in a band bucket up to this size; beyond, each doc
                           # pairs with the next max_bucket - 1 (stats: capped_buckets)
    lowercase: bool = True  # shingle the lowercased text (case-only edits are duplicates)
    seed: int = 1
    # partitions of the distributed LSH shuffle (one task each per stage); null: one per
    # 2^23 (band key, document) rows, ~0.4 GB per task (docs/scale.md)
    partitions: int | None = None

    def __post_init__(self):
        check(0.0 < self.threshold < 1.0, "threshold", "must be in (0, 1)")
        check(self.partitions is None or self.partitions >= 1, "partitions", "must be >= 1 or null")
        check(self.num_perm >= 2, "num_perm", "must be >= 2")
        check(self.ngram >= 1, "ngram", "must be >= 1")
        check((self.bands is None) == (self.rows is None), "bands", "set bands and rows together")
        if self.bands is not None:
            check(self.bands * self.rows <= self.num_perm, "bands", "bands * rows must be <= num_perm")
        check(abs(self.fp_weight + self.fn_weight - 1.0) < 1e-9, "fp_weight",
              "fp_weight + fn_weight must be 1")
        check(self.max_bucket >= 2, "max_bucket", "must be >= 2")


@dataclass
class SubstringConfig:
    """Exact substring dedup (docs/dedup.md). mode driver: ~10 bytes per byte of one buffer
    (measured, docs/scale.md), a corpus above part_bytes runs part pairs (2 x part); mode
    shuffle: executor tasks, linear work, flat driver memory (docs/scale.md)."""
    min_bytes: int = 100  # K: repeated spans at least this long are removed
    min_chars_left: int = 20  # documents shorter than this after removal are dropped
    # mode driver: corpus bytes per suffix array; larger corpora run pairwise. null: the
    # largest that fits 70% of MemAvailable (/proc/meminfo) at 12 bytes per suffix-array byte
    part_bytes: int | None = None
    keep_layout_spans: bool = True  # repeated spans of only ASCII whitespace/punctuation stay
    # mode driver, both exact, same result: a hash table of windows (faster, less memory) or the
    # suffix array of google-research/deduplicate-text-datasets (docs/scale.md)
    method: Literal["hash", "suffix_array"] = "hash"
    # meta.domain values whose documents lose only whole repeated lines, and stay parseable
    # when they parsed as Python (dedup/snap.py); add e.g. markdown; [] cuts code mid-line
    line_domains: list[str] = field(default_factory=lambda: ["code"])
    # a line-domain document whose repeated spans cover more than this share of its bytes
    # is dropped whole (substring_code_repeated); null: never
    max_repeated_share: float | None = 0.5
    python_check: bool = True  # in line domains, a file that parsed as Python must still parse
    # shuffle: window hashes partitioned over executor tasks, linear work, flat driver memory
    # (dedup/substring_shuffle.py); driver: one process holds the corpus (part pairs when it
    # does not fit: quadratic); auto: driver while the input shards take at most
    # driver_max_bytes on disk, else shuffle. Same spans either way (docs/scale.md)
    mode: Literal["auto", "driver", "shuffle"] = "auto"
    driver_max_bytes: int = 32 << 20  # mode auto: the driver path up to this many shard bytes on disk
    # repeat tasks of the shuffle (bucket ranges); null: one per 2^25 windows (~300 MB each)
    partitions: int | None = None

    def __post_init__(self):
        check(self.min_bytes >= 4, "min_bytes", "must be >= 4")
        check(self.partitions is None or self.partitions >= 1, "partitions", "must be >= 1 or null")
        check(self.driver_max_bytes >= 0, "driver_max_bytes", "must be >= 0")
        check(self.max_repeated_share is None or 0.0 < self.max_repeated_share <= 1.0,
              "max_repeated_share", "must be in (0, 1], or null")
        check(self.min_chars_left >= 0, "min_chars_left", "must be >= 0")
        check(self.part_bytes is None or 1024 <= self.part_bytes <= (1 << 30) - 1, "part_bytes",
              "must be in [1024, 2^30 - 1] (two parts share one int32 suffix array), or null")


@dataclass
class TopicsConfig:
    """Topic clusters (topics.py); `downsample: auto` keeps only part of ad clusters and
    low-information clusters (Yi), measured with a shipped ad/spam term list and an
    information score; `weights` / `term_weights` set clusters by hand and win."""
    clusters: int = 20
    backend: Literal["tfidf", "embedding"] = "tfidf"  # embedding: pip install 'lmforge[embed]'
    embed_chars: int = 2000  # characters of a document embedded (the model reads 256 pieces)
    max_features: int = 50_000
    fit_docs: int = 50_000  # documents sampled to fit TF-IDF, k-means and the cluster scores
    samples_per_cluster: int = 5
    sample_chars: int = 300
    top_terms: int = 10
    weights: dict[int, float] = field(default_factory=dict)  # cluster id -> keep probability
    term_weights: dict[str, float] = field(default_factory=dict)  # top term -> keep probability
    downsample: Literal["auto", "none"] = "auto"  # auto: ad clusters kept at ad_keep, low-information ones at low_info_keep; none: only weights/term_weights
    ad_terms: str | None = None  # a term file ([lang] sections); None: the shipped list
    ad_terms_per_100: float = 1.0  # a document with this many ad terms per 100 words is ad-like
    ad_share: float = 0.5  # a cluster with this share of ad-like documents is an ad cluster
    ad_keep: float = 0.1  # keep probability of ad clusters
    min_information: float = 0.25  # a cluster's mean information below this is low-information
    low_info_keep: float = 0.5  # keep probability of low-information clusters
    seed: int = 0

    def __post_init__(self):
        check(self.clusters >= 1, "clusters", "must be >= 1")
        for k, w in self.weights.items():
            check(0.0 <= w <= 1.0, f"weights.{k}", "a keep probability must be in [0, 1] "
                  "(upsampling belongs to the training mixture)")
            check(0 <= k < self.clusters, f"weights.{k}", f"no cluster {k} (clusters={self.clusters})")
        for k, w in self.term_weights.items():
            check(0.0 <= w <= 1.0, f"term_weights.{k}", "a keep probability must be in [0, 1]")
        for name in ("ad_share", "ad_keep", "min_information", "low_info_keep"):
            v = getattr(self, name)
            check(0.0 <= v <= 1.0, name, f"must be in [0, 1], got {v}")
        check(self.ad_terms_per_100 > 0, "ad_terms_per_100", "must be > 0")
        check(self.embed_chars >= 1, "embed_chars", "must be >= 1")
        check(self.fit_docs >= 1, "fit_docs", "must be >= 1")
        if self.ad_terms is not None:
            import os

            check(os.path.isfile(self.ad_terms), "ad_terms", f"no such file: {self.ad_terms}")
        from .embed import check_backend

        check_backend(self.backend)


@dataclass
class DecontamConfig:
    """Remove training documents that contain evaluation items (decontam.py): a shared
    n-gram (GPT-3 / Llama: 13 words) or most of an item's shingles (edited copies)."""
    eval: list[str] = field(default_factory=list)  # eval files, folders or globs (jsonl: text or question+answer; txt: an item per line)
    ngram: int = 13  # units (lowercased words, CJK characters) per n-gram; shorter items use their length
    min_ngram: int = 8  # items with fewer units are not matched (counted as too short)
    shingle: int = 5  # word n-grams for the near-duplicate rule (as the MinHash step's)
    containment: float | None = 0.5  # share of an item's shingles in a document that removes it; null: n-grams only
    lowercase: bool = True  # compare lowercased text

    def __post_init__(self):
        check(self.ngram >= 1, "ngram", "must be >= 1")
        check(1 <= self.min_ngram <= self.ngram, "min_ngram", "must be in [1, ngram]")
        check(self.shingle >= 1, "shingle", "must be >= 1")
        check(self.containment is None or 0.0 < self.containment <= 1.0, "containment",
              "must be in (0, 1] or null")


@dataclass
class CodeConfig:
    """Skywork keeps only some JSON/YAML in code data: they are mostly data, not code."""
    json_yaml_keep: float = 0.1  # share of JSON/YAML files kept
    domain: str = "code"  # applies to documents whose meta.domain is this ("" = all)
    seed: int = 0

    def __post_init__(self):
        check(0.0 <= self.json_yaml_keep <= 1.0, "json_yaml_keep", "must be in [0, 1]")


@dataclass
class DataConfig:
    input: list[str] = field(default_factory=list)
    output: str = "runs/data"
    steps: list[StepName] = field(default_factory=lambda: ["filters", "minhash"])
    workers: int = 2  # local processes; with executor: ray and no ray_address, local Ray CPUs
    executor: Literal["local", "ray"] = "local"  # ray: per-shard tasks on a cluster (docs/scale.md)
    ray_address: str | None = None  # None: start a local Ray; "auto": join `ray start`'s cluster
    scratch: str = ""  # output URL (s3://...): local folder for the steps' work/ (default ~/.cache/lmforge/scratch)
    format: Literal["jsonl.zst", "parquet"] = "jsonl.zst"
    docs_per_shard: int = 20_000
    max_doc_bytes: int = 64 * 1024 * 1024
    text_field: str = "text"        # jsonl / parquet / csv: the key holding the text (The Stack: content)
    id_field: str = "id"            # ... the document id (none: "<file>:<line>")
    meta_fields: list[str] | None = None   # ... keys kept in meta (None: all the others)
    write_rejected: bool = True
    progress: bool = True
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    langid: LangidConfig = field(default_factory=LangidConfig)
    quality: QualityConfig | None = None  # required only when "quality" is a step
    minhash: MinhashConfig = field(default_factory=MinhashConfig)
    substring: SubstringConfig = field(default_factory=SubstringConfig)
    topics: TopicsConfig = field(default_factory=TopicsConfig)
    code: CodeConfig = field(default_factory=CodeConfig)
    decontam: DecontamConfig = field(default_factory=DecontamConfig)

    def __post_init__(self):
        check(len(self.input) > 0, "input", "give at least one input file or folder")
        check(len(set(self.steps)) == len(self.steps), "steps", "each step may appear once")
        check(self.workers >= 1, "workers", "must be >= 1")
        check(self.executor == "ray" or self.ray_address is None, "ray_address",
              "only used with executor: ray")
        if self.executor == "ray":
            import importlib.util

            from .executor import RAY_MISSING
            check(importlib.util.find_spec("ray") is not None, "executor", RAY_MISSING)
        check(not str(self.output).startswith("memory://") or (self.workers == 1 and self.executor == "local"),
              "output", "memory:// lives in one process: it needs workers: 1 and executor: local")
        check(self.docs_per_shard >= 1, "docs_per_shard", "must be >= 1")
        check(self.max_doc_bytes >= 1, "max_doc_bytes", "must be >= 1")
        check(bool(self.text_field), "text_field", "must name the key that holds the text")
        check("decontam" not in self.steps or bool(self.decontam.eval), "decontam.eval",
              "the decontam step needs eval files (e.g. decontam: {eval: [bench/*.jsonl]})")
        check("quality" not in self.steps or self.quality is not None, "quality",
              "the quality step needs a quality: section (e.g. {positive: [reference files]})")

    def fields(self):
        """How the readers find text, id and meta in jsonl / parquet / csv records."""
        from ..io.readers import Fields
        return Fields(self.text_field, self.id_field,
                      tuple(self.meta_fields) if self.meta_fields is not None else None)
