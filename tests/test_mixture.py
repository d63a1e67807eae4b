import json

import numpy as np
import pytest

from lmforge import config
from lmforge.config import ConfigError, from_dict
from lmforge.shards import TokenDataset, write_dataset
from lmforge.train.loader import PackedLoader
from lmforge.train.mixture import MixtureConfig, MixtureSampler, domain_token_counts, plan, shares

DOMAINS = ["web", "books", "wiki", "instruct"]


@pytest.fixture
def mixed(tmp_path):
    """Four domains with very different document lengths and sizes."""
    rng = np.random.default_rng(0)
    lens = {"web": (5, 40), "books": (30, 60), "wiki": (20, 60), "instruct": (10, 30)}
    n = {"web": 300, "books": 40, "wiki": 60, "instruct": 50}
    docs = []
    for d, name in enumerate(DOMAINS):
        for _ in range(n[name]):
            docs.append((rng.integers(3, 100, size=int(rng.integers(*lens[name]))).tolist(), d))
    write_dataset(tmp_path / "mix", docs, 128, DOMAINS)
    write_dataset(tmp_path / "mix", docs[:40:4], 128, DOMAINS, split="val")
    return tmp_path / "mix"


def mix(**kw):
    return from_dict(MixtureConfig, kw)


def test_shares_math():
    counts = {"a": 100, "b": 300}
    assert shares(mix(), counts) == pytest.approx({"a": 0.25, "b": 0.75})
    assert shares(mix(repeat={"a": 5}), counts) == pytest.approx({"a": 500 / 800, "b": 300 / 800})
    assert shares(mix(weights={"a": 3, "b": 1}), counts) == pytest.approx({"a": 0.75, "b": 0.25})
    r = mix(weights={"a": 1, "b": 1}, ramp={"domain": "a", "start": 0.1, "end": 0.4})
    assert shares(r, counts, 0.0) == pytest.approx({"a": 0.1, "b": 0.9})
    assert shares(r, counts, 1.0) == pytest.approx({"a": 0.4, "b": 0.6})


def test_sampler_realises_token_shares(mixed):
    ds = TokenDataset(mixed)
    sampler = MixtureSampler(ds, seed=1)
    target = {"web": 0.4, "books": 0.3, "wiki": 0.2, "instruct": 0.1}
    sampler.set_shares(target)
    loader = PackedLoader(ds, 64, 8, sampler)
    for _ in range(80):
        loader.next_batch()
    got = loader.tokens_by_domain / loader.tokens_by_domain.sum()
    for d, name in enumerate(DOMAINS):
        assert got[d] == pytest.approx(target[name], abs=0.03)
    assert sampler.epochs()["books"] >= 1  # books (x share / its size) is seen more than once


def test_sampler_state_roundtrip(mixed):
    ds = TokenDataset(mixed)
    a = MixtureSampler(ds, seed=3)
    a.set_shares({"web": 0.5, "books": 0.5})
    for _ in range(100):
        a.next_doc()
    state = json.loads(json.dumps(a.state_dict()))
    want = [a.next_doc() for _ in range(50)]
    b = MixtureSampler(ds, seed=3)
    b.set_shares({"web": 0.5, "books": 0.5})
    b.load_state_dict(state)
    assert [b.next_doc() for _ in range(50)] == want


def test_plan_reports_epochs(mixed):
    counts = domain_token_counts(TokenDataset(mixed))
    st = from_dict(__import__("lmforge.train.mixture", fromlist=["StageConfig"]).StageConfig,
                   {"name": "s", "steps": 10, "mixture": {"weights": {"books": 1}}})
    row = plan([st], counts, 1000)[0]
    assert row["epochs"]["books"] == pytest.approx(10 * 1000 / counts["books"])
    assert row["epochs"]["web"] == 0


TINY = ["model.vocab_size=128", "model.d_model=32", "model.n_layers=1", "model.n_heads=2",
        "model.max_seq_len=64", "train.seq_len=64", "train.micro_batch_size=4", "train.eval_batches=1"]


def pretrain_cfg(data, out, *extra, stages=None):
    from lmforge.stages.pretrain import PretrainConfig
    data_dict = {"stages": stages} if stages else {}
    return config.load(PretrainConfig, None, [f"data={data}", f"out_dir={out}", *TINY, *extra], data=data_dict)


