"""A tokenizer's own chat format: conversations -> token ids and a reply mask, through the
Jinja chat template its folder ships (`chat_template.jinja`, else tokenizer_config.json's
`chat_template`), so a Llama-3, Mistral or Gemma model is fine-tuned in the format it is
prompted with. ChatML (lmforge.align.chat_template, unchanged) stays the format of our own
tokenizers (their template renders exactly that ChatML) and of a tokenizer with ChatML tokens
and no template.

The template is rendered as transformers' `apply_chat_template` renders it (a sandboxed
Jinja environment with trim_blocks/lstrip_blocks, loop controls, `raise_exception`,
`strftime_now`, a `tojson` that does not escape HTML, and the tokenizer's special-token
strings bos_token, eos_token, ... as variables), and the text is encoded in one call with no
added special tokens (the template writes them), as apply_chat_template does.

Which tokens are targets:
- a template with `{% generation %}...{% endgeneration %}` blocks marks them itself: the
  tokens overlapping the k-th block belong to the k-th assistant message, the tokens that
  `apply_chat_template(..., return_assistant_tokens_mask=True)` marks;
- a template without them: the reply of assistant message i is the text that rendering
  messages[:i + 1] adds to messages[:i] rendered with the generation prompt (TRL's
  prompt/completion rule); both renders must be prefixes of the whole conversation's text,
  else the record is refused (a template that rewrites earlier turns, e.g. one that drops
  past reasoning, has no reply span to find).
`"weight": 0` replies and train_on "last"/"none" select among those spans as for ChatML.
"""
from __future__ import annotations

import json
import re
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from lmforge.align import chat_template as chatml
from lmforge.io.atomic import read_json_object

SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
# What a {% generation %} block renders around its text: no message holds these (NUL never
# reaches here from a JSON conversation without being escaped on purpose, and the name makes
# a clash deliberate); `_render` refuses a conversation that contains them.
MARK_START, MARK_END = "\x00lmforge-generation-start\x00", "\x00lmforge-generation-end\x00"
GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")


def read_template(tok_dir: str | Path) -> str | None:
    """The folder's chat template: chat_template.jinja (transformers 5 writes it), else
    tokenizer_config.json's chat_template (a string, or the "default" of a named list)."""
    d = Path(tok_dir)
    if (d / "chat_template.jinja").is_file():
        return (d / "chat_template.jinja").read_text(encoding="utf-8")
    cfg = _json(d / "tokenizer_config.json")
    t = cfg.get("chat_template")
    if isinstance(t, list):   # [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
        t = next((x.get("template") for x in t if isinstance(x, dict) and x.get("name") == "default"), None)
    return t if isinstance(t, str) and t.strip() else None


def _json(path: Path) -> dict:
    return read_json_object(path)   # a damaged file: DataError naming it


def special_strings(tok_dir: str | Path) -> dict[str, str]:
    """bos_token, eos_token, ... as strings (the variables transformers gives a template)."""
    d = Path(tok_dir)
    out: dict[str, str] = {}
    for src in (_json(d / "tokenizer_config.json"), _json(d / "special_tokens_map.json")):
        for k in SPECIAL_KEYS:
            v = src.get(k)
            v = v.get("content") if isinstance(v, dict) else v
            if isinstance(v, str) and k not in out:
                out[k] = v
    return out


@lru_cache(maxsize=16)
def _compile(template: str):
    import jinja2
    from jinja2 import nodes
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(Extension):
        """{% generation %}...{% endgeneration %}: records the character span it renders."""
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.CallBlock(self.call_method("_mark"), [], [], body).set_lineno(lineno)

        def _mark(self, caller):
            rv = caller()
            return f"{MARK_START}{rv}{MARK_END}"   # stripped (their positions kept) after rendering

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[Generation, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)


def _strip_marks(text: str) -> tuple[str, list[tuple[int, int]]]:
    """(text without the generation sentinels, the character spans they enclosed)."""
    out, spans, starts, pos = [], [], [], 0
    for piece in re.split(f"({re.escape(MARK_START)}|{re.escape(MARK_END)})", text):
        if piece == MARK_START:
            starts.append(pos)
        elif piece == MARK_END:
            spans.append((starts.pop(), pos))
        else:
            out.append(piece)
            pos += len(piece)
    return "".join(out), sorted(spans)


