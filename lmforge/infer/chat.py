"""Multi-turn chat with a KV cache kept across turns, and the terminal loop.

The conversation is rendered in ChatML, or in the tokenizer's own chat format when it has one
(`chat=`, lmforge.align.chat_format: a Llama 3 / Gemma model from a HF folder is prompted in
its own template and also stops at that template's turn end).

Each turn renders the whole conversation with the ChatML template (lmforge.align.
chat_template.render, the text tokenizer_config.json's chat_template produces), encodes
it, and feeds the model only what the cache does not hold yet: the cache keeps the ids
it was fed (previous prompt + generated reply), the new ids are compared with them, the
cache is cut back to the longest common prefix and the rest is prefilled. Usually that
is just the tail "<|im_end|>\\n<|im_start|>user\\n...<|im_start|>assistant\\n"; if the
reply re-encodes differently from the sampled ids (BPE is not unique), the cut lands
earlier and the result is still exactly the recomputed one.

When the conversation no longer fits the window (max_seq_len - max_new_tokens), the
prompt is middle-truncated (lmforge.truncate.truncate_middle: the system prompt and the
latest turns survive) and prefilled from scratch.

With Dynamic NTK rope scaling, cached keys keep the base of the step that wrote them (as
in transformers' cache); a full recomputation past the original length would differ.
"""
from __future__ import annotations

import sys
from typing import Callable, TextIO

import torch

from lmforge.align.chat_template import render
from lmforge.truncate import truncate_middle
from lmforge.workers import Terminated
from lmforge.infer.generate import check_sampling_args, _TextStream, as_tokenizer, default_stop_ids, sample_next
from lmforge.model.attention import KVCache


def own_chat_format(path, tok) -> tuple[object, list[int]]:
    """(chat format, extra stop ids) of the tokenizer beside checkpoint `path`: its own template
    with its eos and turn end as stops; (None, []) for ChatML (ours) or a tokenizer with none."""
    from lmforge.align.chat_format import chat_format, end_of_turn_id
    from lmforge.model.load import resolve_checkpoint, tokenizer_dir_of
    from lmforge.tokenizer.train import tokenizer_info

    tok_dir = tokenizer_dir_of(resolve_checkpoint(path))
    fmt = chat_format(tok_dir, tok) if tok_dir is not None else None
    if fmt is None or fmt.kind == "chatml":
        return None, []
    ids = [end_of_turn_id(fmt, tok), tokenizer_info(tok_dir, tok).get("eos_id")]
    return fmt, [i for i in ids if i is not None]


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class ChatSession:
    """A conversation with a model: `reply(text)` streams and returns the assistant's answer.

    `messages` is the ChatML history ({"role", "content"} dicts, system first if given);
    `cached_ids` the token ids whose keys/values the cache holds; `last_prefill` how many
    ids the last turn had to feed (the rest came from the cache).
    """

    def __init__(self, model, tokenizer, system: str | None = None, max_new_tokens: int = 256,
                 temperature: float = 0.7, top_k: int = 0, top_p: float = 0.9, seed: int | None = None,
                 stop: list[str] | None = None, reuse_cache: bool = True, chat=None,
                 stop_ids: list[int] | None = None):
        check_sampling_args(max_new_tokens, temperature, top_k, top_p)
        self.model, self.tok = model.eval(), as_tokenizer(tokenizer)
        self.system, self.max_new_tokens = system, max_new_tokens
        self.temperature, self.top_k, self.top_p, self.stop = temperature, top_k, top_p, list(stop or [])
        self.reuse_cache = reuse_cache
        self.render = chat.render if chat is not None else render
        self.stop_ids = set(default_stop_ids(self.tok)) | set(stop_ids or ())
        device = next(model.parameters()).device
        self.generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
        self.window = model.cfg.max_seq_len
        if self.max_new_tokens >= self.window:
            raise ValueError(f"max_new_tokens {max_new_tokens} leaves no room for a prompt in the "
                             f"{self.window}-token window")
        self.cache = KVCache.for_model(model, 1, self.window)
        self.reset()

    def reset(self) -> None:
        """Forget the conversation (the system message stays)."""
        self.messages: list[dict] = [{"role": "system", "content": self.system}] if self.system else []
        self.cached_ids: list[int] = []
        self.cache.truncate(0)
        self.last_prefill = 0
        self.interrupted = False        # the last reply was stopped by Ctrl-C

    def prompt_ids(self) -> list[int]:
        text = self.render(self.messages, add_generation_prompt=True)
        return self.tok.encode(text, add_special_tokens=False).ids

    @torch.inference_mode()
    def reply(self, user: str, on_text: Callable[[str], None] | None = None) -> str:
        self.messages.append({"role": "user", "content": user})
        ids = self.prompt_ids()
        budget = self.window - self.max_new_tokens
        keep = 0
        if len(ids) > budget:
            ids = truncate_middle(ids, budget)
        elif self.reuse_cache:
            keep = min(common_prefix(self.cached_ids, ids), len(ids) - 1)   # feed >= 1 token for logits
        self.cache.truncate(keep)
        self.cached_ids = list(ids)
        self.last_prefill = len(ids) - keep
        stream = _TextStream(self.tok, self.stop, on_text)
        new: list[int] = []
        self.interrupted = False
        try:
            logits = self.model.forward_cached(torch.tensor([ids[keep:]], device=self.cache.k.device),
                                               self.cache, last_only=True)[:, -1]
            for step in range(self.max_new_tokens):
                t = int(sample_next(logits, self.temperature, self.top_k, self.top_p, self.generator)[0])
                if t in self.stop_ids:
                    break
                new.append(t)
                if stream.update(new) or step == self.max_new_tokens - 1:
                    break
                logits = self.model.forward_cached(torch.tensor([[t]], device=self.cache.k.device),
                                                   self.cache, last_only=True)[:, -1]
                self.cached_ids.append(t)
        except Terminated:                 # `kill`: the chat ends (the CLI says so, exit 130)
            raise
        except KeyboardInterrupt:          # Ctrl-C: this reply ends, the chat goes on
            return self._stopped(stream)
        text = stream.finish(new)
        self.messages.append({"role": "assistant", "content": text})
        return text

    def _stopped(self, stream) -> str:
        """Ctrl-C during a reply: the reply ends where it was, the conversation goes on. What was
        shown is kept as the assistant's turn (nothing shown: the user's turn is dropped too).
        The cache may hold a half-written step, so the next turn recomputes the prompt."""
        self.interrupted = True
        self.cached_ids = []
        self.cache.truncate(0)
        text = stream.text[:stream.shown]
        if text:
            self.messages.append({"role": "assistant", "content": text})
        else:
            self.messages.pop()
        return text


