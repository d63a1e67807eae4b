"""generate / chat for a new user: a run or recipe run folder picks its last model (and says so),
characters split across tokens never show as U+FFFD, Ctrl-C stops a reply and keeps the chat,
/help lists the commands, exported weights get the umask's permissions."""
import argparse
import io
import json
import os
import shutil
import stat

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from lmforge.infer.chat import ChatSession, chat_loop
from lmforge.infer.generate import generate
from lmforge.infer.pick import pick_model
from lmforge.model import ModelConfig, Transformer
from lmforge.tokenizer.train import load_tokenizer, vocab_len
from test_eval_helpers import make_tokenizer, tiny_run

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TEXT = "床前明月光，疑是地上霜。ok"


class ByteTokens:
    """A byte-level BPE tokenizer whose tokens are arbitrary byte chunks: any split of a text's
    UTF-8 bytes (inside characters, across two characters) is a valid id sequence."""

    def __init__(self):
        self.byte_char = dict(zip(range(256), self._bytes_to_unicode()))
        self.vocab = {self.byte_char[b]: b for b in range(256)}
        self.vocab.update({s: 256 + i for i, s in enumerate(SPECIALS)})
        self.tok = self._build()

    @staticmethod
    def _bytes_to_unicode() -> list[str]:
        """GPT-2's byte -> printable character table (what the ByteLevel decoder inverts)."""
        bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
            list(range(ord("®"), ord("ÿ") + 1))
        cs, n = bs[:], 0
        for b in range(256):
            if b not in bs:
                bs.append(b)
                cs.append(256 + n)
                n += 1
        return [chr(c) for _, c in sorted(zip(bs, cs))]

    def _build(self):
        tok = Tokenizer(models.BPE(vocab=dict(self.vocab), merges=[]))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        tok.decoder = decoders.ByteLevel()
        tok.add_special_tokens(SPECIALS)
        return tok

    def ids(self, chunks: list[bytes]) -> list[int]:
        """Ids of byte chunks (new multi-byte tokens added to the vocabulary as needed)."""
        out = []
        for c in chunks:
            piece = "".join(self.byte_char[b] for b in c)
            if piece not in self.vocab:
                self.vocab[piece] = len(self.vocab)
            out.append(self.vocab[piece])
        self.tok = self._build()
        assert [self.tok.token_to_id(s) for s in SPECIALS] == [256, 257, 258]
        return out


def awkward_chunks(text: str) -> list[bytes]:
    """Cut the UTF-8 bytes 1, 2, 1, 3, 2, ... at a time: most cuts fall inside a character and
    several tokens hold the end of one character and the start of the next."""
    data, out, i, k = text.encode("utf-8"), [], 0, 0
    sizes = [1, 2, 1, 3, 2, 4]
    while i < len(data):
        n = sizes[k % len(sizes)]
        out.append(data[i:i + n])
        i, k = i + n, k + 1
    return out


class Scripted(torch.nn.Module):
    """A model that emits a fixed id script after whatever prompt it is given."""

    def __init__(self, script, vocab, window=512):
        super().__init__()
        self.cfg = ModelConfig(vocab_size=vocab, d_model=8, n_layers=1, n_heads=2, max_seq_len=window)
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.script, self.start = script, None

    def forward_cached(self, input_ids, cache, position_ids=None, valid=None, last_only=False):
        end = cache.length + input_ids.shape[1]
        if self.start is None:
            self.start = end
        k = end - self.start
        cache.advance(input_ids.shape[1])
        logits = torch.zeros(input_ids.shape[0], 1, self.cfg.padded_vocab_size)
        logits[:, :, self.script[min(k, len(self.script) - 1)]] = 10.0
        return logits


@pytest.fixture()
def split_script():
    bt = ByteTokens()
    chunks = awkward_chunks(TEXT)
    ids = bt.ids(chunks)
    broken = [c for c in chunks if c.decode("utf-8", errors="replace") != c.decode("utf-8", errors="ignore")]
    assert len(broken) >= 8          # the test is about split characters: most pieces are not whole
    return bt.tok, ids, chunks


def test_streamed_generation_never_shows_half_characters(split_script):
    tok, ids, _ = split_script
    eos = tok.token_to_id("<|endoftext|>")
    pieces = []
    out = generate(Scripted(ids + [eos], tok.get_vocab_size()), tok, ["x"], max_new_tokens=100,
                   on_token=lambda i, p: pieces.append(p))
    assert out == [TEXT] and "".join(pieces) == TEXT
    assert len(pieces) > 5 and not any("\ufffd" in p for p in pieces)
    # token by token, as the issue saw it, the same ids do show replacement characters
    assert any("\ufffd" in tok.decode([i]) for i in ids)


