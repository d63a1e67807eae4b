"""The instruction sets of longfails' long-SFT arms, built once per finding (work/sftdata) from
what the toy data has. The corpus has no long instructions, so they are made the way the
`longsft` stage makes them (lmforge.align.long_sft), from the token set's own documents
decoded back to text: several passages (about half the shortest context each), each headed
"Document k: TITLE", then a question only the context answers (quote the first sentence of Document k; which document holds a given
sentence; the value of a one-line fact hidden between the passages). Contexts are drawn to
fill a share of the long length (longfails.SETS["context"]) and a conversation is kept only
when, whole, it is between the shortest context and the long length: longer than the
pretraining length, inside the long one.

    long_train.jsonl       from the train split's documents (the pretraining text)
    long_heldout.jsonl     from the val split's documents (never trained on by any arm)
    short_heldout.jsonl    the val split's instruct documents ("User: ..." dialogs the encode
                           stage held out of pretraining) whose text no train document repeats,
                           parsed back into conversations
    general_long.jsonl     general conversations (corpus sft.jsonl less the held-out ones)
    general_permille.jsonl a larger draw of them, for the 1 per mille share
    stats.json             counts, lengths, tasks (written last: the set is complete)
"""
from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path

from lmforge.align.long_sft import Doc, build_long_conversations
from lmforge.config import ConfigError
from lmforge.io.atomic import read_json, write_json, write_jsonl
from lmforge.shards import TokenDataset, tokenizer_path

PASSAGE = 0.5           # documents are cut into passages of about this share of the shortest context (in
                        # tokens), so that a context holds a few of them; never under MIN_CHARS characters
MIN_CHARS = 240         # (the builder takes documents of 200+ characters)
INSTRUCT = "instruct"   # the corpus's dialogs as pretraining documents (corpus instruct_docs)
SALT = 7                # the builder's seed (fixed: every seed and arm trains on the same sets)
_TURN = re.compile(r"^(System|User|Assistant): ", re.M)
_ROLES = {"System": "system", "User": "user", "Assistant": "assistant"}


_ENDS = ("\n", "。", "！", "？", ". ", "! ", "? ", " ")     # where a passage may end, best first


