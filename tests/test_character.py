"""Character variant (issue 17 item 7): card, BM25 retrieval (jieba for Chinese), the
retrieved passage and the card's examples in the prompt, middle truncation to the window,
the `character` package stage, `lmforge chat/generate --character`."""
import argparse
import io
import json
import sys
from pathlib import Path

import pytest

from lmforge import config
from lmforge.config import ConfigError
from lmforge.infer.character import Character, bm25_tokens, character_session, split_passages

sys.path.insert(0, str(Path(__file__).parent))
from test_align_utils import make_source  # noqa: E402

CARD = Path(__file__).resolve().parents[1] / "examples" / "character" / "lin.yaml"


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return make_source(tmp_path_factory.mktemp("src"))


def test_retrieval_finds_the_passage_in_english_and_chinese():
    char = Character.load(CARD)
    assert len(char.index.passages) >= 5
    top = char.retrieve("How often does the lamp turn, and how far can it be seen?")
    assert "twelve seconds" in top[0]["text"]
    top_zh = char.retrieve("守夜人的日志一共有多少本？")
    assert "三十本" in top_zh[0]["text"]
    assert char.retrieve("zzzz qqqq") == []                       # nothing matches: no passage
    assert "日志" in bm25_tokens("这些日志一共有三十本") and bm25_tokens("The Lamp, turned!") == ["the", "lamp", "turned"]


def test_prompt_holds_persona_passage_and_examples():
    char = Character.load(CARD)
    text = char.prompt_text("What happened during the typhoon of 1979?")
    assert text.startswith("<|im_start|>system\nYou are Lin. A retired lighthouse keeper")
    assert "turned the lens by hand" in text                                     # the retrieved passage
    assert "<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\nI am Lin." in text   # few-shot
    assert "我是林，在鼓浪屿守了三十年灯塔。" in text
    assert text.endswith("<|im_start|>user\nWhat happened during the typhoon of 1979?<|im_end|>\n"
                         "<|im_start|>assistant\n")


def test_split_passages_respects_size():
    text = "First para.\n\nSecond para is here.\n\n" + "A long sentence. " * 40
    ps = split_passages(text, 120)
    assert all(len(p) <= 120 for p in ps) and ps[0].startswith("First para.\nSecond para")
    words = split_passages("word " * 100, 60)
    assert all(set(p.split()) == {"word"} for p in words) and sum(len(p.split()) for p in words) == 100
    assert "".join(ps).count("A long sentence.") == 40


def test_session_prompt_is_the_characters_and_fits_the_window(source):
    from lmforge.model.load import load_checkpoint
    from lmforge.tokenizer.train import load_tokenizer

    run, tok_dir = source
    model, _ = load_checkpoint(run)                 # window 128 tokens: the card's prompt does not fit
    tok = load_tokenizer(tok_dir)
    s = character_session(model, tok, Character.load(CARD), max_new_tokens=8, temperature=0.0)
    s.reply("How many seconds does the lamp take to turn once?")
    assert "twelve seconds" in s.last_messages[0]["content"] and s.last_passages
    assert s.last_messages[1] == {"role": "user", "content": "Who are you?"}
    assert len(s.cached_ids) <= 128 - 8 + 8 and s.cached_ids[:3] == tok.encode("<|im_start|>system\nYou").ids[:3]
    tail = tok.decode(s.cached_ids, skip_special_tokens=False)
    assert "turn once?<|im_end|>\n<|im_start|>assistant\n" in tail        # the middle went, the question stayed
    s.reply("灯塔的日志有多少本？")                      # the second turn retrieves again
    assert "三十本" in s.last_messages[0]["content"]
    assert [m["content"] for m in s.last_messages if m["role"] == "user"][-2:] == [
        "How many seconds does the lamp take to turn once?", "灯塔的日志有多少本？"]


def test_character_stage_package_and_cli(source, tmp_path, monkeypatch, capsys):
    from lmforge.cli import export as cli
    from lmforge.stages.character import CharacterConfig, run

    src_run, _ = source
    out = tmp_path / "char"
    info = run(config.load(CharacterConfig, None, [f"card={CARD}", f"checkpoint={src_run}", f"out_dir={out}"]),
               progress=False)
    assert info["passages"] >= 5 and info["files"] == 2 and (out / "bm25").is_dir()
    pkg = Character.load(out)
    assert "twelve seconds" in pkg.retrieve("lamp turn seconds")[0]["text"]
    assert json.loads((out / "card.json").read_text())["name"] == "Lin"
    with pytest.raises(ConfigError, match="card"):
        run(config.load(CharacterConfig, None, [f"card={tmp_path / 'none.yaml'}", f"checkpoint={src_run}",
                                                f"out_dir={tmp_path / 'x'}"]), progress=False)
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    monkeypatch.setattr("sys.stdin", io.StringIO("Who kept the light?\n"))
    args = parser.parse_args(["chat", str(src_run), "--character", str(out), "--temperature", "0",
                              "--max-new-tokens", "4"])
    assert args.func(args) == 0
    assert capsys.readouterr().out.startswith("Lin: Welcome, traveller.")
    args = parser.parse_args(["generate", str(src_run), "--character", str(CARD), "--prompt", "hi",
                              "--max-new-tokens", "3", "--json"])
    assert args.func(args) == 0 and json.loads(capsys.readouterr().out)[0]["prompt"] == "hi"


def test_character_stage_keeps_bad_knowledge_records_aside(source, tmp_path):
    """A knowledge folder's bad lines are counted and written to the package's rejects.jsonl with
    the stage's one-line account (they were one log warning each, and not counted)."""
    from lmforge.stages.character import CharacterConfig, run

    src_run, _ = source
    know = tmp_path / "card" / "knowledge"
    know.mkdir(parents=True)
    (know / "notes.jsonl").write_text(json.dumps({"text": "The lamp turns once every twelve seconds."}) + "\n"
                                      "{broken\n" + json.dumps({"text": "The keeper's house is white."}) + "\n")
    card = tmp_path / "card" / "lin.yaml"
    card.write_text(CARD.read_text(encoding="utf-8"), encoding="utf-8")
    out = tmp_path / "pkg"
    info = run(config.load(CharacterConfig, None, [f"card={card}", f"checkpoint={src_run}", f"out_dir={out}"]),
               progress=False)
    assert info["passages"] >= 2
    assert info["account"].startswith("[character knowledge] read 3 documents, kept 2, rejected 1 (")
    assert [r["line"] for r in map(json.loads, (out / "rejects.jsonl").read_text().splitlines())] == [2]
