"""Generation: KV cache equals recomputation, batching with left padding, sampling knobs,
stop strings, streaming, middle truncation."""
import pytest
import torch

from lmforge.truncate import truncate_middle
from lmforge.infer.generate import generate, generate_ids, sample_next
from lmforge.model import ModelConfig, Transformer
from lmforge.model.attention import KVCache
from test_eval_helpers import make_tokenizer

VARIANTS = {"plain": {}, "gqa_partial": {"n_kv_heads": 2, "rotary_pct": 0.5},
            "mqa_normhead": {"n_kv_heads": 1, "norm_head": True, "rope_theta": 500.0}}


def tiny_model(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=100, d_model=64, n_layers=2, n_heads=4, max_seq_len=64, **kw)
    return Transformer(cfg).eval()


def recompute_greedy(model, prompt, n):
    """Reference without a cache: rerun the whole sequence for every new token."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(prompt):]


@pytest.mark.parametrize("variant", VARIANTS)
def test_cached_greedy_equals_recomputation_batched(variant):
    model = tiny_model(**VARIANTS[variant])
    prompts = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [40], [70, 71, 72, 3]]   # unequal: left padding
    got = generate_ids(model, prompts, max_new_tokens=10)
    assert got == [recompute_greedy(model, p, 10) for p in prompts]


def test_cached_logits_equal_full_forward():
    model = tiny_model(n_kv_heads=2)
    x = torch.randint(0, 100, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(x)
        cache = KVCache.for_model(model, 2, 20)
        parts = [model.forward_cached(x[:, :7], cache)]
        parts += [model.forward_cached(x[:, t:t + 1], cache) for t in range(7, 20)]
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)


def test_truncated_cache_refed_equals_full_forward():
    """What chat does when a new turn diverges from the cached ids: cut back, feed the rest."""
    model = tiny_model(n_kv_heads=2, rotary_pct=0.5)
    x = torch.randint(0, 100, (1, 24), generator=torch.Generator().manual_seed(2))
    y = x.clone()
    y[0, 10:] = (y[0, 10:] + 7) % 100                     # diverges after 10 tokens
    with torch.no_grad():
        cache = KVCache.for_model(model, 1, 24)
        model.forward_cached(x, cache)
        cache.truncate(10)
        got = model.forward_cached(y[:, 10:], cache)
        full = model(y)[:, 10:]
    torch.testing.assert_close(got, full, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError):
        cache.truncate(25)


def test_left_padded_row_equals_row_alone():
    model = tiny_model()
    with torch.no_grad():
        alone = model(torch.tensor([[3, 4, 5]]))[0, -1]
        cache = KVCache.for_model(model, 1, 8)
        ids = torch.tensor([[0, 0, 3, 4, 5]])
        valid = torch.tensor([[False, False, True, True, True]])
        padded = model.forward_cached(ids, cache, position_ids=torch.tensor([[0, 0, 0, 1, 2]]), valid=valid)[0, -1]
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)


def test_stop_ids_end_a_sequence_and_are_not_returned():
    model = tiny_model()
    free = generate_ids(model, [[5, 6, 7]], max_new_tokens=8)[0]
    stop = free[3]
    got = generate_ids(model, [[5, 6, 7]], max_new_tokens=8, stop_ids=[stop])[0]
    assert got == free[:free.index(stop)]


def test_sampling_knobs():
    logits = torch.tensor([[0.0, 3.0, 2.9, -1.0, 1.0]])
    assert sample_next(logits).item() == 1
    g = torch.Generator().manual_seed(0)
    assert all(sample_next(logits, 5.0, top_k=1, generator=g).item() == 1 for _ in range(20))
    assert all(sample_next(logits, 5.0, top_p=1e-6, generator=g).item() == 1 for _ in range(20))
    # top_k=2 at a high temperature only ever picks the two best
    seen = {sample_next(logits, 100.0, top_k=2, generator=g).item() for _ in range(200)}
    assert seen == {1, 2}
    # top_p: probabilities of [1, 2] are ~0.42 / ~0.38; 0.5 of the mass needs both, never a third
    seen = {sample_next(logits, 1.0, top_p=0.5, generator=g).item() for _ in range(300)}
    assert seen == {1, 2}
    # sampling frequencies follow softmax(logits / T)
    g = torch.Generator().manual_seed(1)
    draws = torch.stack([sample_next(logits.expand(1000, -1), 2.0, generator=g) for _ in range(5)]).flatten()
    freq = torch.bincount(draws, minlength=5).float() / draws.numel()
    torch.testing.assert_close(freq, (logits[0] / 2.0).softmax(-1), atol=0.02, rtol=0)


def test_seed_makes_sampling_repeatable():
    model = tiny_model()
    kw = dict(max_new_tokens=12, temperature=1.0, top_k=20, top_p=0.9)
    a = generate_ids(model, [[5, 6], [9]], seed=7, **kw)
    b = generate_ids(model, [[5, 6], [9]], seed=7, **kw)
    c = generate_ids(model, [[5, 6], [9]], seed=8, **kw)
    assert a == b and a != c


def test_truncate_middle():
    assert truncate_middle([1, 2, 3], 5) == [1, 2, 3]
    assert truncate_middle(list(range(10)), 4) == [0, 1, 8, 9]
    assert truncate_middle(list(range(10)), 5) == [0, 1, 2, 8, 9]
    assert truncate_middle(list(range(10)), 1) == [0]
    assert truncate_middle(list(range(10)), 0) == []
    with pytest.raises(ValueError):
        truncate_middle([1], -1)


def test_long_prompt_is_middle_truncated():
    model = tiny_model()                      # max_seq_len 64
    long = [3 + i % 90 for i in range(200)]
    got = generate_ids(model, [long], max_new_tokens=4)
    assert got == generate_ids(model, [truncate_middle(long, 60)], max_new_tokens=4)


class Scripted(torch.nn.Module):
    """A stand-in model that emits a fixed token script (to test the text layer exactly)."""

    def __init__(self, script, vocab):
        super().__init__()
        self.cfg = ModelConfig(vocab_size=vocab, d_model=8, n_layers=1, n_heads=2, max_seq_len=256)
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.script, self.prompt_len = script, None

    def forward_cached(self, input_ids, cache, position_ids=None, valid=None, last_only=False):
        if self.prompt_len is None:
            self.prompt_len = cache.length + input_ids.shape[1]
        k = cache.length + input_ids.shape[1] - self.prompt_len
        cache.advance(input_ids.shape[1])
        logits = torch.zeros(input_ids.shape[0], 1, self.cfg.padded_vocab_size)
        logits[:, :, self.script[min(k, len(self.script) - 1)]] = 10.0
        return logits


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from lmforge.tokenizer.train import load_tokenizer
    return load_tokenizer(make_tokenizer(tmp_path_factory.mktemp("tok")))


def test_stop_strings_and_streaming(tok):
    text = "Hello world. STOP here 床前明月光"
    script = tok.encode(text).ids + [tok.token_to_id("<|endoftext|>")]
    pieces = []
    out = generate(Scripted(script, 400), tok, ["x"], max_new_tokens=50, stop=["STOP"],
                   on_token=lambda i, p: pieces.append(p))
    assert out == ["Hello world. "]
    assert "".join(pieces) == out[0] and len(pieces) > 1 and not any("ST" in p for p in pieces)
    # without a stop string: runs to the eos token; CJK arrives whole (no broken UTF-8 pieces)
    pieces = []
    out = generate(Scripted(script, 400), tok, ["x"], max_new_tokens=50, on_token=lambda i, p: pieces.append(p))
    assert out == [text] and "".join(pieces) == text and not any("\ufffd" in p for p in pieces)
    # max_new_tokens caps it
    assert generate(Scripted(script, 400), tok, ["x"], max_new_tokens=2) == [tok.decode(script[:2])]


def test_chatml_prompt_encodes_special_tokens(tok):
    ids = tok.encode("<|im_start|>user\nhi<|im_end|>\n", add_special_tokens=False).ids
    assert ids[0] == tok.token_to_id("<|im_start|>") and tok.token_to_id("<|im_end|>") in ids


def test_bad_arguments_refused():
    model = tiny_model()
    for kw in ({"temperature": -1}, {"top_p": 0.0}, {"top_k": -2}, {"max_new_tokens": -1}):
        with pytest.raises(ValueError):
            generate_ids(model, [[1, 2]], **kw)
    with pytest.raises(ValueError):
        generate_ids(model, [[]])
