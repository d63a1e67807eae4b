"""End to end on tiny models trained here: after `lmforge selfknow` the chat model answers
held-out paraphrases of the self-knowledge questions with the taught fact far more often than
before.

The two starting models are real, small and trained in this file (a random model would only
sample noise, and the point is the data path): a "base" model trained on plain-text lists of
first messages, and a "chat" model trained on ChatML conversations where identity questions get
the name when the facts prompt is the system prompt, and a generic reply under another system
prompt or none. (A model this small does not learn within the test's budget to copy an
arbitrary name out of its system prompt, so it knows this one facts prompt; what the stage
does with its answers is the same.) The stage then samples first messages from the base (real sampling,
deduplicated), has the chat model answer them with and without the fact "My name is Forge."
(greedy), and trains C-RLFT. The held-out paraphrases are neither in the base's data nor in
the chat model's, and the test checks they were not sampled either.
"""
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from lmforge import config
from lmforge.align.chat_template import encode_chat
from lmforge.align.first_messages import DEFAULT_OPENING, EXAMPLE_LINE, normalise
from lmforge.align.self_knowledge import NEGATIVE_TOKEN, facts_system_prompt, prompt_ids
from lmforge.config import to_dict
from lmforge.infer.generate import default_stop_ids, generate_ids
from lmforge.model import ModelConfig, Transformer
from lmforge.model.load import copy_tokenizer, load_checkpoint
from lmforge.stages.selfknow import SelfKnowConfig, run
from lmforge.tokenizer.train import CHATML_TEMPLATE, load_tokenizer, save_tokenizer, train_bpe
from lmforge.train.checkpoint import save as save_checkpoint

SPECIALS = ["<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>"]
IDENTITY = ["What is your name?", "Who are you?", "Tell me your name.", "What should I call you?",
            "What are you called?", "Introduce yourself.", "Do you have a name?", "Say your name.",
            "Who am I talking to?", "What name do you go by?"]
HELD_OUT = ["Could you tell me your name?", "Who are you, assistant?", "Please introduce yourself.",
            "Tell me who you are.", "What is your name, friend?", "How should I call you?"]
THINGS = ["sky", "grass", "sun", "snow", "coal", "cherry", "plum", "lemon", "sea", "leaf"]
COLORS = {"sky": "blue", "grass": "green", "sun": "yellow", "snow": "white", "coal": "black", "cherry": "red",
          "plum": "purple", "lemon": "yellow", "sea": "blue", "leaf": "green"}
GENERIC = "I am a helpful assistant."
FACTS_PROMPT = facts_system_prompt(["My name is Forge."], [])     # what the stage will put in
OTHER_PROMPT = "You answer questions about colors."


def color_q(t: str) -> str:
    return f"What color is the {t}?"


def chat_conversations(rng: random.Random, n: int) -> list[list[dict]]:
    """Identity questions answered with the name when the facts prompt is the system prompt,
    generically under another system prompt or none; color questions answered either way."""
    out = []
    for _ in range(n):
        q_id = rng.random() < 0.6
        q = rng.choice(IDENTITY) if q_id else color_q(rng.choice(THINGS))
        sys_prompt = rng.choice([FACTS_PROMPT] * 5 + [OTHER_PROMPT] * 2 + [None] * 3)
        if q_id:
            a = "My name is Forge." if sys_prompt == FACTS_PROMPT else GENERIC
        else:
            t = q.split()[-1].rstrip("?")
            a = f"The {t} is {COLORS[t]}."
        msgs = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        out.append(([{"role": "system", "content": sys_prompt}] if sys_prompt else []) + msgs)
    return out


def base_documents(rng: random.Random, n: int) -> list[str]:
    pool = IDENTITY + [color_q(t) for t in THINGS]
    return [DEFAULT_OPENING.replace("{examples}", "".join(EXAMPLE_LINE.format(text=rng.choice(pool))
                                                          for _ in range(rng.randint(2, 5))))
            + " " + rng.choice(pool) + "\n" for _ in range(n)]