def passages(text: str, title: str, size: int) -> list[Doc]:
    """A document as passages of about `size` characters, cut after a line end where there is
    one in the window's second half, else after a sentence end, else after a space (so a
    passage's first sentence is a sentence's beginning, not the tail of one)."""
    out, at = [], 0
    while at < len(text):
        end = min(len(text), at + size)
        if end < len(text):
            cuts = (text.rfind(e, at + size // 2, end) + len(e) for e in _ENDS)
            end = next((c for c in cuts if c > at + size // 2), end)
        piece = text[at:end].strip()
        if piece:
            out.append(Doc(f"{title}, part {len(out) + 1}", piece))
        at = end
    return out


def decoded(data: str, split: str, tok) -> list[tuple[str, str, int]]:
    """(domain, text, tokens) of every document of a token set's split, decoded with its tokenizer."""
    ds = TokenDataset(data, split)
    return [(ds.domain_names[int(ds.doc_domain[i])], tok.decode(ds.doc(i).tolist()), ds.doc_len(i))
            for i in range(ds.n_docs)]


def pool(docs: list[tuple[str, str, int]], passage_tokens: int) -> list[Doc]:
    """The passages of the non-dialog documents, each about `passage_tokens` long (by its
    document's characters per token)."""
    out = []
    for i, (d, text, n) in enumerate(docs):
        if d != INSTRUCT and n:
            out += passages(text, f"{d} text {i + 1}", max(MIN_CHARS, round(passage_tokens * len(text) / n)))
    return out


def parse_dialog(text: str) -> list[dict] | None:
    """A "User: ...\\nAssistant: ..." document (lmforge.stages.corpus.dialog_text) back into
    messages; None unless writing them out again gives the same text."""
    from lmforge.stages.corpus import dialog_text
    parts = _TURN.split(text)
    if parts[0] or len(parts) < 3:
        return None
    msgs = []
    for i in range(1, len(parts), 2):
        content = parts[i + 1]
        if i + 2 < len(parts):
            content = content[:-1] if content.endswith("\n") else content
        msgs.append({"role": _ROLES[parts[i]], "content": content})
    return msgs if dialog_text(msgs) == text else None


def scorable(msgs: list[dict], fits) -> bool:
    """A held-out conversation the SFT loader keeps whole: a non-empty reply in every assistant
    turn, at least one, and the whole within the length (`fits`)."""
    replies = [m["content"] for m in msgs if m["role"] == "assistant"]
    return bool(replies) and all(r.strip() for r in replies) and fits(msgs)


def long_set(docs: list[Doc], count: int, context: tuple[int, int], fits, n_tokens, seed: int) -> tuple[list, dict]:
    """`count` long conversations over `docs` whose whole conversation fits (`fits`)."""
    made, stats = build_long_conversations(docs, count * 4, context, n_tokens, seed)
    kept = [c for c in made if fits(c["messages"])][:count]
    for i, c in enumerate(kept):
        c["id"] = f"long-{i}"
    return kept, {**stats, "fit": len(kept)}


def build(ctx, out: Path, sizes: dict, long_len: int) -> dict[str, Path]:
    """The sets (see the module doc) under `out`; kept when already complete."""
    files = {k: out / f"{k}.jsonl" for k in ("long_train", "long_heldout", "short_heldout", "general_long",
                                             "general_permille")}
    done = (out / "stats.json").exists() and all(p.exists() for p in files.values())
    if done and read_json(out / "stats.json").get("sizes") == {k: list(v) if isinstance(v, tuple) else v
                                                               for k, v in sizes.items()}:
        return files
    from lmforge.align.chat_format import chat_format
    from lmforge.align.sft_data import iter_jsonl
    from lmforge.io.documents import ErrorSink
    from lmforge.stages.corpus import dialog_text
    from lmforge.tokenizer.train import load_tokenizer

    meta_tok = tokenizer_path(TokenDataset(ctx.cfg.data, "train").meta, ctx.cfg.data)
    if meta_tok is None:
        raise ConfigError(f"data: {ctx.cfg.data}/meta.json names no tokenizer that exists (longfails decodes "
                          "the documents to build its long instructions)")
    tok_dir = meta_tok.parent if meta_tok.suffix == ".json" else meta_tok
    tok = load_tokenizer(tok_dir)
    chat = chat_format(tok_dir, tok)

    def n_tokens(text: str) -> int:
        return len(tok.encode(text, add_special_tokens=False).ids)

    context = (round(sizes["context"][0] * long_len), round(sizes["context"][1] * long_len))

    def fits(msgs: list[dict]) -> bool:
        """The whole conversation is at least the shortest context and at most the long length."""
        return context[0] <= len(chat.encode(tok, msgs, "all")[0]) <= long_len

    val, train = decoded(ctx.cfg.data, "val", tok), decoded(ctx.cfg.data, "train", tok)
    passage = round(PASSAGE * context[0])
    long_train, st_train = long_set(pool(train, passage), sizes["long_train"], context, fits, n_tokens, SALT)
    long_held, st_held = long_set(pool(val, passage), sizes["long_heldout"], context, fits, n_tokens, SALT + 1)
    if not long_train or not long_held:
        raise ConfigError(f"data: no long instruction of {context[0]}-{context[1]} context tokens fits "
                          f"{long_len} tokens from {ctx.cfg.data} (train: {st_train}, val: {st_held})")
    # the corpus repeats some dialogs (planted duplicates): a held-out one must not also be a
    # training document, or pretraining has seen it
    seen = {t for d, t, _ in train if d == INSTRUCT}
    held_texts = [t for d, t, _ in val if d == INSTRUCT]
    unseen = [t for t in dict.fromkeys(held_texts) if t not in seen]
    short_held = [{"id": f"heldout-{i}", "messages": m} for i, m in enumerate(map(parse_dialog, unseen))
                  if m and scorable(m, lambda ms: len(chat.encode(tok, ms, "all")[0]) <= long_len)]
    if not short_held:
        raise ConfigError(f"data: {ctx.cfg.data} holds out no instruct dialog to score short replies on "
                          "(encode with the corpus's instruct documents and val_docs_per_domain > 0)")
    held = set(held_texts)
    sft_file = Path(ctx.cfg.corpus, "sft.jsonl")
    try:
        general = [r for _, _, r in iter_jsonl([str(sft_file)], ErrorSink(), Counter())
                   if isinstance(r.get("messages"), list) and dialog_text(r["messages"]) not in held]
    except FileNotFoundError as e:
        raise ConfigError(f"corpus: {e}") from None
    random.Random(SALT).shuffle(general)
    sets = {"long_train": long_train, "long_heldout": long_held, "short_heldout": short_held,
            "general_long": general[:sizes["general_long"]], "general_permille": general[:sizes["general_permille"]]}
    for k, rows in sets.items():
        write_jsonl(files[k], rows)
    write_json(out / "stats.json", {"sizes": sizes, "counts": {k: len(v) for k, v in sets.items()},
                                    "heldout_dialogs": len(held_texts), "heldout_dialogs_unseen": len(unseen),
                                    "general_available": len(general),
                                    "context_tokens": list(context), "long_len": long_len,
                                    "long_train": st_train, "long_heldout": st_held})
    return files


