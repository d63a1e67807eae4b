"""The data formats users already have, read into our conversations and preference pairs.

A data entry is a path (the format is detected per record by its keys) or a small mapping,
LLaMA-Factory's `dataset_info` in small:

    data:
      - chats.jsonl                                  # auto
      - {path: alpaca_data.json, format: alpaca}
      - {path: qa.jsonl, format: alpaca, columns: {instruction: question, output: answer}}
      - {path: sg.jsonl, format: sharegpt, tags: {user: human, assistant: bot}}

SFT formats (detected in this order when `format: auto`):
  messages           {"messages": [{"role", "content"}...]} (OpenAI). content may be a list of
                     text parts [{"type": "text", "text"}] (joined with nothing between them, as
                     the chat template does); other parts (images) are refused. `developer` is a
                     system message. An assistant message's `weight` (0 or 1, OpenAI
                     fine-tuning) is honoured: weight 0 = context, not trained on. Other keys
                     (`name`, `refusal`, ...) are ignored and counted in stats (`ignored_keys`).
  sharegpt           {"conversations": [{"from": "human"|"gpt"|"system", "value"}...], "system"?}
  alpaca             {"instruction", "input"?, "output", "system"?, "history"?: [[q, a]...]};
                     the user turn is instruction + "\\n" + input (LLaMA-Factory)
  prompt_completion  TRL: strings -> plain text, loss on the completion (+ eos) only;
                     message lists -> a conversation, loss on the completion's replies only
  text               {"text"}: plain text trained on whole (+ eos), no chat template
Tool roles and a non-empty `tools` key are refused: ChatML here has no tool-call format.

DPO (TRL's preference forms, string or conversational, OpenAI or ShareGPT messages):
  explicit           {"prompt", "chosen", "rejected"}
  implicit           {"chosen", "rejected"}: the prompt is their shared beginning (TRL's
                     extract_prompt: the messages before the final reply, which must be the
                     same in both; for strings the common prefix, cut before a space). Message
                     lists that carry the conversation give the prompt also when a `prompt` key
                     is there (UltraFeedback-binarized has both), as TRL does.
`columns` renames keys (ours -> the file's); `tags` sets the message keys and role names
(role, content, user, assistant, system). Files: .jsonl, a .json array, or .parquet.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from lmforge.config import check
from lmforge.io.jsonarray import iter_json_array

SFT_FORMATS = ("auto", "messages", "sharegpt", "alpaca", "prompt_completion", "text")
DPO_FORMATS = ("auto", "explicit", "implicit")
COLUMNS = ("messages", "system", "tools", "instruction", "input", "output", "history", "prompt", "completion",
           "text", "chosen", "rejected", "score_chosen", "score_rejected", "class")
TAGS = ("role", "content", "user", "assistant", "system")
_OPENAI_TAGS = {"role": "role", "content": "content", "user": "user", "assistant": "assistant", "system": "system"}
_SHAREGPT_TAGS = {"role": "from", "content": "value", "user": "human", "assistant": "gpt", "system": "system"}
_TOOL_ROLES = ("tool", "function", "function_call", "observation", "ipython")


@dataclass
class DataFile:
    """One data file and how to read its records (see module doc)."""
    path: str = ""
    format: str = "auto"
    columns: dict[str, str] = field(default_factory=dict)   # our key -> the file's key
    tags: dict[str, str] = field(default_factory=dict)      # message keys and role names

    def __post_init__(self):
        check(bool(self.path), "path", "required (the data file)")
        check(self.format in SFT_FORMATS + DPO_FORMATS, "format",
              f"{self.format!r} is not one of {', '.join(dict.fromkeys(SFT_FORMATS + DPO_FORMATS))}")
        for k in self.columns:
            check(k in COLUMNS, f"columns.{k}", f"not one of {', '.join(COLUMNS)}")
        for k in self.tags:
            check(k in TAGS, f"tags.{k}", f"not one of {', '.join(TAGS)}")


def as_data_files(entries) -> list[DataFile]:
    return [e if isinstance(e, DataFile) else DataFile(path=str(e)) for e in entries]


# ---------------------------------------------------------------- reading files


def without_nulls(value):
    """A columnar row with its null keys dropped, at every depth: Arrow gives every struct all the
    keys any row has (a message without `weight` reads back `"weight": None`), where JSON lines
    simply lack them."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def iter_array_records(path: Path, errors, stats: Counter, max_record_bytes: int | None = None
                       ) -> Iterator[tuple[Path, int, dict]]:
    """(file, record number, dict) of a .json array, a .parquet file or a `datasets` .arrow file
    (lmforge.io.arrow); bad items go to errors. A .json array is read one item at a time
    (lmforge.io.jsonarray): an item over `max_record_bytes` characters is `too_long` and never
    held whole; parquet and arrow are read by record batch."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq
        items = ((n, without_nulls(r), None) for n, r in enumerate(
            (r for b in pq.ParquetFile(path).iter_batches(batch_size=1024) for r in b.to_pylist()), 1))
    elif path.suffix == ".arrow":
        from lmforge.io.arrow import iter_arrow_rows
        items = ((n, without_nulls(r), None) for n, r in enumerate(iter_arrow_rows(path), 1))
    else:
        items = iter_json_array(path, max_record_bytes or (1 << 62))
    for n, rec, problem in items:
        stats["records"] += 1
        if problem is not None:
            reason = "too_long" if problem == "too_long" else "malformed"
            stats[reason] += 1
            errors.add(path, n or None, reason,
                       detail=(f"item over max_record_bytes {max_record_bytes}" if reason == "too_long"
                               else f"not a JSON array of records: {problem.removeprefix('malformed: ')}"))
            continue
        if not isinstance(rec, dict):
            stats["malformed"] += 1
            errors.add(path, n, "malformed", raw=rec, detail="not a JSON object")
            continue
        yield path, n, rec


# ---------------------------------------------------------------- messages


def _content(value, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        out = []
        for j, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ValueError(f"{where}.content[{j}]: only text parts are supported (got {kind!r})")
            out.append(part["text"])
        return "".join(out)
    raise ValueError(f"{where}.content is not a string or a list of text parts")


def _tags_for(items: list, fmt: str, tags: dict) -> tuple[dict, bool]:
    """(message keys and role names, whether they are ShareGPT's)."""
    sharegpt = fmt == "sharegpt"
    if "role" not in tags and items and isinstance(items[0], dict):   # the other style's keys: follow them
        if "from" in items[0] and "role" not in items[0]:
            sharegpt = True
        elif "role" in items[0] and "from" not in items[0]:
            sharegpt = False
    return {**(_SHAREGPT_TAGS if sharegpt else _OPENAI_TAGS), **tags}, sharegpt


def normalise_messages(items, fmt: str, tags: dict, ignored: Counter, where: str = "messages") -> list[dict]:
    """[{role, content[, weight]}] from OpenAI or ShareGPT items; raises ValueError."""
    if not isinstance(items, list) or not items:
        raise ValueError(f"{where} is not a non-empty list")
    t, sharegpt = _tags_for(items, fmt, tags)
    roles = {t["user"]: "user", t["assistant"]: "assistant", t["system"]: "system"}
    if not sharegpt and "developer" not in roles:
        roles["developer"] = "system"   # OpenAI's newer name for the system message
    out = []
    for i, m in enumerate(items):
        at = f"{where}[{i}]"
        if not isinstance(m, dict):
            raise ValueError(f"{at} is not an object")
        role = m.get(t["role"])
        if role in _TOOL_ROLES or m.get("tool_calls") or m.get("function_call"):
            raise ValueError(f"{at}: tool messages and tool calls are not supported")
        if not isinstance(role, str) or role not in roles:   # (a list or mapping: no dict key)
            raise ValueError(f"{at}.{t['role']} {role!r} is not one of {sorted(roles)}")
        msg = {"role": roles[role], "content": _content(m.get(t["content"]), at)}
        if "weight" in m:
            if m["weight"] not in (0, 1) or isinstance(m["weight"], bool) or msg["role"] != "assistant":
                raise ValueError(f"{at}.weight: 0 or 1, on assistant messages only (OpenAI fine-tuning)")
            msg["weight"] = int(m["weight"])
        for k, v in m.items():
            if k not in (t["role"], t["content"], "weight") and v is not None:
                ignored[k] += 1
        out.append(msg)
    return out


# ---------------------------------------------------------------- SFT records


@dataclass
class SFTRecord:
    """A conversation (messages) or plain text pieces [(text, trained_on)]: exactly one is set."""
    messages: list[dict] | None = None
    pieces: list[tuple[str, bool]] | None = None


def _get(rec: dict, key: str, columns: dict):
    return rec.get(columns.get(key, key))


def detect_sft(rec: dict, columns: dict) -> str:
    def has(k):
        return _get(rec, k, columns) is not None
    if has("messages"):
        return "messages"
    if "conversations" in rec and "messages" not in columns:
        return "sharegpt"
    if has("instruction") and has("output"):
        return "alpaca"
    if has("prompt") and has("completion"):
        return "prompt_completion"
    if isinstance(_get(rec, "text", columns), str):
        return "text"
    keys = ", ".join(sorted(map(str, rec))[:8])
    raise ValueError(f"unknown record shape (keys: {keys}); expected messages, conversations, instruction/output, "
                     f"prompt/completion or text, or set `format` and `columns` for this file")


def _with_system(msgs: list[dict], system) -> list[dict]:
    if system in (None, ""):
        return msgs
    if not isinstance(system, str):
        raise ValueError("system is not a string")
    return msgs if msgs and msgs[0]["role"] == "system" else [{"role": "system", "content": system}, *msgs]


def _alpaca(rec: dict, columns: dict) -> list[dict]:
    inst, inp, out = (_get(rec, k, columns) for k in ("instruction", "input", "output"))
    for k, v in (("instruction", inst), ("output", out)):
        if not isinstance(v, str):
            raise ValueError(f"{columns.get(k, k)} is not a string")
    if inp not in (None, "") and not isinstance(inp, str):
        raise ValueError(f"{columns.get('input', 'input')} is not a string")
    msgs = []
    for j, turn in enumerate(_get(rec, "history", columns) or []):
        if not (isinstance(turn, (list, tuple)) and len(turn) == 2 and all(isinstance(x, str) for x in turn)):
            raise ValueError(f"history[{j}] is not a [query, response] pair of strings")
        msgs += [{"role": "user", "content": turn[0]}, {"role": "assistant", "content": turn[1]}]
    user = "\n".join(x for x in (inst, inp) if x)
    msgs += [{"role": "user", "content": user}, {"role": "assistant", "content": out}]
    return _with_system(msgs, _get(rec, "system", columns))


def _prompt_completion(rec: dict, columns: dict, fmt: str, tags: dict, ignored: Counter) -> SFTRecord:
    prompt, completion = _get(rec, "prompt", columns), _get(rec, "completion", columns)
    if isinstance(prompt, str) and isinstance(completion, str):
        return SFTRecord(pieces=[(prompt, False), (completion, True)])
    if isinstance(prompt, list) and isinstance(completion, list):
        p = normalise_messages(prompt, fmt, tags, ignored, "prompt")
        c = normalise_messages(completion, fmt, tags, ignored, "completion")
        # TRL: the loss is on the completion only; replies inside the prompt are context
        p = [{**m, "weight": 0} if m["role"] == "assistant" else m for m in p]
        return SFTRecord(messages=p + c)
    raise ValueError("prompt and completion must both be strings or both be message lists")


def to_sft(rec: dict, spec: DataFile, ignored: Counter) -> SFTRecord:
    """One record of any SFT format as a conversation or text pieces; raises ValueError."""
    if _get(rec, "tools", spec.columns) not in (None, "", [], "[]"):
        raise ValueError("tools are not supported (ChatML here has no tool-call format)")
    fmt = spec.format if spec.format != "auto" else detect_sft(rec, spec.columns)
    if fmt in DPO_FORMATS:
        raise ValueError(f"format {fmt!r} is a preference format, not an SFT one")
    if fmt in ("messages", "sharegpt"):
        key = spec.columns.get("messages", "conversations" if fmt == "sharegpt" else "messages")
        msgs = normalise_messages(rec.get(key), fmt, spec.tags, ignored, key)
        return SFTRecord(messages=_with_system(msgs, _get(rec, "system", spec.columns)))
    if fmt == "alpaca":
        return SFTRecord(messages=_alpaca(rec, spec.columns))
    if fmt == "prompt_completion":
        return _prompt_completion(rec, spec.columns, fmt, spec.tags, ignored)
    text = _get(rec, "text", spec.columns)
    if not isinstance(text, str) or not text:
        raise ValueError(f"{spec.columns.get('text', 'text')} is not a non-empty string")
    return SFTRecord(pieces=[(text, True)])


# ---------------------------------------------------------------- preference pairs


def _common_prefix(a: str, b: str) -> int:
    """TRL's extract_prompt for strings: up to the first difference, cut before a space."""
    i = 0
    for i in range(min(len(a), len(b))):
        if a[i] != b[i]:
            if i > 0 and a[i - 1] == " ":
                i -= 1
            break
    else:
        i = min(len(a), len(b))
    return i


def _split_conversation(value, key: str, fmt: str, tags: dict, ignored: Counter) -> list[dict]:
    msgs = normalise_messages(value, fmt, tags, ignored, key)
    if msgs[-1]["role"] != "assistant":
        raise ValueError(f"{key}: the last message must be the assistant reply")
    return msgs


def to_pair(rec: dict, spec: DataFile, ignored: Counter) -> dict:
    """{prompt, chosen, rejected, score_chosen, score_rejected} with prompt as messages and
    chosen/rejected as reply strings, from TRL's explicit or implicit forms; raises ValueError."""
    cols, fmt = spec.columns, ("sharegpt" if spec.tags.get("role") == "from" else "messages")
    prompt, chosen, rejected = (_get(rec, k, cols) for k in ("prompt", "chosen", "rejected"))
    if spec.format not in ("auto", "explicit", "implicit"):
        raise ValueError(f"format {spec.format!r} is an SFT format, not a preference one")
    if spec.format == "explicit" and prompt is None:
        raise ValueError(f"{cols.get('prompt', 'prompt')}: missing (format: explicit)")
    if spec.format == "implicit":
        prompt = None
    for k, v in (("chosen", chosen), ("rejected", rejected)):
        if not isinstance(v, (str, list)):
            raise ValueError(f"{cols.get(k, k)}: missing or not a string / message list")
    if type(chosen) is not type(rejected):
        raise ValueError("chosen and rejected must both be strings or both be message lists")
    if isinstance(chosen, str):
        if prompt is None:   # implicit, string: the shared beginning is the prompt
            i = _common_prefix(chosen, rejected)
            prompt, chosen, rejected = chosen[:i], chosen[i:], rejected[i:]
            if not prompt.strip():
                raise ValueError("chosen and rejected share no prompt (no common beginning)")
    else:
        c = _split_conversation(chosen, "chosen", fmt, spec.tags, ignored)
        r = _split_conversation(rejected, "rejected", fmt, spec.tags, ignored)
        if prompt is None or len(c) > 1 or len(r) > 1:   # the conversation is in chosen/rejected
            if c[:-1] != r[:-1]:
                raise ValueError("chosen and rejected differ before their last message (implicit prompt: "
                                 "everything but the final reply must be shared)")
            prompt = c[:-1]   # (UltraFeedback also has a string `prompt`: the same first user turn)
        chosen, rejected = c[-1]["content"], r[-1]["content"]
    if isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}]
    else:
        prompt = normalise_messages(prompt, fmt, spec.tags, ignored, "prompt")
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected,
            "score_chosen": _get(rec, "score_chosen", cols), "score_rejected": _get(rec, "score_rejected", cols)}