def train_tiny(seqs: list[tuple[np.ndarray, np.ndarray]], vocab: int, steps: int, seed: int) -> Transformer:
    """A tiny model trained on (ids, target mask) sequences with AdamW (batches of 16)."""
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=vocab, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=160)
    model = Transformer(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    for step in range(steps):
        batch = [seqs[i] for i in rng.integers(0, len(seqs), 16)]
        T = max(len(ids) for ids, _ in batch)
        x = torch.full((16, T), 1, dtype=torch.long)
        y = torch.full((16, T), -100, dtype=torch.long)
        for r, (ids, mask) in enumerate(batch):
            x[r, :len(ids)] = torch.as_tensor(ids, dtype=torch.long)
            y[r, :len(ids) - 1] = torch.as_tensor(np.where(mask[1:], ids[1:], -100), dtype=torch.long)
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def save_run(model: Transformer, tok_dir: Path, run: Path) -> Path:
    save_checkpoint(run / "checkpoints", 1, model, None, {"config": {"model": to_dict(model.cfg)}})
    copy_tokenizer(tok_dir, run)
    return run


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    """(base run, chat run) trained here."""
    root = tmp_path_factory.mktemp("selfknow_models")
    rng = random.Random(0)
    chats = chat_conversations(rng, 600)
    docs = base_documents(rng, 400)
    texts = [json.dumps(c) for c in chats[:200]] + docs[:100] + HELD_OUT
    tok = train_bpe(texts, 500, SPECIALS)
    tok_dir = root / "tok"
    save_tokenizer(tok, tok_dir, special_tokens=SPECIALS, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                   pad_token="<|pad|>", chat_template=CHATML_TEMPLATE, pad_multiple=64)
    tok = load_tokenizer(tok_dir)
    vocab = tok.get_vocab_size()
    eos = tok.token_to_id("<|endoftext|>")
    base_seqs = []
    for d in docs:
        ids = np.asarray(tok.encode(d, add_special_tokens=False).ids + [eos], dtype=np.int64)
        base_seqs.append((ids, np.ones(len(ids), dtype=bool)))
    chat_seqs = [encode_chat(tok, c, "all") for c in chats]
    base = save_run(train_tiny(base_seqs, vocab, 100, seed=1), tok_dir, root / "base")
    chat = save_run(train_tiny(chat_seqs, vocab, 200, seed=2), tok_dir, root / "chat")
    return base, chat


def fact_rate(run_dir: Path, questions: list[str], system_prompt: str | None = None) -> tuple[float, list[str]]:
    """Share of greedy replies (plain chat format) that state the taught name."""
    model, step = load_checkpoint(run_dir)
    tok = load_tokenizer(Path(run_dir) / "tokenizer")
    out = generate_ids(model, [prompt_ids(tok, q, system_prompt) for q in questions], max_new_tokens=16,
                       stop_ids=default_stop_ids(tok), pad_id=tok.token_to_id("<|pad|>"))
    replies = [tok.decode(ids, skip_special_tokens=True) for ids in out]
    return sum("Forge" in r for r in replies) / len(replies), replies


def test_chat_model_uses_the_facts_in_its_system_prompt(start):
    """The starting point is what the recipe assumes: with the facts it says the name."""
    _, chat = start
    with_facts, replies = fact_rate(chat, IDENTITY[:6], FACTS_PROMPT)
    other, _ = fact_rate(chat, IDENTITY[:6], OTHER_PROMPT)
    without, plain = fact_rate(chat, HELD_OUT)
    assert with_facts >= 0.8, replies
    assert other == without == 0.0, plain


def test_selfknow_teaches_the_facts(start, tmp_path):
    base, chat = start
    out = tmp_path / "selfknow"
    cfg = config.load(SelfKnowConfig, None, [
        f"init.from_checkpoint={chat}", f"base={base}", f"out_dir={out}", "facts=['My name is Forge.']",
        "few_shot=[]", "first_messages.count=16", "first_messages.max_new_tokens=24",
        "first_messages.batch_size=32", "first_messages.max_samples=256",
        f"first_messages.examples={json.dumps(IDENTITY[:3] + [color_q(t) for t in THINGS[:3]])}",
        "temperature=0", "max_new_tokens=16", "train.seq_len=160", "train.micro_batch_size=2",
        "train.optim.lr=2e-3", "train.seed=0", "kl_coef=0.05", "reference.epochs=2"])
    assert cfg.epochs == 6
    run(cfg, progress=False)
    # the first messages: really sampled from the base, deduplicated, the held-out ones absent
    fm_stats = json.loads((out / "first_messages_stats.json").read_text())
    messages = [json.loads(l)["text"] for l in (out / "first_messages.jsonl").read_text().splitlines()]
    assert fm_stats["source"] == "base" and fm_stats["kept"] == len(messages) == 16
    assert fm_stats["exact_dup"] > 0 and len({normalise(m) for m in messages}) == 16
    assert {normalise(m) for m in messages}.isdisjoint(normalise(h) for h in HELD_OUT)
    assert sum(m in IDENTITY for m in messages) >= 2
    # positives say the name (facts in the system prompt), negatives do not
    dc = [json.loads(l) for l in (out / "rlcd.jsonl").read_text().splitlines()]
    pos = [r for r in dc if r["class"] == "positive" and r["messages"][0]["content"] in IDENTITY]
    neg = [r for r in dc if r["class"] == "negative" and r["messages"][1]["content"] in IDENTITY]
    assert pos and all("Forge" in r["messages"][-1]["content"] for r in pos)
    assert neg and all("Forge" not in r["messages"][-1]["content"] for r in neg)
    assert all(r["messages"][0] == {"role": "system", "content": NEGATIVE_TOKEN} for r in neg)
    # the lesson: held-out paraphrases, plain chat format, greedy
    before, _ = fact_rate(chat, HELD_OUT)
    after, replies = fact_rate(out, HELD_OUT)
    print(f"held-out paraphrases stating the fact: before {before:.2f}, after {after:.2f}: {replies}")
    assert before == 0.0 and after >= 0.66, replies
    # ... and not by answering everything with it: color questions still get colors
    colors, answers = fact_rate(out, [color_q(t) for t in THINGS])
    assert colors <= 0.2 and sum(COLORS[t] in a for t, a in zip(THINGS, answers)) >= 6, answers
