"""Needle in a haystack: prompt construction, scoring checked with hand-made oracles (a
perfect copier, a copier with a limited window, a model that never copies), outputs
(needle.json / needle.md / needle.png), resume, RoPE modes and bad input, on the tiny model."""
import dataclasses
import json
import sys
from pathlib import Path

import pytest
import torch

from lmforge import config
from lmforge.config import ConfigError
from lmforge.eval import needle
from lmforge.eval.needle import NeedleText, build_cases, tail_logits
from lmforge.stages.needle import NeedleConfig, run
from lmforge.model import ModelConfig, Transformer
from lmforge.model.config import RopeScaling

sys.path.insert(0, str(Path(__file__).parent))
from test_eval_helpers import tiny_run  # noqa: E402

SHORT = ["needle=' The key is {value}. '", "question=' So the key is'", "value_digits=3"]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("src"), steps=2)


def cfg_for(source, out, *extra) -> NeedleConfig:
    return config.load(NeedleConfig, None, [f"checkpoint={source}", f"haystack={source.parent / 'tokens'}",
                                            f"out_dir={out}", "rope=naive", *extra])


class CopyOracle(torch.nn.Module):
    """Predicts the token that followed the most recent earlier occurrence of the longest
    matching context (up to 4 tokens), looking back at most `window` tokens; -1 = unlimited.
    Only the last `tail` positions are predicted (the scorer reads no others)."""

    def __init__(self, vocab: int, window: int = -1, tail: int = 12, copies: bool = True):
        super().__init__()
        self.vocab, self.window, self.tail, self.copies = vocab, window, tail, copies
        self.calls = 0
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def predict(self, seq: list[int], t: int) -> int:
        lo = 0 if self.window < 0 else max(0, t - self.window)
        for k in (4, 3, 2, 1):
            ctx = seq[t - k + 1:t + 1]
            for j in range(t - 1, lo + k - 2, -1):
                if j - k + 1 >= 0 and seq[j - k + 1:j + 1] == ctx:
                    return seq[j + 1]
        return 0

    def forward(self, ids):
        self.calls += 1
        B, T = ids.shape
        out = torch.zeros(B, T, self.vocab)
        for b in range(B):
            seq = ids[b].tolist()
            for t in range(max(0, T - self.tail), T):
                out[b, t, self.predict(seq, t) if self.copies else 0] = 10.0
        return out


def tok_encode(source):
    from lmforge.tokenizer.train import load_tokenizer
    tok = load_tokenizer(source / "tokenizer")
    return lambda s: tok.encode(s, add_special_tokens=False).ids


def test_prompts_are_built_as_specified(source):
    cfg = cfg_for(source, "x", "lengths=[160, 256]", "depths=[0, 30, 100]", "trials=2")
    text = NeedleText(cfg, tok_encode(source))
    stream = needle.haystack_stream(cfg.haystack, text.encode, 600, [0])
    cases = build_cases(cfg, text, stream)
    assert len(cases) == 2 * 3 * 2 and len({c.value for c in cases}) > 6
    for c in cases:
        assert len(c.prompt) == c.length                      # haystack + needle + question = length
        n_hay = c.length - len(text.needle_ids(c.value)) - len(text.question_ids)
        assert c.needle_at == round(c.depth / 100 * n_hay)
        assert c.prompt[c.needle_at:c.needle_at + len(text.needle_ids(c.value))] == text.needle_ids(c.value)
        assert c.prompt[-len(text.question_ids):] == text.question_ids
        assert len(c.distractors) == 4 and c.target not in c.distractors
        assert all(len(d) > 0 for d in c.distractors)
    # the question ends with the needle's lead-in, and the value follows it inside the needle
    lead = text.before_ids[-3:]
    assert text.question_ids[-3:] == lead
    c = cases[0]
    i = c.needle_at + len(text.before_ids)
    assert c.prompt[i:i + len(c.target)] == c.target
    # same seed, same cases; trials differ in value and haystack
    assert [x.prompt for x in build_cases(cfg, text, stream)] == [x.prompt for x in cases]
    t0, t1 = [x for x in cases if x.length == 256 and x.depth == 0]
    assert t0.prompt[len(text.needle_ids(t0.value)):] != t1.prompt[len(text.needle_ids(t1.value)):]


