"""TensorBoard and W&B mirror metrics.jsonl: same names, same steps, same values; a resumed run
does not duplicate steps."""
import json
import math
import shutil
import sys
import time
import types

import pytest

from lmforge import config
from lmforge.stages.pretrain import PretrainConfig, run
from lmforge.train import trackers
from lmforge.train.trainer import TrainConfig
from test_eval_helpers import tiny_run

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def tb_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def expected_from_metrics(records) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list] = {}
    for r in records:
        for k, v in trackers.numbers(r).items():
            out.setdefault(k, []).append((r["step"], v))
    return out


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)


def assert_mirrors(tb, metrics):
    assert set(tb) == set(metrics), set(tb) ^ set(metrics)
    for tag, want in metrics.items():
        got = tb[tag]
        assert [s for s, _ in got] == [s for s, _ in want], tag         # every step once, in order
        assert all(same(g, w) for (_, g), (_, w) in zip(got, want)), (tag, got, want)


def test_tensorboard_events_equal_metrics_jsonl_and_resume_does_not_duplicate(tmp_path):
    extra = ["train.trackers=[tensorboard]", "train.ckpt_every=2", "train.keep_last=3"]
    out = tiny_run(tmp_path, steps=5, extra=extra)
    trackers.close_all()
    metrics = expected_from_metrics(jsonl(out / "metrics.jsonl"))
    assert {"loss", "lr", "grad_norm", "val/mean", "val/prose", "tokens_seen"} <= set(metrics)
    assert_mirrors(tb_scalars(out / "tensorboard"), metrics)

    # an interrupted attempt: the run is taken back to its step-2 checkpoint and resumed, so
    # steps 3-5 are logged a second time; TensorBoard must still hold each step once
    (out / "DONE.json").unlink()
    for step in ("step-4", "step-5"):
        shutil.rmtree(out / "checkpoints" / step, ignore_errors=True)
    run(config.from_dict(PretrainConfig, json.loads((out / "config.json").read_text())), progress=False)
    trackers.close_all()
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 2
    records = jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4, 5]
    assert_mirrors(tb_scalars(out / "tensorboard"), expected_from_metrics(records))


def test_a_missing_tracker_package_is_a_config_error(monkeypatch):
    real = trackers.importlib.util.find_spec
    monkeypatch.setattr(trackers.importlib.util, "find_spec", lambda name: None if name == "wandb" else real(name))
    with pytest.raises(config.ConfigError, match=r"train.trackers: wandb needs the wandb package: "
                                                 r"pip install 'lmforge\[wandb\]'"):
        config.from_dict(PretrainConfig, {"data": "d", "train": {"trackers": ["wandb"]}})
    with pytest.raises(config.ConfigError, match="expected one of"):
        config.from_dict(TrainConfig, {"trackers": ["mlflow"]})


class FakeRun:
    def __init__(self, **kw):
        self.kw, self.logged, self.finished = kw, [], False

    def log(self, values, step):
        self.logged.append((step, dict(values)))

    def finish(self):
        self.finished = True


def test_wandb_gets_the_same_names_steps_and_run_id_offline(tmp_path, monkeypatch):
    """With a stand-in `wandb` module: what lmforge asks of W&B (the real one is tested below)."""
    runs = []
    fake = types.SimpleNamespace(run=None)

    def init(**kw):
        runs.append(FakeRun(**kw))
        fake.run = runs[-1]
        return runs[-1]

    fake.init = init
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    out = tmp_path / "runs" / "r" / "sft"
    for first in (1, 3):                     # a first attempt, then a resumed one
        owner = types.SimpleNamespace()
        recs = [{"step": s, "loss": 1.0 / s, "skipped": False, "stage": "x"} for s in range(first, 5)]
        for r in recs:
            trackers.log_record(owner, ["wandb"], out, {"train": {"steps": 4}}, r)
    trackers.close_all()
    run_id = (out / "wandb" / "run_id").read_text().strip()
    assert len(run_id) == 8 and [r.kw["id"] for r in runs] == [run_id, run_id] and all(r.kw["resume"] == "allow" for r in runs)
    assert runs[0].kw["mode"] == "offline" and runs[0].kw["name"] == "sft" and runs[0].kw["group"] == "r"
    assert runs[0].logged == [(s, {"loss": 1.0 / s, "skipped": 0.0}) for s in range(1, 5)]
    assert [s for s, _ in runs[1].logged] == [3, 4] and all(r.finished for r in runs)


def test_real_wandb_offline_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    out = tiny_run(tmp_path, steps=3, extra=["train.trackers=[wandb]"])
    trackers.close_all()
    files = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1
    # the file is written by wandb's own service process: on a loaded machine its records
    # reached the disk after finish() returned (a fresh-clone CI run read only the header)
    names = [n.encode() for n in ("grad_norm", "val/mean", "tokens_per_s")]
    deadline = time.monotonic() + 30
    while not all(n in files[0].read_bytes() for n in names) and time.monotonic() < deadline:
        time.sleep(0.5)
    blob = files[0].read_bytes()
    for name in names:
        assert name in blob
