"""SFT data curation: conversations as items, the funnel that counts every step, and the
simple steps (exact prompt dedup, score filters, per-source / per-task weights and caps).

An item is one conversation of the input with what curation learns about it (task,
source, score, cluster, where it came from). The funnel books each step like the data
pipeline's stats.json: for conversations and for UTF-8 bytes of their message contents,

    in + added = kept + sum(removed by reason)

and every removed conversation is kept aside with its reason (and a detail such as the
conversation it duplicates, or its score). Steps that need a model or another library
package (MinHash from lmforge.data, scorers from lmforge.eval) get it passed in by the
stage: this module only decides what is kept.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lmforge.align.chat_template import message_error, n_trained
from lmforge.align.formats import to_sft
from lmforge.align.sft_data import iter_data
from lmforge.io.documents import ErrorSink

NO_SYSTEM = "(no system prompt)"


@dataclass
class Item:
    rec: dict                     # the input record as read (written back out with `curation` added)
    where: str                    # "file:line" of the input (or of the item it was made from)
    task: str = ""
    source: str = ""
    score: float | None = None
    cluster: int | None = None
    origin: str = "input"         # input | evolved | upsampled

    @property
    def messages(self) -> list[dict]:
        return self.rec["messages"]

    @property
    def prompt(self) -> str:
        """The user turns, joined: what prompt dedup and diversity clustering look at."""
        return "\n".join(m["content"] for m in self.messages if m["role"] == "user")

    @property
    def system(self) -> str:
        m = self.messages[0]
        return m["content"] if m["role"] == "system" else ""

    @property
    def nbytes(self) -> int:
        return sum(len(m["content"].encode("utf-8", "surrogatepass")) for m in self.messages)

    def out_record(self) -> dict:
        cur = {"task": self.task, "source": self.source, "origin": self.origin, "from": self.where}
        if self.score is not None:
            cur["score"] = round(float(self.score), 6)
        if self.cluster is not None:
            cur["cluster"] = int(self.cluster)
        return {**self.rec, "curation": cur}


def dotted(rec: dict, key: str):
    """rec["a"]["b"] for key "a.b"; None when any part is missing."""
    node = rec
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def label_of(rec: dict, key: str, path: Path) -> tuple[str, bool]:
    """(label, found): the record's value at `key` as a string, else the file's stem."""
    v = dotted(rec, key) if key else None
    if isinstance(v, (str, int, float)) and not isinstance(v, bool) and str(v).strip():
        return str(v).strip(), True
    return path.name.split(".")[0], False


# the keys a record's conversation may come from (lmforge.align.formats): replaced by `messages`
FORMAT_KEYS = ("messages", "conversations", "instruction", "input", "output", "history", "prompt", "completion",
               "system", "text", "tools")


# Why read_items drops a record: the reader's reasons (a line not UTF-8, over max_record_bytes, lost
# to damage in a compressed file, not JSON) and its own.
READ_REJECTS = ("malformed", "invalid_utf8", "too_long", "unreadable", "not_a_conversation", "no_assistant")


def read_items(paths: list, errors: ErrorSink, task_key: str = "task",
               source_key: str = "meta.source") -> tuple[list[Item], dict]:
    """Conversations of `paths` (files or DataFile entries, any SFT format of
    lmforge.align.formats) as items in OpenAI messages form; (items, read stats). Malformed
    records go to `errors`; a record that is plain text ("text" format, string prompt /
    completion) is no conversation to curate ("not_a_conversation"); one without a trained
    assistant reply is dropped ("no_assistant"). A record without a task (source) at its key
    gets its file's stem, counted as task_from_file."""
    stats: Counter = Counter({k: 0 for k in ("records", "kept", *READ_REJECTS, "task_from_file", "source_from_file")})
    ignored: Counter = Counter()
    items: list[Item] = []
    for p, n, rec, spec in iter_data(paths, errors, stats):
        raw = json.dumps(rec, ensure_ascii=False, default=str)
        try:
            msgs = to_sft(rec, spec, ignored).messages
            err = message_error(msgs) if msgs is not None else None
        except ValueError as e:
            err = str(e)
        if err:
            stats["malformed"] += 1
            errors.add(p, n, "malformed", raw=raw, detail=err)
            continue
        why = "not_a_conversation" if msgs is None else "no_assistant" if n_trained(msgs) == 0 else None
        if why:
            stats[why] += 1
            errors.add(p, n, why, raw=raw, detail="plain text, not a conversation" if msgs is None
                       else "no assistant reply to learn from")
            continue
        task, t_found = label_of(rec, task_key, p)
        source, s_found = label_of(rec, source_key, p)
        stats["task_from_file"] += not t_found
        stats["source_from_file"] += not s_found
        stats["kept"] += 1
        out = {k: v for k, v in rec.items() if k not in FORMAT_KEYS} | {"messages": msgs}
        items.append(Item(out, f"{p}:{n}", task, source))
    assert stats["kept"] + sum(stats[k] for k in READ_REJECTS) == stats["records"], stats
    if ignored:
        stats["ignored_keys"] = dict(ignored)
    return items, dict(stats)


