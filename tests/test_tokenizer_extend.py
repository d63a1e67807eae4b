"""Vocabulary extension (Skywork): old ids stable, old encodings still valid, new rows = mean."""
import json
import random

import pytest
import torch

from lmforge import config
from lmforge.config import ConfigError
from lmforge.stages.extend import run as run_extend
from lmforge.stages.tokenizer import run as run_train
from lmforge.tokenizer.extend import ExtendConfig, extend_tokenizer, new_embedding_rows
from lmforge.tokenizer.train import SIDE_FILE, TokenizerConfig, load_tokenizer, train_bpe
from test_tokenizer import RARE, SPECIALS, chinese, code, english, make_docs, write_jsonl


def english_corpus(n=150, seed=0):
    rng = random.Random(seed)
    return [english(rng) if i % 2 else code(rng) for i in range(n)]


def chinese_corpus(n=150, seed=1):
    rng = random.Random(seed)
    return [chinese(rng, 120) for _ in range(n)]


@pytest.fixture(scope="module")
def old_and_new():
    old = train_bpe(english_corpus(), 600, SPECIALS)
    new, added = extend_tokenizer(old, chinese_corpus(), 300)
    return old, new, added


def test_old_ids_stable_and_new_ids_appended(old_and_new):
    old, new, added = old_and_new
    old_vocab = old.get_vocab(with_added_tokens=True)
    new_vocab = new.get_vocab(with_added_tokens=True)
    assert 0 < len(added) <= 300
    for tok, i in old_vocab.items():
        assert new_vocab[tok] == i
    n_old = max(old_vocab.values()) + 1
    assert sorted(new_vocab[t] for t in added) == list(range(n_old, n_old + len(added)))
    for i, s in enumerate(SPECIALS):
        assert new.token_to_id(s) == i


def test_old_encodings_still_decode_and_english_unchanged(old_and_new):
    old, new, _ = old_and_new
    rng = random.Random(7)
    texts = [english(rng) for _ in range(10)] + [code(rng)] + [chinese(rng)] + RARE
    for t in texts:
        old_ids = old.encode(t, add_special_tokens=False).ids
        assert new.decode(old_ids, skip_special_tokens=False) == t
        new_ids = new.encode(t, add_special_tokens=False).ids
        assert new.decode(new_ids, skip_special_tokens=False) == t
    # text the old tokenizer covered well: the same ids (new merges rank after the old ones)
    for t in texts[:10]:
        assert new.encode(t, add_special_tokens=False).ids == old.encode(t, add_special_tokens=False).ids


def test_extension_compresses_the_new_language(old_and_new):
    old, new, added = old_and_new
    text = "".join(chinese_corpus(5, seed=9))
    n_old = len(old.encode(text, add_special_tokens=False).ids)
    n_new = len(new.encode(text, add_special_tokens=False).ids)
    assert n_new < 0.7 * n_old, (n_old, n_new)
    assert any(all("\u4e00" <= c <= "\u9fff" for c in new.decode([new.token_to_id(t)])) for t in added)


def test_new_embedding_rows_are_the_mean():
    g = torch.Generator().manual_seed(0)
    old = torch.randn(50, 16, generator=g, dtype=torch.float64)
    rows = new_embedding_rows(old, 7)
    assert rows.shape == (7, 16) and rows.dtype == old.dtype
    torch.testing.assert_close(rows, old.mean(0).expand(7, -1), rtol=1e-6, atol=1e-6)
    bf = old.to(torch.bfloat16)
    rows_bf = new_embedding_rows(bf, 3)
    assert rows_bf.dtype == torch.bfloat16
    torch.testing.assert_close(rows_bf.float(), bf.double().mean(0).float().expand(3, -1).bfloat16().float())
    assert new_embedding_rows(old, 0).shape == (0, 16)
    rows[0, 0] = 123.0  # a real tensor, not a view of one shared row
    assert rows[1, 0] != 123.0
    with pytest.raises(ValueError):
        new_embedding_rows(torch.zeros(0, 4), 2)


def test_extend_stage_writes_a_loadable_folder(tmp_path):
    transformers = pytest.importorskip("transformers")
    en = write_jsonl(tmp_path / "en" / "a.jsonl", [{"id": str(i), "text": t, "meta": {}}
                                                    for i, t in enumerate(english_corpus())])
    zh = write_jsonl(tmp_path / "zh" / "a.jsonl", [{"id": str(i), "text": t, "meta": {}}
                                                    for i, t in enumerate(chinese_corpus())])
    run_train(TokenizerConfig(inputs=[en], out_dir=str(tmp_path / "base"), vocab_size=600), progress=False)
    cfg = config.load(ExtendConfig, overrides=[f"base={tmp_path / 'base'}", f"inputs=[{zh}]",
                                               f"out_dir={tmp_path / 'ext'}", "add_tokens=200"])
    info = run_extend(cfg, progress=False)
    side = json.loads((tmp_path / "ext" / SIDE_FILE).read_text())
    assert side["n_added"] == info["n_added"] > 0
    assert side["vocab_size"] == side["base_vocab_size"] + side["n_added"]
    assert side["padded_vocab_size"] % 64 == 0 and side["eos_id"] == 0
    auto = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "ext"))
    raw = load_tokenizer(tmp_path / "ext")
    t = chinese_corpus(1, seed=3)[0] + " and English 123"
    assert auto(t)["input_ids"] == raw.encode(t, add_special_tokens=False).ids
    assert auto.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False).startswith("<|im_start|>")


def test_extend_config_refused():
    with pytest.raises(ConfigError, match="add_tokens"):
        config.load(ExtendConfig, overrides=["base=b", "inputs=[x]", "out_dir=o", "add_tokens=0"])


def llama_like(texts, vocab=500):
    """A Llama-style BPE: Metaspace, byte_fallback, <unk>/<s>/</s> then <0x00>..<0xFF> at ids 3..258."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Metaspace(replacement="▁", prepend_scheme="first")])
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<unk>", "<s>", "</s>"]))
    j = json.loads(tok.to_str())
    v = j["model"]["vocab"]
    new = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"<0x{b:02X}>": 3 + b for b in range(256)}}
    for t in sorted((t for t in v if v[t] >= 3), key=v.get):
        new.setdefault(t, len(new))
    j["model"]["vocab"] = new
    return Tokenizer.from_str(json.dumps(j))


def test_skywork_case_llama_style_byte_fallback_base():
    old = llama_like(english_corpus())
    zh = "".join(chinese_corpus(2, seed=5))
    old_ids = old.encode(zh).ids
    assert old.id_to_token(old_ids[1]).startswith("<0x")  # Chinese fell back to bytes
    new, added = extend_tokenizer(old, chinese_corpus(), 400)
    assert len(added) == 400 and "一" in added           # Han characters became tokens
    assert all(new.get_vocab()[t] == i for t, i in old.get_vocab().items())
    new_ids = new.encode(zh).ids
    assert new.decode(new_ids) == zh and new.decode(old_ids) == zh
    assert len(new_ids) < len(old_ids) / 2
    assert not any(new.id_to_token(i).startswith("<0x") for i in new_ids)
    en = english_corpus(3, seed=8)[1]
    assert new.encode(en).ids == old.encode(en).ids
