"""Self-knowledge data parts (StableLM 2): first messages sampled and deduplicated, the negative
token added to a tokenizer folder, and the model's new vocabulary row."""
import json
import random
from pathlib import Path

import pytest
import torch

from lmforge.align.first_messages import DEFAULT_OPENING, normalise, opening_prompt, sample_first_messages
from lmforge.align.self_knowledge import NEGATIVE_TOKEN
from lmforge.model import ModelConfig, Transformer
from lmforge.stagekit.source import InitConfig, load_source
from lmforge.stagekit.vocab import load_with_new_rows, with_special_tokens
from lmforge.tokenizer.special import add_special_tokens
from lmforge.tokenizer.train import load_tokenizer, tokenizer_info
from test_align_utils import make_source, make_tokenizer

STDLIB = Path(random.__file__).parent


def stdlib_sentences(n: int, seed: int = 0) -> list[str]:
    """Real, mostly unique short lines: docstring sentences of the Python stdlib."""
    import re
    out, seen = [], set()
    for f in sorted(STDLIB.glob("*.py")):
        for m in re.finditer(r'"""([A-Z][^."\n]{20,120}[.?])', f.read_text(encoding="utf-8", errors="replace")):
            s = m.group(1)
            if normalise(s) not in seen:
                seen.add(normalise(s))
                out.append(s)
    random.Random(seed).shuffle(out)
    assert len(out) >= n
    return out[:n]


def edit(text: str, rng: random.Random) -> str:
    """A near-duplicate: one word added at the end (word-bigram Jaccard (n-1)/n)."""
    return text.rstrip(".?") + " " + rng.choice(["again", "please", "today", "instead"]) + "."


def bigram_jaccard(a: str, b: str) -> float:
    from lmforge.data.text import units
    sa, sb = ({tuple(u[i:i + 2]) for i in range(len(u) - 1)} for u in (units(a, True), units(b, True)))
    return len(sa & sb) / len(sa | sb)