# ------------------------------------------------------------------ the funnel


@dataclass
class Drop:
    item: Item
    reason: str
    detail: str = ""


@dataclass
class StepResult:
    kept: list[Item]
    dropped: list[Drop] = field(default_factory=list)
    added: list[Item] = field(default_factory=list)     # new items (also in `kept`), by item.origin
    details: dict = field(default_factory=dict)         # distributions before/after, parameters
    modified: dict[str, int] = field(default_factory=dict)  # reason -> bytes a kept item gained (0 docs)


def _count(items, key=lambda i: i) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for it in items:
        r = out.setdefault(key(it), [0, 0])
        r[0] += 1
        r[1] += (it.item if isinstance(it, Drop) else it).nbytes
    return out


def step_stats(name: str, before: list[Item], res: StepResult) -> dict:
    """The step's stats: in + added = kept + removed (conversations and bytes). Bytes a step
    adds to kept conversations are booked under `added` with 0 conversations."""
    removed = _count(res.dropped, lambda d: d.reason)
    added = _count(res.added, lambda i: i.origin)
    for reason, nbytes in res.modified.items():   # e.g. a system prompt given to a conversation
        added.setdefault(reason, [0, 0])[1] += nbytes
    s = {"step": name,
         "in": {"docs": len(before), "bytes": sum(i.nbytes for i in before)},
         "added": {k: {"docs": d, "bytes": b} for k, (d, b) in sorted(added.items())},
         "kept": {"docs": len(res.kept), "bytes": sum(i.nbytes for i in res.kept)},
         "removed": {k: {"docs": d, "bytes": b} for k, (d, b) in sorted(removed.items())},
         "details": res.details}
    for unit in ("docs", "bytes"):
        lhs = s["in"][unit] + sum(v[unit] for v in s["added"].values())
        rhs = s["kept"][unit] + sum(v[unit] for v in s["removed"].values())
        assert lhs == rhs, f"step {name}: in + added != kept + removed ({unit}: {lhs} != {rhs})"
    return s


def drop_record(d: Drop) -> dict:
    return {"reason": d.reason, "detail": d.detail, "from": d.item.where, "task": d.item.task,
            "source": d.item.source, "record": d.item.out_record()}


def by(items: list[Item], attr: str) -> dict[str, int]:
    """Counts of items per value of `attr` (task, source, system, cluster), largest first."""
    c = Counter(str(getattr(i, attr)) if attr != "system" else (i.system or NO_SYSTEM) for i in items)
    return dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))


# ------------------------------------------------------------------ steps


