"""SFT conversations: jsonl -> tokenized, filtered, packed rows.

Input: data files of conversations in any of the formats of lmforge.align.formats (OpenAI
`messages`, ShareGPT, Alpaca, TRL prompt/completion, plain text; detected per record or
named per file), e.g. `{"messages": [{"role", "content"}...]}` as in the default corpus's
sft.jsonl. Optional `"class"` (C-RLFT source class) is read when asked for.

Every line ends up in exactly one bucket of the stats (never silently dropped):
  kept                conversations trained on (or held out for validation: `val`)
  malformed           not JSON / not a valid conversation -> rejects.jsonl with file + line
  invalid_utf8        a line that is not UTF-8 -> rejects.jsonl
  empty_reply         an assistant message with no text -> rejects.jsonl
  no_assistant        nothing to learn from
  too_many_turns      more than `max_turns` assistant replies (StableLM 2 drops > 8)
  too_long            longer than the context (`seq_len`) once tokenized, or a line over
                      `max_record_bytes` (never read whole: rejects.jsonl gets its line and start)
  unreadable          the line lost to damage in a .jsonl.gz / .jsonl.zst file (lmforge.io.lines)

Memory per record is bounded before tokenizing: a line over `max_record_bytes` (default
MAX_RECORD_BYTES, 16 MiB) is skipped in chunks, and a conversation whose characters alone
need more than `seq_len` tokens (no token of the vocabulary covers more than its longest
entry's characters) is `too_long` without being tokenized: tokenizing a 1 MB record took
~0.9 GB, and only ever to throw it away.
  unknown_class       (C-RLFT) a class with no configured weight

Packing: whole conversations are put into rows of `seq_len` tokens in a shuffled order
(next-fit: a conversation that does not fit starts a new row; the tail is padding); with
packing off, each conversation is a row of its own (padded).
Each conversation keeps its own document id, so attention and position ids restart at
it, exactly as for pretraining documents (Index-1.9B's reset masks apply to SFT too).
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lmforge.align.chat_template import encode_chat, encode_pieces, message_error, n_trained, n_turns
from lmforge.align.formats import DataFile, as_data_files, iter_array_records, to_sft
from lmforge.io.documents import ErrorSink
from lmforge.io.jsonl import iter_records

MAX_RECORD_BYTES = 16 << 20   # the default byte cap per record (line) of conversation files


@dataclass
class Conversation:
    ids: np.ndarray      # int32 [n]
    mask: np.ndarray     # bool [n]: token is a target
    cls: int = 0         # C-RLFT class index


def iter_jsonl(paths: list[str], errors: ErrorSink, stats: Counter, max_record_bytes: int = MAX_RECORD_BYTES):
    """(file, line number, record dict) for each parseable line; bad lines go to `errors`.

    Lines are read as bytes (lmforge.io.jsonl): invalid UTF-8 (`invalid_utf8`), and JSON that
    is broken, nested too deeply or holds a 5000-digit number (`malformed`), cost that line
    only, and a byte-order mark does not cost the first one. .jsonl.gz / .jsonl.zst are
    decompressed; a line over `max_record_bytes` is `too_long`, the part of a compressed file
    lost to damage `unreadable`, both with the line."""
    for path in paths:
        p = Path(path)
        if p.is_dir():   # (a `datasets` save_to_disk folder is read before this: iter_data)
            raise FileNotFoundError(f"{path}: a folder, not a data file: name its .jsonl / .json / .parquet files")
        if not p.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        for n, raw, rec, reason, detail in iter_records(p, max_record_bytes):
            stats["records"] += 1
            if reason is None and not isinstance(rec, dict):
                reason, detail = "malformed", "not a JSON object"
            if reason is not None:
                reason = reason if reason in ("invalid_utf8", "too_long", "unreadable") else "malformed"
                stats[reason] += 1
                errors.add(p, n, reason, raw=raw, detail=detail)
                continue
            yield p, n, rec


def empty_reply(msgs: list[dict]) -> bool:
    """An assistant message with no text: nothing to learn, and a sign of broken data."""
    return any(m["role"] == "assistant" and not m["content"].strip() for m in msgs)


def iter_data(entries: list[str | DataFile], errors: ErrorSink, stats: Counter,
              max_record_bytes: int = MAX_RECORD_BYTES):
    """(file, line or item number, record, its DataFile) for .jsonl(.gz/.zst), .json arrays,
    .parquet, `datasets` .arrow files and save_to_disk folders (lmforge.io.arrow):
    max_record_bytes bounds a JSON line or a .json array's item (neither is held whole when over
    it); parquet and arrow are read by record batch."""
    from lmforge.io.arrow import dataset_files, is_dataset_dir

    for spec in as_data_files(entries):
        p = Path(spec.path)
        if is_dataset_dir(p):
            records = (r for f in dataset_files(p) for r in iter_array_records(f, errors, stats, max_record_bytes))
        elif p.suffix in (".json", ".parquet", ".arrow"):
            if not p.is_file():
                raise FileNotFoundError(f"{spec.path}: no such file")
            records = iter_array_records(p, errors, stats, max_record_bytes)
        else:
            records = iter_jsonl([spec.path], errors, stats, max_record_bytes)
        for path, n, rec in records:
            yield path, n, rec, spec


def _longest_token(tok) -> int:
    """Characters in the vocabulary's longest entry: no token covers more characters of a text
    (byte-level entries are one character per byte, and a byte is at most one character)."""
    cached = getattr(tok, "_lmforge_longest_token", None)
    if cached is None:
        cached = max((len(t) for t in tok.get_vocab(with_added_tokens=True)), default=1) or 1
        try:
            tok._lmforge_longest_token = cached
        except AttributeError:   # a tokenizer type that takes no attributes: recomputed
            pass
    return cached


def surely_too_long(tok, texts, seq_len: int) -> bool:
    """True when the texts' characters alone need more than seq_len tokens: the record can be
    dropped without tokenizing it (the memory of tokenizing grows with the record)."""
    return sum(len(t) for t in texts) > seq_len * _longest_token(tok)


def add_class_tag(msgs: list[dict], tag: str) -> list[dict]:
    """C-RLFT condition: the class tag opens the system message (one is added if absent)."""
    if msgs[0]["role"] == "system":
        return [{**msgs[0], "content": f"{tag}\n{msgs[0]['content']}"}, *msgs[1:]]
    return [{"role": "system", "content": tag}, *msgs]


def load_conversations(paths: list[str], tok, seq_len: int, max_turns: int, errors: ErrorSink,
                       system_prompt: str | None = None, classes: dict[str, int] | None = None,
                       progress: bool = False, path_classes: dict[str, str] | None = None,
                       tag_format: str | None = None, eos_id: int | None = None,
                       max_record_bytes: int = MAX_RECORD_BYTES, chat=None) -> tuple[list[Conversation], dict]:
    """Tokenize and filter; returns (conversations, stats). max_turns 0 = no limit.

    C-RLFT: `classes` maps class name -> index; a record's class is its "class" key, else
    `path_classes[its file]`. With `tag_format` (e.g. "<class:{name}>") the class tag is
    put at the start of the system message, so the model sees its condition.
    `paths`: file paths or DataFile entries (lmforge.align.formats); `eos_id` ends plain-text
    records (format text / string prompt-completion); `chat` is the tokenizer's own chat format
    (lmforge.align.chat_format), None = ChatML. A conversation its template refuses is malformed.
    """
    stats: Counter = Counter({k: 0 for k in ("records", "kept", "malformed", "invalid_utf8", "empty_reply",
                                             "no_assistant", "too_many_turns", "too_long",
                                             *(["unknown_class"] if classes is not None else []))})
    ignored: Counter = Counter()
    out: list[Conversation] = []
    for p, n, rec, spec in tqdm(iter_data(paths, errors, stats, max_record_bytes), desc="sft data", unit="conv",
                                disable=not progress):
        try:
            item = to_sft(rec, spec, ignored)
            err = message_error(item.messages) if item.messages is not None else None
        except ValueError as e:
            err = str(e)
        if err:
            stats["malformed"] += 1
            errors.add(p, n, "malformed", raw=json.dumps(rec, ensure_ascii=False, default=str), detail=err)
            continue
        if item.messages is not None and empty_reply(item.messages):
            stats["empty_reply"] += 1
            errors.add(p, n, "empty_reply", raw=json.dumps(rec, ensure_ascii=False, default=str),
                       detail="an assistant reply is empty")
            continue
        msgs = item.messages
        if msgs is not None:
            if system_prompt and msgs[0]["role"] != "system":
                msgs = [{"role": "system", "content": system_prompt}, *msgs]
            turns = n_turns(msgs)
            if n_trained(msgs) == 0:
                stats["no_assistant"] += 1
                continue
            if max_turns and turns > max_turns:
                stats["too_many_turns"] += 1
                continue
        cls = 0
        if classes is not None:
            name = rec.get("class", (path_classes or {}).get(str(p)))
            if name not in classes:
                stats["unknown_class"] += 1
                errors.add(p, n, "unknown_class", raw=json.dumps(rec, ensure_ascii=False, default=str)[:2000],
                           detail=f"class {name!r} not in {sorted(classes)}")
                continue
            cls = classes[name]
            if tag_format and msgs is not None:
                msgs = add_class_tag(msgs, tag_format.format(name=name))
        texts = [m["content"] for m in msgs] if msgs is not None else [t for t, _ in item.pieces]
        if surely_too_long(tok, texts, seq_len):
            stats["too_long"] += 1
            continue
        if msgs is not None:
            try:
                ids, mask = chat.encode(tok, msgs, "all") if chat is not None else encode_chat(tok, msgs, "all")
            except ValueError as e:   # the tokenizer's own template refuses it (e.g. Gemma: no system role)
                stats["malformed"] += 1
                errors.add(p, n, "malformed", raw=json.dumps(rec, ensure_ascii=False, default=str), detail=str(e))
                continue
        else:   # plain text / a TRL string prompt-completion: no chat template
            ids, mask = encode_pieces(tok, item.pieces, eos_id)
        if len(ids) > seq_len:
            stats["too_long"] += 1
            continue
        stats["kept"] += 1
        out.append(Conversation(ids, mask, cls))
    dropped = sum(v for k, v in stats.items() if k not in ("records", "kept"))
    assert stats["kept"] + dropped == stats["records"], stats  # every line is in one bucket
    result = dict(stats)
    if ignored:   # extra message keys (e.g. `name`): ignored, never a reject
        result["ignored_keys"] = dict(ignored)
    return out, result


def split_val(convs: list[Conversation], fraction: float, seed: int) -> tuple[list, list]:
    """(train, val): a seeded random `fraction` held out (at least one when fraction > 0)."""
    if fraction <= 0 or len(convs) < 2:
        return convs, []
    perm = np.random.default_rng([seed, 7]).permutation(len(convs))
    n_val = min(max(1, round(fraction * len(convs))), len(convs) - 1)
    val = set(perm[:n_val].tolist())
    return ([c for i, c in enumerate(convs) if i not in val], [c for i, c in enumerate(convs) if i in val])


def pack(lengths: np.ndarray, order: np.ndarray, seq_len: int) -> list[list[int]]:
    """Next-fit packing of conversations (in `order`) into rows of at most seq_len tokens."""
    rows, cur, used = [], [], 0
    for i in order.tolist():
        n = int(lengths[i])
        if cur and used + n > seq_len:
            rows.append(cur)
            cur, used = [], 0
        cur.append(i)
        used += n
    if cur:
        rows.append(cur)
    return rows


def plan_rows(convs: list[Conversation], seq_len: int, epochs: int, seed: int,
              packing: bool = True) -> list[list[int]]:
    """All rows of the whole run, epoch after epoch, each epoch in a fresh (seed, epoch) order.
    packing=False (Index-32K's packing ablation): one conversation per row, the rest padding,
    in the same order (the same conversations per epoch, so more rows)."""
    lengths = np.asarray([len(c.ids) for c in convs])
    rows = []
    for epoch in range(epochs):
        order = np.random.default_rng([seed, epoch]).permutation(len(convs))
        rows.extend(pack(lengths, order, seq_len) if packing else [[i] for i in order.tolist()])
    return rows


def build_row(convs: list[Conversation], idxs: list[int], seq_len: int, pad_id: int,
              class_weights: list[float] | None = None) -> dict[str, np.ndarray]:
    """One packed row: input_ids, labels (-100 = no target), position_ids, doc_ids (-1 = pad)
    and, for C-RLFT, token_weight (the class weight of each target) and token_class (its class
    index, -1 = no target)."""
    ids = np.full(seq_len, pad_id, dtype=np.int64)
    labels = np.full(seq_len, -100, dtype=np.int64)
    pos = np.zeros(seq_len, dtype=np.int64)
    doc = np.full(seq_len, -1, dtype=np.int64)
    weight = np.zeros(seq_len, dtype=np.float32)
    token_class = np.full(seq_len, -1, dtype=np.int64)
    at = 0
    for k, i in enumerate(idxs):
        c = convs[i]
        n = len(c.ids)
        ids[at:at + n] = c.ids
        # position t predicts token t+1 when that token is a target (never across conversations)
        lab = np.where(c.mask[1:], c.ids[1:], -100)
        labels[at:at + n - 1] = lab
        pos[at:at + n] = np.arange(n)
        doc[at:at + n] = k
        if class_weights is not None:
            weight[at:at + n - 1] = np.where(c.mask[1:], class_weights[c.cls], 0.0)
            token_class[at:at + n - 1] = np.where(c.mask[1:], c.cls, -1)
        at += n
    row = {"input_ids": ids, "labels": labels, "position_ids": pos, "doc_ids": doc}
    if class_weights is not None:
        row["token_weight"] = weight
        row["token_class"] = token_class
    return row


def n_targets(convs: list[Conversation], idxs: list[int]) -> int:
    return int(sum(int(convs[i].mask[1:].sum()) for i in idxs))
