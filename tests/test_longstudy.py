"""The long-context study (issue 17 items 1, 2, 4): perplexity by length checked against a
plain forward, RoPE settings compared, needle + retrieval tasks with copy oracles, the
seesaw, plots, report section, resume."""
import json
import math
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lmforge import config
from lmforge.config import ConfigError
from lmforge.eval.context_ppl import long_sequences, position_nll
from lmforge.eval.long_tasks import Pieces, kv_retrieval, multi_needle, multi_value, score_query
from lmforge.shards import TokenDataset, write_dataset
from lmforge.stages.longstudy import LongStudyConfig, run

sys.path.insert(0, str(Path(__file__).parent))
from test_eval_helpers import tiny_run  # noqa: E402
from test_needle import tok_encode  # noqa: E402

FIX = Path(__file__).parent / "fixtures" / "longbench"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(base run: max_seq_len 64, theta 1e4; long run: 256, theta 4e4, 4 steps of longctx)."""
    from lmforge.stages.longctx import LongCtxConfig, run as longctx
    torch.set_num_threads(2)
    base = tiny_run(tmp_path_factory.mktemp("src"), steps=2)
    long = tmp_path_factory.mktemp("long") / "run"
    longctx(config.load(LongCtxConfig, None, [
        f"data={base.parent / 'tokens'}", f"init.from_checkpoint={base}", f"out_dir={long}",
        "model.rope_theta=40000", "train.seq_len=256", "train.micro_batch_size=1", "train.steps=4",
        "train.optim.lr=1e-3", "train.schedule.warmup_steps=1", "min_doc_tokens=20", "train.eval_batches=1"]),
        progress=False)
    return base, long


def study_cfg(runs, out, *extra):
    base, long = runs
    data = base.parent / "tokens"
    settings = (f"settings=[{{name: base, checkpoint: {base}}}, {{name: long, checkpoint: {long}}}, "
                f"{{name: ntk, checkpoint: {base}, rope: dynamic, factor: 2}}, "
                f"{{name: naive, checkpoint: {base}, rope: naive}}, "
                f"{{name: base1e6, checkpoint: {base}, rope: naive, rope_theta: 1000000.0}}]")
    return config.load(LongStudyConfig, None, [settings, f"out_dir={out}", f"ppl.data={data}", "ppl.split=train",
                                               "ppl.lengths=[16,64,256]", "ppl.max_seqs=3", "ppl.min_docs=2",
                                               f"needle.haystack={data}", "needle.lengths=[48,96]",
                                               "needle.depths=[0,100]", "needle.distractors=2",
                                               "needle.needle=' The key is {value}. '",
                                               "needle.question=' So the key is'", "needle.value_digits=3",
                                               "tasks.kinds=[multi_needle,kv]", "tasks.lengths=[224]",
                                               "tasks.trials=1", "tasks.needles=2", "tasks.distractors=1",
                                               "tasks.kv_depths=[50]", f"longbench.files=[{FIX / 'hotpotqa.jsonl'}]",
                                               *extra])


@pytest.fixture(scope="module")
def study(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "s"
    run(study_cfg(runs, out), progress=False)
    return out, json.loads((out / "longstudy.json").read_text())


def test_study_compares_settings(study):
    out, s = study
    ppl = s["ppl"]["results"]
    assert set(ppl) == {"base", "long", "ntk", "naive", "base1e6"}
    # as trained, a setting stops at its trained length; naive / dynamic go past it
    assert ppl["base"]["256"] is None and ppl["long"]["256"] is not None
    assert ppl["naive"]["256"]["ppl"] > 0 and ppl["ntk"]["256"]["ppl"] > 0
    # Dynamic NTK changes nothing within the trained length, and naive = plain RoPE there
    for L in ("16", "64"):
        assert ppl["ntk"][L]["ppl"] == pytest.approx(ppl["base"][L]["ppl"], rel=1e-6)
        assert ppl["naive"][L]["ppl"] == pytest.approx(ppl["base"][L]["ppl"], rel=1e-6)
    assert ppl["ntk"]["256"]["loss"] != ppl["naive"]["256"]["loss"]          # (a 2-step model: tiny effects)
    assert ppl["base1e6"]["64"]["loss"] != ppl["base"]["64"]["loss"]         # another base
    info = {x["name"]: x for x in s["settings"]}
    assert info["base1e6"]["rope_theta"] == 1e6 and info["base1e6"]["trained_rope_theta"] == 1e4
    assert info["long"]["rope_theta"] == 40000 and info["base"]["window"] == 64
    # where each length's sequences came from: short lengths from documents, 256 concatenated
    src = s["ppl"]["sources"]
    assert src["16"]["source"] == "documents" and src["256"]["source"] == "concatenated"
    assert all(v["sequences"] == 3 for v in src.values())
    # the seesaw: short-context ppl per domain at the baseline's trained length, % vs baseline
    assert s["short"]["seq_len"] == 64 and s["baseline"] == "base"
    assert set(s["short"]["results"]["long"]["ppl"]) >= {"prose", "code", "all"}
    assert all(v == pytest.approx(0.0) for v in s["short"]["seesaw"]["base"].values())
    b, lg = s["short"]["results"]["base"]["ppl"]["all"], s["short"]["results"]["long"]["ppl"]["all"]
    assert s["short"]["seesaw"]["long"]["ppl/all"] == pytest.approx(100 * (lg / b - 1))
    # needles per setting: the base cannot run 96 tokens as trained, naive can
    assert s["needle"]["results"]["base"]["skipped_cells"] == 2 and s["needle"]["results"]["naive"][
        "skipped_cells"] == 0
    assert s["needle"]["results"]["long"]["summary"]["cells"] == 4
    tasks = s["tasks"]["long"]
    assert set(tasks) == {"multi_needle", "kv"} and tasks["multi_needle"]["224"]["n"] == 2
    # LongBench: generated and scored where the window holds a prompt; the malformed line reported
    lbr = s["longbench"]
    assert lbr["long"]["hotpotqa"]["n"] == 2 and 0.0 <= lbr["long"]["hotpotqa"]["score"] <= 100.0
    assert "skipped" in lbr["base"]["hotpotqa"] and len(lbr["long"]["malformed"]) == 1
    for name in ("ppl_vs_length", "rope_heatmap", "needle", "seesaw"):
        assert (out / f"{name}.png").stat().st_size > 2000
    md = (out / "longstudy.md").read_text()
    assert "Perplexity by context length" in md and "seesaw" in md and "Retrieval tasks" in md and "LongBench" in md


def test_report_shows_the_study(study, tmp_path):
    from lmforge.report.build import build_report
    out, _ = study
    res = build_report(out, tmp_path / "rep")
    assert "longstudy" in res["sections"]
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Long-context study" in md and "Short context" in md and "_rope_heatmap.png" in md


def test_study_resumes_from_finished_parts(runs, study, tmp_path, monkeypatch):
    import shutil

    import lmforge.eval.context_ppl as cp
    out, first = study
    again = tmp_path / "again"
    shutil.copytree(out, again)
    (again / "DONE.json").unlink()

    def boom(*a, **k):
        raise AssertionError("recomputed a finished part")
    monkeypatch.setattr(cp, "ppl_at_length", boom)
    run(study_cfg(runs, again), progress=False)
    assert json.loads((again / "longstudy.json").read_text())["ppl"] == first["ppl"]


def test_position_nll_matches_a_plain_forward(runs):
    from lmforge.model.load import load_checkpoint
    model, _ = load_checkpoint(runs[1])
    ids = torch.randint(0, model.cfg.vocab_size, (1, 100))
    with torch.no_grad():
        ref = -torch.log_softmax(model(ids[:, :-1])[0, :, :model.cfg.vocab_size].double(), -1)
    want = ref.gather(1, ids[0, 1:, None])[:, 0]
    got = position_nll(model, ids, chunk=7).double()
    assert torch.allclose(got, want, atol=1e-4)


def test_long_sequences_documents_or_concatenation(tmp_path):
    docs = [list(range(3, 3 + n)) + [1] for n in (10, 40, 50, 5, 60)]
    write_dataset(tmp_path, docs, 128, eos_id=1, split="val")
    ds = TokenDataset(tmp_path, "val")
    seqs, info = long_sequences(ds, 39, 8, 2)
    assert info["source"] == "documents" and info["long_docs"] == 3 and len(seqs) == 3
    assert all(len(s) == 40 for s in seqs) and seqs[0].tolist() == docs[4][:40]     # longest first
    seqs, info = long_sequences(ds, 59, 8, 2)          # one document is long enough: concatenate
    flat = [t for d in docs for t in d]
    assert info["source"] == "concatenated" and [s.tolist() for s in seqs] == [flat[0:60], flat[60:120]]   # 170 tokens in all
    with pytest.raises(ConfigError, match="baseline"):
        config.load(LongStudyConfig, None, ["settings=[{name: a, checkpoint: x}]", "baseline=b", "ppl.data=d"])


class Oracle(torch.nn.Module):
    """Copies the token that followed the latest earlier match of the last k tokens (k <= kmax)."""

    def __init__(self, vocab, kmax=4):
        super().__init__()
        self.vocab, self.kmax = vocab, kmax
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, ids):
        B, T = ids.shape
        out = torch.zeros(B, T, self.vocab)
        seq = ids[0].tolist()
        for t in range(max(0, T - 24), T):
            pred = 0
            for k in range(self.kmax, 0, -1):
                hits = [j for j in range(t - 1, k - 2, -1) if seq[j - k + 1:j + 1] == seq[t - k + 1:t + 1]]
                if hits:
                    pred = seq[hits[0] + 1]
                    break
            out[0, t, pred] = 10.0
        return out


def test_retrieval_tasks_built_as_specified_and_scored_with_oracles(runs):
    base, _ = runs
    enc = tok_encode(base)
    pc = Pieces(enc, 4)
    stream = np.array(enc("The quick brown fox jumps over the lazy dog. ") * 40)
    qs = multi_needle(pc, stream, 300, 0, 3, 2, seed=1)
    assert len(qs) == 3 and all(len(q.prompt) == 300 for q in qs)
    values = [q.pieces[0] for q in qs]
    for q in qs:                      # every value sits in the context; the others are the hard distractors
        assert all(any(q.prompt[i:i + len(v)] == v for i in range(len(q.prompt))) for v in values)
        assert sum(d in values for d in q.distractors) == 2 and len(q.distractors) == 4
    vocab = 400
    good, nearest = Oracle(vocab, kmax=16), Oracle(vocab, kmax=1)   # chars-level tokens: keys share tails
    good_cells = [score_query(good, q, "cpu") for q in qs]
    assert all(c["exact"] and c["rank"] == 0 for c in good_cells)
    # a model that copies whatever followed the last "is" gets only the last needle right
    near = [score_query(nearest, q, "cpu")["exact"] for q in qs]
    assert sum(near) <= 1
    kv = kv_retrieval(pc, 300, 50.0, 0, 3, seed=2)[0]
    assert len(kv.prompt) <= 300 and score_query(good, kv, "cpu")["exact"]
    mv = multi_value(pc, stream, 300, 0, 3, seed=3)[0]
    assert mv.value_pieces == [0, 2, 4] and len(mv.prompt) == 300
    # a scripted model that knows the first two values only: recall 2/3, not exact
    target = mv.target

    class Partial(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dummy = torch.nn.Parameter(torch.zeros(1))

        def forward(self, ids):
            out = torch.zeros(1, ids.shape[1], vocab)
            P = len(mv.prompt)
            last = len(mv.pieces[4])
            for i, t in enumerate(target):
                wrong = i >= len(target) - last
                out[0, P - 1 + i, (t + 1) % vocab if wrong else t] = 10.0
            return out
    cell = score_query(Partial(), mv, "cpu")
    assert cell["recall"] == pytest.approx(2 / 3) and not cell["exact"]
    random.seed(0)
    assert math.isfinite(cell["logprob"])