def oracle_cfg(source, out, *extra):
    return cfg_for(source, out, "lengths=[160, 256]", "depths=[0, 25, 50, 75, 100]", "distractors=3", *extra)


def test_perfect_copier_scores_one_everywhere(source, tmp_path):
    out = tmp_path / "n"
    res = run(oracle_cfg(source, out), progress=False, model=CopyOracle(320))
    assert res["exact"] == 1.0 and res["rank_acc"] == 1.0 and res["cells"] == 10
    data = json.loads((out / "needle.json").read_text())
    assert data["grid"]["lengths"] == [160, 256] and data["grid"]["depths"] == [0, 25, 50, 75, 100]
    assert data["grid"]["exact"] == [[1.0] * 5] * 2
    md = (out / "needle.md").read_text()
    assert "| 256 | 1.00 | 1.00 | 1.00 | 1.00 | 1.00 |" in md
    png = (out / "needle.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert run(oracle_cfg(source, out), progress=False)["skipped"]


def test_windowed_copier_fails_exactly_where_the_needle_is_out_of_reach(source, tmp_path):
    W = 120
    cfg = oracle_cfg(source, tmp_path / "w")
    run(cfg, progress=False, model=CopyOracle(320, window=W))
    data = json.loads((tmp_path / "w" / "needle.json").read_text())
    text = NeedleText(cfg, tok_encode(source))
    expect = []
    for c in data["cells"]:
        value_end_of_lead = c["needle_at"] + len(text.before_ids) - 1    # where the oracle must look back to
        reachable = (c["prompt_tokens"] - 1) - value_end_of_lead <= W
        expect.append(reachable)
        assert c["exact"] == reachable and (c["rank"] == 0) == reachable, c
    assert any(expect) and not all(expect)                  # the grid has both outcomes
    g = data["grid"]["exact"]
    assert g[0][-1] == 1.0 and g[1][0] == 0.0               # deep needles found, far ones lost


def test_non_copier_scores_zero(source, tmp_path):
    res = run(oracle_cfg(source, tmp_path / "z"), progress=False, model=CopyOracle(320, copies=False))
    assert res["exact"] == 0.0 and res["rank_acc"] == 0.0     # all values tie: ties are not retrieval


def test_interrupted_run_continues_from_finished_cells(source, tmp_path):
    out = tmp_path / "r"
    full = run(oracle_cfg(source, out), progress=False, model=CopyOracle(320, window=120))
    before = json.loads((out / "needle.json").read_text())
    (out / "DONE.json").unlink()
    lines = (out / "cells.jsonl").read_text().splitlines()
    (out / "cells.jsonl").write_text("\n".join(lines[:4]) + "\n" + lines[4][:20])   # killed mid-write
    oracle = CopyOracle(320, window=120)
    again = run(oracle_cfg(source, out), progress=False, model=oracle)
    assert oracle.calls == 6 * 4                             # 6 cells left, 1 + 3 distractors each
    assert again == full and json.loads((out / "needle.json").read_text())["cells"] == before["cells"]
    # other settings in the same out_dir: the old cells are not reused
    (out / "DONE.json").unlink()
    oracle = CopyOracle(320)
    run(oracle_cfg(source, out, "seed=1"), progress=False, model=oracle)
    assert oracle.calls == 10 * 4


def test_tiny_model_end_to_end_with_rope_modes(source, tmp_path):
    base = ["lengths=[40, 96]", "depths=[0, 100]", *SHORT, "distractors=1"]
    res = run(cfg_for(source, tmp_path / "naive", *base), progress=False)      # 96 > max_seq_len 64
    assert res["cells"] == 4 and 0.0 <= res["exact"] <= 1.0
    data = json.loads((tmp_path / "naive" / "needle.json").read_text())
    assert data["rope"]["rope_scaling"] is None and all(c["logprob"] < 0 for c in data["cells"])
    res = run(cfg_for(source, tmp_path / "ntk", *SHORT, "lengths=[96]", "depths=[50]", "distractors=0",
                      "rope=dynamic", "rope_factor=8"), progress=False)
    data = json.loads((tmp_path / "ntk" / "needle.json").read_text())
    assert data["rope"]["rope_scaling"] == {"type": "dynamic", "factor": 8.0, "original_max_position_embeddings": 64,
                                            "low_freq_factor": 1.0, "high_freq_factor": 4.0}   # llama3-only keys
    assert (tmp_path / "ntk" / "needle.png").is_file() and res["cells"] == 1
    # text documents as the haystack, through the tokenizer
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": str(i), "text": f"Line {i}: the quick brown fox."}) + "\n"
                            for i in range(30)))
    res = run(cfg_for(source, tmp_path / "txt", *SHORT, f"haystack={docs}", "rope=model", "lengths=[60]",
                      "depths=[0, 100]", "distractors=1"), progress=False)
    assert res["cells"] == 2
    assert json.loads((tmp_path / "txt" / "needle.json").read_text())["haystack_tokens"] >= 120