COMMANDS = {
    "/help": "list these commands",
    "/reset": "forget the conversation (the system message and character stay)",
    "/exit": "quit (so do /quit, Ctrl-D and Ctrl-C at the prompt)",
}
HELP = "type a message; /help lists the commands; Ctrl-C stops a reply"
COMMAND_HELP = "\n".join(f"  {c:7s} {what}" for c, what in COMMANDS.items()) + \
    "\n  Ctrl-C during a reply stops it; the conversation goes on"


def _is_tty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):   # closed or not a file
        return False


def chat_loop(session: ChatSession, inp: TextIO = sys.stdin, out: TextIO = sys.stdout,
              prompt: str = "> ") -> int:
    """Read user lines from `inp`, stream the replies to `out`, until /exit or end of input."""
    out.write(f"lmforge chat ({HELP})\n")
    while True:
        out.write(prompt)
        out.flush()
        try:
            line = inp.readline()
        except KeyboardInterrupt:          # Ctrl-C at the prompt: leave, as Ctrl-D does
            out.write("\n")
            return 0
        if not line:                       # end of input (a pipe ran out, or Ctrl-D)
            out.write("\n")
            return 0
        text = line.rstrip("\r\n")
        if not _is_tty(inp):               # a terminal echoes what was typed; a pipe does not
            out.write(text + "\n")
        cmd = text.strip()
        if not cmd:
            continue
        if cmd in ("/exit", "/quit"):    # /quit: what many chat programs use
            return 0
        if cmd == "/help":
            out.write(COMMAND_HELP + "\n")
            continue
        if cmd == "/reset":
            session.reset()
            out.write("(conversation reset)\n")
            continue
        if cmd.startswith("/"):
            out.write(f"unknown command {cmd}; /help lists the commands\n")
            continue

        def emit(piece: str) -> None:
            out.write(piece)
            out.flush()
        session.reply(text, emit)
        out.write(" [stopped]\n" if session.interrupted else "\n")
