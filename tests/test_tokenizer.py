"""Tokenizer training: single digits, fixed special ids, byte-level coverage, exact round
trips, transformers compatibility, config validation. Also holds the small corpora the
other tokenizer tests import."""
import json
import random

import pytest

from lmforge import config
from lmforge.config import ConfigError
from lmforge.stages.tokenizer import run as run_train
from lmforge.tokenizer.train import (CHATML_TEMPLATE, SIDE_FILE, TokenizerConfig, load_tokenizer,
                                     padded_vocab_size, train_bpe)

SPECIALS = ["<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>"]

WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from at "
         "which but have an they you were her she there been one all we their has would when if so "
         "model data token train language learning number value system function return").split()
HAN = ("的一是不了人我在有他这中大来上个国到说们为子和你地出道也时年得就那要下以生会自着去之过家学"
       "对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面"
       "公同三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己话儿者向情部")
CODE = [
    "def add(a, b):\n    \"\"\"Add two numbers.\"\"\"\n    return a + b\n",
    "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n",
    "for i in range(10):\n\tif i % 2 == 0:\n\t\tprint(i)\n\telse:\n\t\tcontinue\n",
    "int main(void) {\n    int x = 42;\n    return x * 2;\n}\n",
    "    if value is None:\n        raise ValueError('missing value')  # 3 spaces:   x\n",
]


def english(rng: random.Random, n_words: int = 60) -> str:
    out = []
    for i in range(n_words):
        w = rng.choice(WORDS)
        if rng.random() < 0.08:
            w = str(rng.randint(0, 99999))
        out.append(w)
    return " ".join(out).capitalize() + ". In 2024 it cost $1,234.56!\n"


def chinese(rng: random.Random, n_chars: int = 80) -> str:
    s = "".join(rng.choice(HAN) for _ in range(n_chars))
    return "，".join(s[i:i + 12] for i in range(0, len(s), 12)) + "。2023年10月。"


def code(rng: random.Random) -> str:
    return "".join(rng.sample(CODE, 3))


def make_docs(n: int = 120, seed: int = 0) -> list[dict]:
    """A small mixed corpus as DESIGN.md documents, with domain and lang."""
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            text, dom, lang = english(rng), "web", "en"
        elif kind == 1:
            text, dom, lang = chinese(rng), "web", "zh"
        elif kind == 2:
            text, dom, lang = code(rng), "code", "code"
        else:
            text, dom, lang = english(rng, 20) + chinese(rng, 30), "books", "mixed"
        docs.append({"id": f"doc-{i}", "text": text, "meta": {"domain": dom, "lang": lang}})
    return docs


def write_jsonl(path, docs) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    return str(path)


RARE = [
    "𠀀𪚥龘 rare CJK Extension B, 𰻞𰻞麵",
    "emoji 😀👍🏽🇨🇳 👨‍👩‍👧‍👦 and ZWJ",
    "e\u0301 combining, Ａｂｃ fullwidth, \u3000ideographic space, \ufeffBOM",
    "مرحبا بالعالم עברית ελληνικά русский ภาษาไทย 한국어 日本語のテキスト",
    "\x00\x01 control \x7f, \r\n CRLF, \u2028 line sep",
    "  leading and trailing spaces  \n\n\n\t\t tabs \t",
    "",
]


@pytest.fixture(scope="module")
def tok():
    return train_bpe((d["text"] for d in make_docs(200)), 800, SPECIALS)


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    data = write_jsonl(d / "docs" / "a.jsonl", make_docs(200))
    cfg = config.load(TokenizerConfig, overrides=[f"inputs=[{data}]", f"out_dir={d / 'out'}",
                                              "vocab_size=700"])
    run_train(cfg, progress=False)
    return d / "out"


def test_numbers_split_into_single_digits(tok):
    enc = tok.encode("year 2024 and 1234567890 or 3.14159", add_special_tokens=False)
    pieces = [tok.decode([i]) for i in enc.ids]
    digit_pieces = [p for p in pieces if any(c in "0123456789" for c in p)]
    assert len(digit_pieces) == 4 + 10 + 6 and all(len(p) == 1 for p in digit_pieces), pieces
    # even though the corpus repeats "2023" and "1,234", no token holds two ASCII digits
    # (decode: byte-level symbols such as '¹' are not digits of the text)
    assert all(sum(c in "0123456789" for c in tok.decode([i])) <= 1 for i in tok.get_vocab().values())


def test_special_tokens_have_configured_low_ids_and_are_single_tokens(tok):
    for i, s in enumerate(SPECIALS):
        assert tok.token_to_id(s) == i
    ids = tok.encode("<|im_start|>user\nhi<|im_end|>\n<|endoftext|>", add_special_tokens=False).ids
    assert ids[0] == 2 and 3 in ids and ids[-1] == 0
    assert ids.count(2) == 1 and ids.count(3) == 1