def test_index_decay_stage_shifts_mixture(mixed, tmp_path):
    """Index-1.9B: the WSD decay stage raises curated data and adds ~7% instruction data."""
    from lmforge.stages.pretrain import run
    stages = [
        {"name": "stable", "steps": 40, "mixture": {"weights": {"web": 0.8, "books": 0.1, "wiki": 0.1}},
         "schedule": {"kind": "constant", "warmup_steps": 2}},
        {"name": "decay", "steps": 40, "mixture": {"weights": {"web": 0.33, "books": 0.3, "wiki": 0.3, "instruct": 0.07}},
         "schedule": {"kind": "linear", "min_ratio": 0.01}},
    ]
    out = tmp_path / "run"
    run(pretrain_cfg(mixed, out, "train.micro_batch_size=8", stages=stages), progress=False)
    realised = json.loads((out / "mixture.json").read_text())
    assert [r["stage"] for r in realised] == ["stable", "decay"]
    for r, st in zip(realised, stages):
        want = st["mixture"]["weights"]
        for d in DOMAINS:
            assert r["share"][d] == pytest.approx(want.get(d, 0.0), abs=0.05), (r["stage"], d)
    lrs = [json.loads(l)["lr"] for l in (out / "metrics.jsonl").read_text().splitlines() if "lr" in l]
    assert lrs[39] == pytest.approx(5e-4) and lrs[-1] == pytest.approx(5e-6)


def test_skywork_ramp(mixed, tmp_path):
    """Skywork stage 3: a domain's share ramps linearly from 10% to 40% over the stage."""
    from lmforge.stages.pretrain import build
    stages = [{"name": "s3", "steps": 180, "mixture": {"weights": {"web": 1, "books": 1},
                                                      "ramp": {"domain": "wiki", "start": 0.1, "end": 0.4}}}]
    trainer = build(pretrain_cfg(mixed, tmp_path / "r", stages=stages), progress=False)
    obj = trainer.objective
    windows = []
    for w in range(3):
        before = obj.loader.tokens_by_domain.copy()
        for s in range(60 * w, 60 * w + 60):
            obj.on_step(s)
            obj.next_batch()
        delta = obj.loader.tokens_by_domain - before
        windows.append(delta[DOMAINS.index("wiki")] / delta.sum())
    # window means of a 0.1 -> 0.4 ramp: 0.15, 0.25, 0.35
    assert windows == pytest.approx([0.15, 0.25, 0.35], abs=0.05)


@pytest.mark.parametrize("stages,needle", [
    ([{"steps": 5, "mixture": {"weights": {"news": 1}}}], "stages[0].mixture: unknown domain 'news'"),
    ([{"steps": 5, "mixture": {"weights": {"web": 0, "books": 0}}}], "must sum to a positive number"),
    ([{"steps": 5, "mixture": {"weights": {"web": -1}}}], "weights.web: must be >= 0"),
    ([{"steps": 0}], "steps"),
])
def test_bad_mixtures_refused(mixed, tmp_path, stages, needle):
    from lmforge.stages.pretrain import run
    with pytest.raises(ConfigError) as e:
        run(pretrain_cfg(mixed, tmp_path / "x", stages=stages), progress=False)
    assert needle in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "x").exists()


def test_empty_domain_refused(tmp_path):
    from lmforge.stages.pretrain import run
    write_dataset(tmp_path / "d", [[5, 6, 7]] * 4, 128, ["web", "empty"])
    stages = [{"steps": 5, "mixture": {"weights": {"web": 1, "empty": 1}}}]
    with pytest.raises(ConfigError, match="'empty' has a positive share but no training tokens"):
        run(pretrain_cfg(tmp_path / "d", tmp_path / "x", stages=stages), progress=False)


def test_batch_growth_schedule_and_exact_resume(mixed, tmp_path):
    from lmforge.stages.pretrain import build, run
    extra = ["train.steps=8", "train.ckpt_every=4", "train.batch_growth.schedule={3: 2, 6: 4}",
             "train.schedule.kind=constant", "train.optim.lr=3e-5"]
    run(pretrain_cfg(mixed, tmp_path / "a", *extra), progress=False)
    recs = [json.loads(l) for l in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines() if "loss" in l]
    assert [r["grad_accum"] for r in recs] == [1, 1, 1, 2, 2, 2, 4, 4]
    assert [r["tokens"] for r in recs] == [256, 256, 256, 512, 512, 512, 1024, 1024]
    cfg = pretrain_cfg(mixed, tmp_path / "b", *extra)
    t = build(cfg, progress=False)
    for _ in range(4):
        t.train_step(); t.step += 1
    t.save_checkpoint()
    run(cfg, progress=False)
    recs_b = [json.loads(l) for l in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines() if "loss" in l]
    assert [r["loss"] for r in recs_b] == [r["loss"] for r in recs[4:]]