def test_tail_logits_match_full_forward():
    cfg = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, max_seq_len=16,
                      rope_scaling=RopeScaling("dynamic", 4.0))
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    ids = torch.randint(0, 64, (2, 40))                       # past max_seq_len: NTK active
    with torch.no_grad():
        torch.testing.assert_close(tail_logits(model, ids, 5), model(ids)[:, -5:])
    ll, exact = needle.continuation(model, [1, 2, 3], [4, 5], "cpu")
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([[1, 2, 3, 4]])).float(), -1)[0]
    assert ll == pytest.approx(float(logp[2, 4] + logp[3, 5]), abs=1e-5)
    assert exact == bool(logp[2].argmax() == 4 and logp[3].argmax() == 5)


@pytest.mark.parametrize("extra,key", [
    (["rope=model", "lengths=[96]", *SHORT], "lengths"),     # beyond max_seq_len 64 without an extension
    (["lengths=[100, 200]"], "needle"),                      # default needle + question + answer: 108 tokens
    (["checkpoint=/nonexistent"], "checkpoint"),
    (["haystack=/nonexistent/x.jsonl"], "haystack"),
])
def test_bad_input_is_one_line_config_error_before_work(source, tmp_path, extra, key):
    out = tmp_path / "bad"
    with pytest.raises(ConfigError, match=rf"^{key}: ") as e:
        run(cfg_for(source, out, *extra), progress=False)
    assert "\n" not in str(e.value) and not out.exists()


@pytest.mark.parametrize("extra,key", [(["depths=[120]"], "depths"), (["needle=no value"], "needle"),
                                       (["lengths=[]"], "lengths"), (["value_digits=1", "distractors=10"],
                                                                     "distractors"),
                                       (["rope=yarn"], "rope")])
def test_bad_config_refused_at_load(source, extra, key):
    with pytest.raises(ConfigError, match=rf"\b{key}: "):
        cfg_for(source, "x", *extra)


def test_rope_extension_configs():
    from lmforge.model.rope import extension_config
    cfg = ModelConfig(vocab_size=64, d_model=32, n_layers=1, n_heads=4, max_seq_len=16)
    assert extension_config(cfg, "model") is cfg and extension_config(cfg, "naive").rope_scaling is None
    ntk = extension_config(cfg, "dynamic", 8)
    assert ntk.rope_scaling == RopeScaling("dynamic", 8.0, 16) and ntk.max_seq_len == 16
    lin = extension_config(dataclasses.replace(cfg, rope_scaling=RopeScaling("dynamic", 2.0, 8)), "linear", 4)
    assert lin.rope_scaling == RopeScaling("linear", 4.0, 8)
    with pytest.raises(ValueError):
        extension_config(cfg, "yarn")