@pytest.mark.parametrize("text", RARE + [make_docs(4)[i]["text"] for i in range(4)]
                         + ["mixed: English 中文 code\tdef f():\n\treturn 1  # 注释 😀"])
def test_round_trip_exact_and_no_unknown(tok, text):
    enc = tok.encode(text, add_special_tokens=False)
    assert tok.decode(enc.ids, skip_special_tokens=False) == text
    assert None not in [tok.id_to_token(i) for i in enc.ids]
    assert all(i < tok.get_vocab_size() for i in enc.ids)


def test_chinese_without_spaces_gets_multichar_tokens(tok):
    rng = random.Random(5)
    text = chinese(rng, 200)
    enc = tok.encode(text, add_special_tokens=False)
    # 3 bytes per Han char: a bytes-only tokenizer would give ~3 tokens per char
    assert len(enc.ids) < len(text), (len(enc.ids), len(text))
    assert any(len(tok.decode([i])) >= 2 and all("\u4e00" <= c <= "\u9fff" for c in tok.decode([i]))
               for i in enc.ids)


def test_folder_loads_in_transformers_with_identical_ids(tok_dir):
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer
    raw = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    auto = transformers.AutoTokenizer.from_pretrained(str(tok_dir))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tok_dir / "tokenizer.json"))
    texts = [d["text"] for d in make_docs(12, seed=3)] + RARE[:-1] + ["<|im_start|>user\n1+1?<|im_end|>"]
    for t in texts:
        ids = raw.encode(t, add_special_tokens=False).ids
        assert auto(t, add_special_tokens=False)["input_ids"] == ids
        assert fast(t, add_special_tokens=False)["input_ids"] == ids
        assert auto(t)["input_ids"] == ids  # no bos/eos added behind our back
        assert auto.decode(ids) == t
    assert auto.eos_token == "<|endoftext|>" and auto.eos_token_id == 0
    assert auto.pad_token_id == 1
    chat = auto.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                    add_generation_prompt=True)
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    chat_ids = auto.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=True)
    chat_ids = chat_ids["input_ids"] if isinstance(chat_ids, dict) or hasattr(chat_ids, "keys") else chat_ids
    assert chat_ids[0] == 2 and 3 in chat_ids


def test_side_file_records_padded_vocab(tok_dir):
    info = json.loads((tok_dir / SIDE_FILE).read_text())
    assert info["vocab_size"] <= 700
    assert info["padded_vocab_size"] % 64 == 0
    assert info["padded_vocab_size"] - 64 < info["vocab_size"] <= info["padded_vocab_size"]
    assert info["special_tokens"] == {s: i for i, s in enumerate(SPECIALS)}
    assert info["eos_id"] == 0 and info["pad_id"] == 1
    assert json.loads((tok_dir / "tokenizer_config.json").read_text())["chat_template"] == CHATML_TEMPLATE
    assert padded_vocab_size(100289) == 100352 and padded_vocab_size(64) == 64


def test_finished_folder_is_skipped(tok_dir):
    cfg = TokenizerConfig(inputs=["/nonexistent"], out_dir=str(tok_dir), vocab_size=700)
    assert run_train(cfg, progress=False)["skipped"] is True
    assert load_tokenizer(tok_dir).token_to_id("<|im_end|>") == 3


@pytest.mark.parametrize("overrides, key", [
    (["vocab_size=200"], "vocab_size"),                       # < 4 specials + 256 bytes
    (["vocab_size=259"], "vocab_size"),
    (["eos_token=<eos>"], "eos_token"),
    (["special_tokens=[<|endoftext|>, <|pad|>]"], "special_tokens"),   # no ChatML
    (["special_tokens=[a, a, <|im_start|>, <|im_end|>]", "eos_token=a", "bos_token=a", "pad_token=a"],
     "special_tokens"),
    (["vocab_sise=1000"], "vocab_sise"),
])
def test_bad_config_refused_with_one_line(overrides, key):
    with pytest.raises(ConfigError) as e:
        config.load(TokenizerConfig, overrides=["inputs=[x]", "out_dir=o"] + overrides)
    msg = str(e.value)
    assert "\n" not in msg and key in msg, msg


def test_vocab_floor_is_exactly_specials_plus_bytes():
    cfg = config.load(TokenizerConfig, overrides=["inputs=[x]", "out_dir=o", "vocab_size=260"])
    assert cfg.vocab_size == 260


def test_progress_off_a_terminal_prints_nothing(capfd):
    """tokenizers' progress bar writes bare newlines to a non-terminal stdout (a recipe's log);
    with stdout not a terminal, training prints nothing."""
    train_bpe((d["text"] for d in make_docs(20)), 300, SPECIALS, show_progress=True)
    assert capfd.readouterr().out == ""