def test_cut_inside_a_character_drops_the_half_character(split_script):
    tok, ids, chunks = split_script
    for n in range(1, len(ids)):
        pieces = []
        out = generate(Scripted(ids, tok.get_vocab_size()), tok, ["x"], max_new_tokens=n,
                       on_token=lambda i, p: pieces.append(p))[0]
        assert out == b"".join(chunks[:n]).decode("utf-8", errors="ignore")   # the whole characters so far
        assert "".join(pieces) == out and "\ufffd" not in out


def test_chat_reply_streams_whole_characters(split_script):
    tok, ids, _ = split_script
    im_end = tok.token_to_id("<|im_end|>")
    session = ChatSession(Scripted(ids + [im_end], tok.get_vocab_size()), tok, max_new_tokens=100,
                          temperature=0.0)
    pieces = []
    assert session.reply("写一句诗", pieces.append) == TEXT
    assert "".join(pieces) == TEXT and not any("\ufffd" in p for p in pieces)


# ------------------------------------------------------------------ Ctrl-C and /help


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return load_tokenizer(make_tokenizer(tmp_path_factory.mktemp("tok")))


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=vocab_len(tok), d_model=64, n_layers=2, n_heads=4, max_seq_len=160)
    m = Transformer(cfg).eval()
    with torch.no_grad():   # never pick a special token: replies are never empty
        m.lm_head.weight[:4] = 0.0
        m.lm_head.weight[4:] *= 5.0
    return m


def fresh_reply(model, tok, messages, n):
    from lmforge.align.chat_template import render
    prompt = tok.encode(render(messages, add_generation_prompt=True), add_special_tokens=False).ids
    return generate(model, tok, [prompt], max_new_tokens=n)[0]


def test_ctrl_c_stops_the_reply_and_keeps_the_conversation(model, tok):
    session = ChatSession(model, tok, system="Be brief.", max_new_tokens=12, temperature=0.0)
    first = session.reply("hello there")
    shown = []

    def impatient(piece):
        if len(shown) == 2:
            raise KeyboardInterrupt
        shown.append(piece)

    stopped = session.reply("what is 12 + 30?", impatient)
    assert session.interrupted and stopped == "".join(shown) and stopped
    assert [m["role"] for m in session.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert session.messages[2]["content"] == first and session.messages[-1]["content"] == stopped
    # the chat goes on, and the next reply is exactly what a fresh model sees for that history
    expected = fresh_reply(model, tok, session.messages + [{"role": "user", "content": "and then?"}], 12)
    assert session.reply("and then?") == expected and not session.interrupted


def test_ctrl_c_before_the_first_token_drops_the_turn(model, tok, monkeypatch):
    session = ChatSession(model, tok, max_new_tokens=6, temperature=0.0)
    session.reply("hello there")
    before = list(session.messages)

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(model, "forward_cached", interrupted)
        assert session.reply("a long question") == ""
    assert session.interrupted and session.messages == before
    expected = fresh_reply(model, tok, before + [{"role": "user", "content": "again"}], 6)
    assert session.reply("again") == expected


class CtrlCOnce(io.StringIO):
    """A terminal whose user presses Ctrl-C while the second reply is streaming."""

    def __init__(self):
        super().__init__()
        self.prompts, self.fired = 0, False

    def isatty(self):
        return True

    def write(self, s):
        if s == "> ":
            self.prompts += 1
        elif self.prompts == 2 and not self.fired and s.strip():
            self.fired = True
            raise KeyboardInterrupt
        return super().write(s)


def test_chat_loop_help_and_ctrl_c(model, tok):
    session = ChatSession(model, tok, max_new_tokens=6, temperature=0.0)
    out = CtrlCOnce()
    class Typed(io.StringIO):          # typed at a terminal: not echoed again
        def isatty(self):
            return True
    assert chat_loop(session, Typed("/help\nhello there\nmore please\n"), out) == 0
    text = out.getvalue()
    for cmd in ("/help", "/reset", "/exit", "Ctrl-C"):
        assert cmd in text.split("> ", 2)[1]          # listed by /help
    assert "unknown command" not in text and "[stopped]" in text
    assert [m["role"] for m in session.messages] == ["user", "assistant"]   # the stopped turn showed nothing

    class CtrlCAtPrompt(io.StringIO):
        def readline(self, *a):
            raise KeyboardInterrupt
    assert chat_loop(session, CtrlCAtPrompt(), io.StringIO()) == 0


# ------------------------------------------------------------------ which model a folder means


def _cli(capsys, *argv):
    from lmforge.cli import export as cli
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(list(argv))
    code = args.func(args)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("run"), steps=2)


