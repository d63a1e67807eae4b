"""`lmforge chat`: ChatML history, KV cache reused across turns (== recomputation), streaming,
/reset and /exit, window overflow, driven through stdin."""
import argparse
import io

import pytest
import torch

from lmforge.align.chat_template import render
from lmforge.infer.chat import ChatSession, chat_loop, common_prefix
from lmforge.infer.generate import generate
from lmforge.model import ModelConfig, Transformer
from lmforge.tokenizer.train import load_tokenizer, vocab_len
from test_eval_helpers import make_tokenizer, tiny_run

TURNS = ["hello there", "what is 12 + 30?", "床前明月光"]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return load_tokenizer(make_tokenizer(tmp_path_factory.mktemp("tok")))


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=vocab_len(tok), d_model=64, n_layers=2, n_heads=4, n_kv_heads=2,
                      max_seq_len=160, rotary_pct=0.5)
    model = Transformer(cfg).eval()
    with torch.no_grad():   # never pick a special token (an empty reply would test nothing)
        model.lm_head.weight[:4] = 0.0
        model.lm_head.weight[4:] *= 5.0
    return model


class Recorder(io.StringIO):
    """stdout stand-in that keeps every write separately (to see the streaming)."""

    def __init__(self):
        super().__init__()
        self.writes = []

    def write(self, s):
        self.writes.append(s)
        return super().write(s)


def test_reply_equals_fresh_generation_and_history_accumulates(model, tok):
    session = ChatSession(model, tok, system="Be brief.", max_new_tokens=8, temperature=0.0)
    prev_prompt = []
    for user in TURNS:
        before = session.messages + [{"role": "user", "content": user}]
        prompt = tok.encode(render(before, add_generation_prompt=True), add_special_tokens=False).ids
        expected = generate(model, tok, [prompt], max_new_tokens=8)[0]
        pieces = []
        got = session.reply(user, pieces.append)
        assert got and got == expected and "".join(pieces) == got and len(pieces) > 1
        assert session.messages == before + [{"role": "assistant", "content": got}]
        # at least the previous turn's prompt came from the cache (the reply itself too when
        # it re-encodes to the sampled ids; a random model's stray bytes often do not)
        assert common_prefix(prev_prompt, prompt) >= len(prev_prompt) - 1
        assert session.last_prefill <= len(prompt) - common_prefix(prev_prompt, prompt) + 1
        assert session.cached_ids[:len(prompt)] == prompt
        prev_prompt = prompt
    assert [m["role"] for m in session.messages] == ["system"] + ["user", "assistant"] * len(TURNS)
    assert render(session.messages).startswith(
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhello there<|im_end|>\n<|im_start|>assistant\n")


def test_cache_reuse_equals_recompute_when_sampling(model, tok):
    kw = dict(max_new_tokens=6, temperature=1.0, top_k=50, top_p=0.95, seed=3)
    a, b = ChatSession(model, tok, **kw), ChatSession(model, tok, reuse_cache=False, **kw)
    for user in TURNS:
        assert a.reply(user) == b.reply(user)
    assert a.last_prefill < b.last_prefill


def test_reset_forgets_history(model, tok):
    session = ChatSession(model, tok, max_new_tokens=4, temperature=0.0)
    first = session.reply("hello there")
    session.reply("more")
    session.reset()
    assert session.messages == [] and session.cached_ids == [] and session.cache.length == 0
    assert session.reply("hello there") == first
    assert session.last_prefill == len(tok.encode(render([{"role": "user", "content": "hello there"}], True),
                                                  add_special_tokens=False).ids)


def test_overflowing_conversation_is_middle_truncated(model, tok):
    session = ChatSession(model, tok, max_new_tokens=8, temperature=0.0)   # window 160
    session.reply("The quick brown fox jumps over the lazy dog. " * 20)
    assert session.last_prefill == 160 - 8
    assert len(session.cached_ids) <= 160
    session.reply("and now?")                     # still over: recomputed, no error
    with pytest.raises(ValueError, match="window"):
        ChatSession(model, tok, max_new_tokens=160)


def test_chat_loop_commands_and_streaming(model, tok):
    session = ChatSession(model, tok, max_new_tokens=6, temperature=0.0)
    inp = io.StringIO("hello there\n\n/bogus\nwhat is 12 + 30?\n/reset\nhello there\n/exit\nnever read\n")
    out = Recorder()
    assert chat_loop(session, inp, out) == 0
    text = out.getvalue()
    assert "unknown command /bogus" in text and "(conversation reset)" in text
    assert inp.readline() == "never read\n"          # /exit stopped reading
    # the first and the post-reset replies are the same greedy answer, streamed in pieces
    replies = [m["content"] for m in session.messages if m["role"] == "assistant"]
    assert len(replies) == 1 and text.count(replies[0]) >= 2
    prompt_writes = [i for i, w in enumerate(out.writes) if w == "> "]
    assert prompt_writes[1] - prompt_writes[0] > 3     # reply arrived in several writes, then "\n"
    assert out.writes[prompt_writes[0] + 1] == "hello there\n"   # piped input is echoed after the prompt


def test_chat_loop_does_not_echo_a_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True
    out = io.StringIO()
    assert chat_loop(None, Tty("/help\n/exit\n"), out) == 0
    assert "/help\n" not in out.getvalue().split("> ", 1)[1][:6]   # the terminal already showed it


def test_cli_chat_reads_stdin(tmp_path, monkeypatch, capsys):
    from lmforge.cli import export as cli
    run_dir = tiny_run(tmp_path, steps=2)
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    monkeypatch.setattr("sys.stdin", io.StringIO("hi\nwhat now?\n"))     # ends without /exit: EOF quits
    args = parser.parse_args(["chat", str(run_dir), "--temperature", "0", "--max-new-tokens", "5",
                              "--system", "You are terse."])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("lmforge chat") and out.count("> ") >= 3
    monkeypatch.setattr("sys.stdin", io.StringIO("hi\n"))
    args = parser.parse_args(["chat", str(run_dir), "--max-new-tokens", "64"])   # window is 64
    assert args.func(args) == 2 and "window" in capsys.readouterr().err


def test_quit_leaves_like_exit():
    inp = io.StringIO("/quit\nnever read\n")
    assert chat_loop(None, inp, io.StringIO()) == 0
    assert inp.readline() == "never read\n"