_WS = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Exact-duplicate key: case-folded, whitespace collapsed."""
    return _WS.sub(" ", text.casefold()).strip()


def prompt_key(item: Item) -> str:
    # no user turn (a system prompt and a reply): the whole conversation is the key
    return normalise(item.prompt) if item.prompt.strip() else normalise(json.dumps(item.messages))


def exact_dedup(items: list[Item]) -> StepResult:
    """Drop conversations whose prompt (user turns, normalised) was seen before; the first stays."""
    seen: dict[str, str] = {}
    kept, dropped = [], []
    for it in items:
        k = prompt_key(it)
        if k in seen:
            dropped.append(Drop(it, "exact_duplicate", f"same prompt as {seen[k]}"))
        else:
            seen[k] = it.where
            kept.append(it)
    return StepResult(kept, dropped)


def mask_step(items: list[Item], keep: np.ndarray, reason: str, detail: str = "") -> StepResult:
    """Keep items[i] where keep[i] (e.g. MinHash's first-of-cluster mask)."""
    assert len(keep) == len(items)
    return StepResult([i for i, k in zip(items, keep) if k],
                      [Drop(i, reason, detail) for i, k in zip(items, keep) if not k])


def score_filter(items: list[Item], threshold: float | None, top_share: float | None) -> StepResult:
    """Keep items scoring >= threshold, and (then) the best `top_share` of each task.

    Within a task, ties at the boundary are broken by input order (stable sort)."""
    kept, dropped = [], []
    for it in items:
        if threshold is not None and it.score < threshold:
            dropped.append(Drop(it, "low_score", f"score {it.score:.4f} < threshold {threshold}"))
        else:
            kept.append(it)
    if top_share is not None and top_share < 1.0:
        keep_ids: set[int] = set()
        for task in {i.task for i in kept}:
            group = [i for i in kept if i.task == task]
            n_keep = max(1, round(top_share * len(group)))
            order = sorted(range(len(group)), key=lambda k: -group[k].score)
            keep_ids |= {id(group[k]) for k in order[:n_keep]}
        dropped += [Drop(i, "below_top_share", f"score {i.score:.4f} not in the top {top_share:.0%} of "
                                               f"task {i.task}") for i in kept if id(i) not in keep_ids]
        kept = [i for i in kept if id(i) in keep_ids]
    scores = [i.score for i in items]
    details = {"threshold": threshold, "top_share": top_share,
               "score_quantiles": {q: float(np.quantile(scores, q)) for q in (0.0, 0.1, 0.5, 0.9, 1.0)}
               if scores else {}}
    return StepResult(kept, dropped, details=details)


def order_by_priority(items: list[Item], seed: int) -> list[int]:
    """Indices, best first: by score when items are scored, else a seeded shuffle."""
    rng = np.random.default_rng(seed)
    noise = rng.random(len(items))
    if all(i.score is not None for i in items):
        return sorted(range(len(items)), key=lambda k: (-items[k].score, noise[k]))
    return [int(k) for k in np.argsort(noise, kind="stable")]


def weigh(items: list[Item], attr: str, weights: dict[str, float], caps: dict[str, int],
          seed: int) -> StepResult:
    """Per-`attr` (source or task) weights and caps (StableLM 2 mixes several public sets).

    A weight w < 1 keeps round(w * n) of that group (best scored first, else a seeded
    draw); w > 1 repeats the group: floor(w) full copies plus the best remainder
    (Index: tasks short of data are supplemented). A cap then bounds the group's count.
    Groups not named keep weight 1 and no cap."""
    groups: dict[str, list[Item]] = {}
    for it in items:
        groups.setdefault(getattr(it, attr), []).append(it)
    keep: set[int] = set()
    dropped, added = [], []
    for g, members in groups.items():
        w, cap = weights.get(g, 1.0), caps.get(g)
        order = [members[k] for k in order_by_priority(members, seed)]
        n = len(members)
        wanted = round(w * n)
        target = wanted if cap is None else min(wanted, cap)
        keep |= {id(it) for it in order[:target]}
        why = f"{attr}_cap" if cap is not None and wanted > cap else f"{attr}_weight"
        dropped += [Drop(it, why, f"{attr} {g}: weight {w}, cap {cap}: {min(target, n)} of {n} kept")
                    for it in members if id(it) not in keep]
        for k in range(max(0, target - n)):   # w > 1: whole copies, then the best part of one more
            src = order[k % n]
            added.append(Item(src.rec, src.where, src.task, src.source, src.score, src.cluster, "upsampled"))
    kept = [it for it in items if id(it) in keep] + added
    details = {f"{attr}_before": by(items, attr), f"{attr}_after": by(kept, attr),
               "weights": weights, "caps": caps}
    return StepResult(kept, dropped, added, details)
