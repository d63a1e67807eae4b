"""Compression report: characters and bytes per token, by domain and by language.

For each group (every domain, every language, every (domain, language) pair, and all
documents) it counts documents, characters, UTF-8 bytes and tokens (no special tokens
added), and, when a baseline tokenizer is given, the baseline's tokens and the ratio
baseline tokens / our tokens (> 1: ours compresses better). Printed as a table and saved
as json.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lmforge.config import check
from lmforge.io.atomic import write_json

ALL = "*"


@dataclass
class TokenizerReportConfig:
    """`lmforge tokenizer report`."""
    tokenizer: str = ""
    inputs: list[str] = field(default_factory=list)
    baseline: str = ""       # another tokenizer folder or tokenizer.json (optional)
    out: str = ""            # json path; default: <tokenizer folder>/report.json
    max_docs: int = 0        # 0 = all
    batch_docs: int = 256
    default_domain: str = "default"

    def __post_init__(self):
        check(bool(self.tokenizer), "tokenizer", "required (a tokenizer folder)")
        check(len(self.inputs) > 0, "inputs", "give at least one document file or folder")
        check(self.max_docs >= 0, "max_docs", "must be >= 0 (0 = all)")
        check(self.batch_docs >= 1, "batch_docs", "must be >= 1")


def _groups(domain: str, lang: str) -> list[tuple[str, str]]:
    return [(domain, lang), (domain, ALL), (ALL, lang), (ALL, ALL)]


def _count(tok, texts: list[str]) -> list[int]:
    fast = getattr(tok, "encode_batch_fast", tok.encode_batch)
    return [len(e.ids) for e in fast(texts, add_special_tokens=False)]


def compression_report(tokenizer, docs, baseline=None, batch_docs: int = 256,
                       default_domain: str = "default") -> list[dict]:
    """Rows of counts and ratios; `tokenizer`/`baseline` are `tokenizers.Tokenizer` objects.

    Literal special-token strings in the text are counted as text (as `encode` does).
    """
    toks = [t for t in (tokenizer, baseline) if t is not None]
    for t in toks:
        t.encode_special_tokens = True
    acc: dict[tuple[str, str], dict] = {}

    def flush(batch):
        counts = [_count(t, [d[2] for d in batch]) for t in toks]
        for j, (dom, lang, text) in enumerate(batch):
            for key in _groups(dom, lang):
                a = acc.setdefault(key, {"docs": 0, "chars": 0, "bytes": 0, "tokens": 0, "baseline_tokens": 0})
                a["docs"] += 1
                a["chars"] += len(text)
                a["bytes"] += len(text.encode("utf-8"))
                a["tokens"] += counts[0][j]
                if baseline is not None:
                    a["baseline_tokens"] += counts[1][j]

    batch = []
    for doc in docs:
        meta = doc.get("meta") or {}
        batch.append((str(meta.get("domain") or default_domain), str(meta.get("lang") or "?"), doc["text"]))
        if len(batch) >= batch_docs:
            flush(batch)
            batch = []
    if batch:
        flush(batch)
    rows = []
    for (dom, lang), a in sorted(acc.items(), key=lambda kv: (kv[0][0] == ALL, kv[0][0], kv[0][1] == ALL, kv[0][1])):
        row = {"domain": dom, "lang": lang, **a,
               "chars_per_token": a["chars"] / a["tokens"] if a["tokens"] else 0.0,
               "bytes_per_token": a["bytes"] / a["tokens"] if a["tokens"] else 0.0}
        if baseline is not None:
            bt = a["baseline_tokens"]
            row["baseline_chars_per_token"] = a["chars"] / bt if bt else 0.0
            row["baseline_bytes_per_token"] = a["bytes"] / bt if bt else 0.0
            row["ratio"] = bt / a["tokens"] if a["tokens"] else 0.0
        else:
            del row["baseline_tokens"]
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    has_base = bool(rows) and "ratio" in rows[0]
    head = ["domain", "lang", "docs", "MB", "tokens", "chars/tok", "bytes/tok"]
    if has_base:
        head += ["base chars/tok", "base bytes/tok", "base tok / ours"]
    lines = [head]
    for r in rows:
        line = [r["domain"], r["lang"], str(r["docs"]), f"{r['bytes'] / 1e6:.3f}", str(r["tokens"]),
                f"{r['chars_per_token']:.3f}", f"{r['bytes_per_token']:.3f}"]
        if has_base:
            line += [f"{r['baseline_chars_per_token']:.3f}", f"{r['baseline_bytes_per_token']:.3f}",
                     f"{r['ratio']:.3f}x"]
        lines.append(line)
    widths = [max(len(l[i]) for l in lines) for i in range(len(head))]
    fmt = lambda l: "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(l, widths)))
    return "\n".join([fmt(lines[0]), "  ".join("-" * w for w in widths)] + [fmt(l) for l in lines[1:]])


def run_report(cfg: TokenizerReportConfig) -> tuple[list[dict], Path, str]:
    """Compute the report over `cfg.inputs`, save json, return (rows, json path, the input
    account line). Bad input lines go to a rejects file beside the json (REPORT-rejects.jsonl),
    as every stage keeps them, instead of one log warning each."""
    from itertools import islice

    from lmforge.io.account import Account
    from lmforge.io.documents import ErrorSink
    from lmforge.io.readers import iter_documents

    from .train import load_tokenizer, tokenizer_file

    tok_file = tokenizer_file(cfg.tokenizer)
    tok = load_tokenizer(tok_file)
    base = load_tokenizer(cfg.baseline) if cfg.baseline else None
    out = Path(cfg.out) if cfg.out else tok_file.parent / "report.json"
    errors = ErrorSink(out.with_name(out.stem + "-rejects.jsonl"))   # close() replaces or removes an old one
    docs = iter_documents(cfg.inputs, errors)
    if cfg.max_docs:
        docs = islice(docs, cfg.max_docs)
    try:
        rows = compression_report(tok, docs, base, cfg.batch_docs, cfg.default_domain)
    finally:
        errors.close()
    kept = next((r["docs"] for r in rows if (r["domain"], r["lang"]) == ("*", "*")), 0)   # the total row
    account = Account("tokenizer report", kept + errors.total, kept, dict(errors.counts), errors.path, "documents")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, {"tokenizer": str(tok_file), "baseline": cfg.baseline or None,
                     "reader_errors": dict(errors.counts), "rows": rows})
    return rows, out, account.line()