def test_run_and_recipe_folders_pick_their_last_model(run_dir, tmp_path, capsys, monkeypatch):
    step, note = pick_model(run_dir)
    assert step.name == "step-2" and "newest complete checkpoint" in note
    assert pick_model(step) == (step, None)

    recipe = tmp_path / "runs" / "r"
    shutil.copytree(run_dir, recipe / "pretrain")
    stages = [{"name": "pretrain", "kind": "pretrain", "out_dir": "runs/r/pretrain", "status": "done"},
              {"name": "eval", "kind": "eval", "out_dir": "runs/r/eval", "status": "done"},
              {"name": "export", "kind": "export", "out_dir": "runs/r/export", "status": "pending"}]
    (recipe / "recipe.json").write_text(json.dumps({"name": "r", "recipe": "r.yaml", "stages": stages}))
    (recipe / "eval").mkdir()
    monkeypatch.chdir(tmp_path)      # out_dirs as recorded, relative to where `lmforge run` ran
    got, note = pick_model("runs/r")
    assert got.parent.parent.name == "pretrain" and "stage pretrain (pretrain)" in note
    want = (recipe / "pretrain" / "checkpoints" / "step-2").resolve()
    assert got.resolve() == want
    monkeypatch.chdir(tmp_path.parent)   # elsewhere: the stage folders inside the run folder
    assert pick_model(recipe)[0].resolve() == want

    code, out, err = _cli(capsys, "export", str(recipe), str(recipe / "export"))
    assert code == 0 and "stage pretrain" in err
    stages[2]["status"] = "done"
    (recipe / "recipe.json").write_text(json.dumps({"name": "r", "recipe": "r.yaml", "stages": stages}))
    code, out, err = _cli(capsys, "generate", str(recipe), "--prompt", "Hello", "--max-new-tokens", "3")
    assert code == 0 and "exported model of stage export (export)" in err and out.startswith("Hello")
    assert len(err.strip().splitlines()) == 1

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "recipe.json").write_text(json.dumps({"recipe": "recipes/tiny.yaml", "stages": stages[1:2]}))
    with pytest.raises(FileNotFoundError, match="none of its stages has a model yet.*lmforge run recipes/tiny.yaml"):
        pick_model(empty)
    with pytest.raises(FileNotFoundError, match="no model found"):
        pick_model(tmp_path / "runs")


def test_export_of_a_hugging_face_folder_says_what_reads_one(run_dir, tmp_path, capsys):
    """`lmforge export HF_DIR OUT` (HF format) is refused naming what does read it, not as
    'no model found'; `--format gguf` reads the same folder."""
    from lmforge.cli import main
    hf = tmp_path / "hf"
    assert _cli(capsys, "export", str(run_dir), str(hf))[0] == 0
    with pytest.raises(FileNotFoundError, match="a Hugging Face folder.*--format gguf.*lmforge import"):
        pick_model(hf, hf=False)
    assert main(["export", str(hf), str(tmp_path / "again")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "no model found" not in err and "--format gguf" in err
    assert main(["export", str(hf), str(tmp_path / "m.gguf"), "--format", "gguf"]) == 0
    assert (tmp_path / "m.gguf").stat().st_size > 0


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_weights_get_the_same_permissions_as_other_files(tmp_path, capsys, umask):
    old = os.umask(umask)
    try:
        run = tiny_run(tmp_path, steps=1)
        out = tmp_path / "hf"
        code, _, _ = _cli(capsys, "export", str(run), str(out))
        assert code == 0
    finally:
        os.umask(old)
    want = 0o666 & ~umask
    files = [*out.iterdir(), *(run / "checkpoints").glob("step-*/*")]
    modes = {f"{f.parent.name}/{f.name}": stat.S_IMODE(f.stat().st_mode) for f in files if f.is_file()}
    assert "hf/model.safetensors" in modes and "step-1/model.safetensors" in modes
    assert set(modes.values()) == {want}, {k: oct(v) for k, v in modes.items()}


def test_kill_ends_the_chat_where_ctrl_c_only_ends_the_reply(model, tok):
    from lmforge.workers import Terminated
    session = ChatSession(model, tok, max_new_tokens=6, temperature=0.0)

    def killed(piece):
        raise Terminated("signal 15")

    with pytest.raises(Terminated):       # SIGTERM (sigterm_as_interrupt): the CLI exits 130
        session.reply("hello there", killed)