def test_batch_growth_on_plateau(mixed, tmp_path):
    from lmforge.stages.pretrain import build
    cfg = pretrain_cfg(mixed, tmp_path / "p", "train.steps=10", "train.eval_every=1",
                       "train.batch_growth.plateau_patience=2", "train.batch_growth.max_grad_accum=4")
    t = build(cfg, progress=False)
    for v in [3.0, 2.5, 2.6, 2.55]:  # two evals without beating 2.5 -> double
        t.batch_growth.observe(v)
    assert t.grad_accum() == 2
    for v in [2.7, 2.8, 2.9, 2.95]:
        t.batch_growth.observe(v)
    assert t.grad_accum() == 4  # capped at max_grad_accum
    with pytest.raises(ConfigError, match="eval_every"):
        pretrain_cfg(mixed, tmp_path / "q", "train.batch_growth.plateau_patience=2")


def test_repeat_is_epochs_of_a_source_and_refused_beside_final_weights():
    """`repeat` counts a source's natural tokens N times; explicit weights are final shares, so
    multiplying them (Skywork's recipe did: curated .16 x 5 became .488) is refused in one line."""
    counts = {"prose": 600, "curated": 100, "zh": 300}
    got = shares(mix(repeat={"curated": 5}), counts)
    assert got["curated"] == pytest.approx(500 / 1400) and got["prose"] == pytest.approx(600 / 1400)
    with pytest.raises(ConfigError) as e:
        mix(weights={"prose": 0.362, "curated": 0.16, "zh": 0.396, "code": 0.08}, repeat={"curated": 5})
    assert "repeat" in str(e.value) and "final" in str(e.value) and "\n" not in str(e.value)


def test_batch_growth_carried_across_init_from_checkpoint(mixed, tmp_path):
    """Yi-9B: phase 2 (init.from_checkpoint) goes on at the batch phase 1 had grown to."""
    from lmforge.stages.pretrain import build, run
    grow = ["train.schedule.kind=constant", "train.optim.lr=0", "train.eval_every=1", "train.eval_batches=1",
            "train.batch_growth.plateau_patience=1", "train.batch_growth.max_grad_accum=8"]
    run(pretrain_cfg(mixed, tmp_path / "p1", "train.steps=4", "train.ckpt_every=4", *grow), progress=False)
    recs = [json.loads(l) for l in (tmp_path / "p1" / "metrics.jsonl").read_text().splitlines() if "loss" in l]
    grown = recs[-1]["grad_accum"]
    assert grown > 1                       # lr 0: the loss never falls, so the batch grew
    p2 = ["train.steps=2", f"init.from_checkpoint={tmp_path / 'p1'}", *grow]
    carried = build(pretrain_cfg(mixed, tmp_path / "p2", "train.batch_growth.carry=true", *p2), progress=False)
    carried.init_from(next((tmp_path / "p1" / "checkpoints").glob("step-*")))
    last_mult = json.loads(next((tmp_path / "p1" / "checkpoints").glob("step-*")).joinpath("trainer.json")
                           .read_text())["growth"]["mult"]
    assert carried.grad_accum() == min(last_mult, 8) and carried.grad_accum() >= grown
    fresh = build(pretrain_cfg(mixed, tmp_path / "p3", *p2), progress=False)
    fresh.init_from(next((tmp_path / "p1" / "checkpoints").glob("step-*")))
    assert fresh.grad_accum() == 1         # without carry: back at the starting batch
    # a different rows-per-micro-batch keeps the batch in TOKENS, not in micro-batches
    half = build(pretrain_cfg(mixed, tmp_path / "p4", "train.batch_growth.carry=true", *p2,
                              "train.grad_accum=2"), progress=False)
    half.init_from(next((tmp_path / "p1" / "checkpoints").glob("step-*")))
    assert half.grad_accum() == carried.grad_accum()   # the same tokens per step