def test_first_messages_buckets_and_dedup():
    """Planted: real unique lines, exact duplicates in another case and punctuation, near
    duplicates (one word changed), unfinished and over-long lines; every sample in one bucket."""
    from lmforge.data.config import MinhashConfig
    from lmforge.data.dedup.minhash import dedup_texts

    uniques = []
    for u in stdlib_sentences(140):        # real lines, none similar to another (brute force)
        if all(bigram_jaccard(u, v) < 0.5 for v in uniques):
            uniques.append(u)
    assert len(uniques) >= 120
    stream = []
    for i, u in enumerate(uniques):
        stream.append(u)
        if i % 5 == 0:
            stream.append("  " + u.upper().rstrip(".?") + " !!")          # exact after normalisation
        if i % 7 == 0 and bigram_jaccard(u, edit(u, random.Random(i))) >= 0.85:
            stream.append(edit(u, random.Random(i)))                      # near duplicate
        if i % 11 == 0:
            stream.append(None)                                           # the line never ended
        if i % 13 == 0:
            stream.append("x" * 600)                                      # too long
    calls = []

    def complete(prompts, seed):
        calls.append((len(prompts), seed))
        take = stream[sum(n for n, _ in calls[:-1]):][:len(prompts)]
        return take + [""] * (len(prompts) - len(take))                   # then too short
    mh = MinhashConfig(threshold=0.7, ngram=2)
    msgs, stats = sample_first_messages(complete, 1000, seed=3, batch_size=50, max_samples=len(stream) + 20,
                                        given=["Who are you?"], near_dedup=lambda t: dedup_texts(t, mh).tolist())
    n_exact = sum(1 for i in range(len(uniques)) if i % 5 == 0)
    n_near = sum(1 for i, u in enumerate(uniques) if i % 7 == 0 and bigram_jaccard(u, edit(u, random.Random(i))) >= 0.85)
    assert stats["sampled"] == len(stream) + 20 and stats["rounds"] == -(-(len(stream) + 20) // 50)
    assert stats["exact_dup"] == n_exact and stats["unfinished"] == stream.count(None)
    assert stats["too_long"] == sum(1 for i in range(len(uniques)) if i % 13 == 0) and stats["too_short"] == 20
    assert stats["near_dup"] == n_near >= 5
    assert stats["kept"] == len(msgs) - 1 and msgs[0] == "Who are you?" and stats["given"] == 1
    assert sum(stats[k] for k in ("unfinished", "too_short", "too_long", "exact_dup", "near_dup", "kept",
                                  "over_count")) == stats["sampled"]
    assert len({normalise(m) for m in msgs}) == len(msgs)
    assert stats["short_of_count"] == 1000 - stats["kept"]
    # seeds differ per round, so the rounds are different samples
    assert len({s for _, s in calls}) == len(calls)


def test_first_messages_stop_at_count_and_prompt():
    n = iter(range(10 ** 6))
    msgs, stats = sample_first_messages(lambda p, s: [f"Question number {next(n)} about cats?" for _ in p], 10,
                                        batch_size=4)
    assert len(msgs) == 10 and stats["kept"] == 10 and stats["rounds"] == 3 and stats["over_count"] == 2
    prompt = opening_prompt(DEFAULT_OPENING, ["A?", "B?", "C?", "D?"], 3, random.Random(0))
    lines = prompt.split("\n")
    assert prompt.startswith("The first messages people sent") and prompt.endswith("\nUser:")
    assert sum(line.startswith("User: ") for line in lines) == 3 and not prompt.endswith(" ")
    assert opening_prompt(DEFAULT_OPENING, [], 3, random.Random(0)).endswith("one per line.\n\nUser:")


def test_add_special_token_folder(tmp_path):
    src = make_tokenizer(tmp_path / "tok")
    old, old_info = load_tokenizer(src), tokenizer_info(src)
    info = add_special_tokens(src, [NEGATIVE_TOKEN, "<|im_end|>"], tmp_path / "out")
    tok = load_tokenizer(tmp_path / "out")
    new_id = old_info["vocab_size"]
    assert info["added"] == {NEGATIVE_TOKEN: new_id} and info["vocab_size"] == new_id + 1
    assert tok.token_to_id("<|im_end|>") == old.token_to_id("<|im_end|>")        # existing ones keep their id
    text = f"<|im_start|>system\n{NEGATIVE_TOKEN}<|im_end|>\nWhat color is the sky?"
    ids = tok.encode(text, add_special_tokens=False).ids
    assert ids.count(new_id) == 1 and new_id not in old.encode(text, add_special_tokens=False).ids
    plain = "What color is the sky? <|im_end|> 12345"
    assert tok.encode(plain, add_special_tokens=False).ids == old.encode(plain, add_special_tokens=False).ids
    assert NEGATIVE_TOKEN not in tok.decode(ids, skip_special_tokens=True)
    side = json.loads((tmp_path / "out" / "lmforge_tokenizer.json").read_text())
    assert side["special_tokens"][NEGATIVE_TOKEN] == new_id and side["pad_id"] == old_info["pad_id"]
    # transformers reads the folder with the new token as a special token
    from transformers import AutoTokenizer
    hf = AutoTokenizer.from_pretrained(str(tmp_path / "out"))
    assert hf.convert_tokens_to_ids(NEGATIVE_TOKEN) == new_id and NEGATIVE_TOKEN in hf.all_special_tokens
    assert hf.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False) == \
        "<|im_start|>user\nHi<|im_end|>\n"
    # no temporary folder is left behind
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("case", ["padding has room", "padding grows", "model has room"])
def test_new_vocabulary_row(tmp_path, case):
    """The grown model: old rows and old logits unchanged, the new row = mean of the old ones."""
    run, tok_dir = make_source(tmp_path, seed=1)
    n_tok = tokenizer_info(tok_dir)["vocab_size"]
    if case != "padding has room":          # re-save the source with another vocabulary layout
        from lmforge.config import to_dict
        from lmforge.train.checkpoint import save as save_checkpoint
        cfg = ModelConfig(vocab_size=n_tok if case == "padding grows" else n_tok + 5, pad_vocab_multiple=1,
                          d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=128)
        torch.manual_seed(2)
        save_checkpoint(run / "checkpoints", 2, Transformer(cfg), None, {"config": {"model": to_dict(cfg)}})
    src = load_source(InitConfig(str(run)), "")
    grown, new = with_special_tokens(src, [NEGATIVE_TOKEN], tmp_path / "stage")
    assert new == {NEGATIVE_TOKEN: n_tok}
    m_old, m_new = src.model_cfg, grown.model_cfg
    if case == "padding has room":
        assert m_new.vocab_size == m_old.vocab_size + 1 and m_new.padded_vocab_size == m_old.padded_vocab_size
    elif case == "padding grows":
        assert m_new.vocab_size == m_old.vocab_size + 1 and m_new.padded_vocab_size == m_old.padded_vocab_size + 1
    else:
        assert m_new == m_old        # the id already had a row: only its initialisation changes
    old = Transformer(m_old)
    from lmforge.checkpoint import load_weights
    load_weights(src.step_dir, old)
    model = Transformer(m_new)
    load_with_new_rows(model, src.step_dir, m_old, [n_tok])
    for name in ("embed_tokens.weight", "lm_head.weight"):
        w_old, w_new = old.state_dict()[name], model.state_dict()[name]
        assert torch.equal(w_new[:n_tok], w_old[:n_tok])
        assert torch.allclose(w_new[n_tok], w_old[:n_tok].double().mean(0).float(), atol=1e-6)
    ids = torch.randint(0, n_tok, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = old.eval()(ids)[..., :n_tok], model.eval()(ids)[..., :n_tok]
    assert torch.allclose(a, b, atol=1e-5)
    # a resumed stage reuses the folder (same source), the ids stay
    again, new2 = with_special_tokens(src, [NEGATIVE_TOKEN], tmp_path / "stage")
    assert new2 == new and again.model_cfg == m_new