class ChatMLFormat:
    """Our tokenizers' format (lmforge.align.chat_template)."""
    kind = "chatml"

    def render(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        return chatml.render(messages, add_generation_prompt)

    def encode(self, tok, messages, train_on="all", add_generation_prompt=False):
        return chatml.encode_chat(tok, messages, train_on, add_generation_prompt)


class TemplateFormat:
    """A Jinja chat template rendered as transformers renders it (module doc)."""
    kind = "template"

    def __init__(self, template: str, special: dict[str, str]):
        self.template, self.special = template, dict(special)
        self.has_generation_markers = bool(GENERATION_TAG.search(template))

    def _render(self, messages, add_generation_prompt) -> tuple[str, list[tuple[int, int]]]:
        import jinja2
        msgs = [{"role": m["role"], "content": m["content"]} for m in messages]
        if any(MARK_START in m["content"] or MARK_END in m["content"] for m in msgs):
            raise ValueError("a message holds lmforge's generation-block sentinel text")
        try:
            text = _compile(self.template).render(messages=msgs, add_generation_prompt=add_generation_prompt,
                                                  tools=None, documents=None, **self.special)
        except jinja2.exceptions.TemplateError as e:
            raise ValueError(f"chat template: {e}") from None
        return _strip_marks(text)

    def render(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        return self._render(messages, add_generation_prompt)[0]

    def reply_spans(self, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
        """(text, one character span per assistant message, in order)."""
        text, marked = self._render(messages, False)
        n_replies = sum(m["role"] == "assistant" for m in messages)
        if self.has_generation_markers:
            if len(marked) != n_replies:
                raise ValueError(f"chat template: {len(marked)} generation blocks for {n_replies} assistant replies")
            return text, marked
        spans = []
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            before = self.render(messages[:i], add_generation_prompt=True)
            upto = self.render(messages[:i + 1])
            if not (upto.startswith(before) and text.startswith(upto)):
                raise ValueError(f"chat template: rendering messages[:{i + 1}] is not a prefix of the whole "
                                 f"conversation, so reply {i} cannot be located (add {{% generation %}} markers)")
            spans.append((len(before), len(upto)))
        return text, spans

    def encode(self, tok, messages, train_on="all", add_generation_prompt=False):
        """(ids int32 [n], target mask bool [n]); train_on as chat_template.encode_chat."""
        if train_on == "none" or not any(m["role"] == "assistant" for m in messages):
            text, spans = self.render(messages, add_generation_prompt), []
        else:
            if add_generation_prompt:
                raise ValueError("add_generation_prompt with trained replies")
            text, all_spans = self.reply_spans(messages)
            replies = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
            chosen = [k for k, i in enumerate(replies) if messages[i].get("weight", 1)]
            if train_on == "last":
                chosen = [k for k in chosen if k == len(replies) - 1]
            spans = [all_spans[k] for k in chosen]
        return chatml.encode_spans(tok, text, spans)


def has_chatml(tok) -> bool:
    return all(tok.token_to_id(t) is not None for t in (chatml.IM_START, chatml.IM_END))


PROBES = ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}],
          [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Sky?"},
           {"role": "assistant", "content": " Blue.\n"}, {"role": "user", "content": "Sure?"}])


def renders_chatml(fmt: TemplateFormat) -> bool:
    """The template writes exactly lmforge's ChatML (ours, CHATML_TEMPLATE and its older version,
    do): told by rendering, so this layer needs no tokenizer module."""
    try:
        return all(fmt.render(p, g) == chatml.render(p, g) for p in PROBES for g in (False, True))
    except ValueError:
        return False


def chat_format(tok_dir: str | Path, tok) -> ChatMLFormat | TemplateFormat | None:
    """The chat format of a tokenizer folder: ChatML when the vocabulary has the ChatML tokens
    and the template renders ChatML or there is none; else its own template; None when it has
    neither (a base tokenizer)."""
    template = read_template(tok_dir)
    fmt = None if template is None else TemplateFormat(template, special_strings(tok_dir))
    if has_chatml(tok) and (fmt is None or renders_chatml(fmt)):
        return ChatMLFormat()
    return fmt


def end_of_turn_id(fmt, tok) -> int | None:
    """The special token that closes an assistant reply in this format (<|im_end|>, Llama 3's
    <|eot_id|>, Gemma's <end_of_turn>, Mistral's </s>): the first special token the template
    writes after a reply's text. None when it writes none."""
    if fmt is None:
        return None
    probe = "Lmforge probe reply"
    try:
        text = fmt.render([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": probe}])
    except ValueError:
        return None
    at = text.find(probe)
    if at < 0:
        return None
    enc = tok.encode(text[at + len(probe):], add_special_tokens=False)
    special = {i for i, t in tok.get_added_tokens_decoder().items() if t.special}
    return next((i for i in enc.ids if i in special), None)
