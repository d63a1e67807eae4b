"""The Ray executor: a local Ray cluster runs the same pipeline and writes the same files
as the local executor; a missing Ray gives a one-line install hint."""
import importlib.util
import json
import operator
import random
import sys

import pytest

from lmforge.config import ConfigError
from lmforge.data import executors as executor_mod
from lmforge.data.pipeline import run_pipeline
from lmforge.io.writers import write_documents
from test_data_pipeline import config, make_corpus, prose

STEPS = ["extract", "code", "filters", "langid", "quality", "minhash", "substring", "topics",
         "decontam"]


@pytest.fixture(scope="module")
def ray_module():
    ray = pytest.importorskip("ray")
    yield ray
    ray.shutdown()


def start(ray):
    """A local 2-CPU cluster, started late: processes forked by the local executor after
    ray.init inherit Ray's signal handlers and print stack traces when the pool ends them."""
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    return ray


def _normalise(obj, out: str):
    """JSON with run-dependent parts removed: timings and the output folder's own path."""
    if isinstance(obj, dict):
        return {k: _normalise(v, out) for k, v in obj.items() if k != "seconds"}
    if isinstance(obj, list):
        return [_normalise(v, out) for v in obj]
    return obj.replace(out, "OUT") if isinstance(obj, str) else obj


def _snapshot(out) -> dict:
    files = {}
    for p in sorted(out.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            if p.name.endswith(".json") or p.name in ("DONE", "PREPARED"):
                data = _normalise(json.loads(data), str(out))
            files[str(p.relative_to(out))] = data
    return files


def _pipeline_config(tmp_path, out, **kw):
    rng = random.Random(2)
    ref = tmp_path / "ref.jsonl"
    if not ref.exists():
        write_documents(ref, [{"id": str(i), "text": prose(rng, 80), "meta": {"domain": "web"}}
                              for i in range(60)])
    bench = tmp_path / "bench.jsonl"  # eval items: 30 words from inside each of c.jsonl's first 3 docs
    if not bench.exists():
        rng3 = random.Random(3)
        write_documents(bench, [{"text": " ".join(prose(rng3, 70).split()[20:50])} for _ in range(3)])
    return config(tmp_path, output=str(out), workers=2, steps=STEPS, langid={"allowed": ["en"]},
                  decontam={"eval": [str(bench)]},
                  topics={"clusters": 2, "weights": {0: 0.5, 1: 0.5}},
                  quality={"positive": [str(ref)], "n_features": 4096},
                  minhash={"threshold": 0.7},
                  substring={"min_bytes": 40, "mode": "shuffle", "partitions": 2},
                  **kw)


def test_ray_run_writes_the_same_files_as_local(tmp_path, ray_module):
    make_corpus(tmp_path / "raw")
    rng = random.Random(3)  # a shared trailer: repeated substrings for the substring shuffle
    trailer = " Read more stories about the river valley and the old mill in our weekly letter."
    write_documents(tmp_path / "raw/c.jsonl", [{"id": f"t{i}", "text": prose(rng, 70) + trailer}
                                               for i in range(20)])
    local = run_pipeline(_pipeline_config(tmp_path, tmp_path / "local"), log=lambda *a: None)
    ray_session = start(ray_module)
    remote = run_pipeline(_pipeline_config(tmp_path, tmp_path / "ray", executor="ray"),
                          log=lambda *a: None)
    assert ray_session.is_initialized()  # a session it did not start is left running
    a, b = _snapshot(tmp_path / "local"), _snapshot(tmp_path / "ray")
    assert sorted(a) == sorted(b)
    assert any(k.endswith(".jsonl.zst") and "/kept/" in k for k in a)
    for k in a:
        assert a[k] == b[k], f"{k} differs between the local and the Ray run"
    # the run really removed things in every global step (the comparison is not vacuous)
    removed = {r for s in local["steps"] for r in s["removed"]}
    assert {"minhash_duplicate", "substring_spans", "quality_low", "topic_downsampled",
            "eval_ngram"} <= removed
    assert [s["kept"] for s in local["steps"]] == [s["kept"] for s in remote["steps"]]


def test_ray_map_keeps_task_order_and_raises_task_errors(ray_module):
    ray_session = start(ray_module)
    from lmforge.data.ray_executor import RayExecutor

    ex = RayExecutor(progress=False, max_in_flight=3)
    assert ex.map(pow, [(2, i) for i in range(20)]) == [2 ** i for i in range(20)]
    shared = list(range(100))  # the same object in every task goes to the object store once
    assert ex.map(operator.getitem, [(shared, i) for i in (5, 50, 99)]) == [5, 50, 99]
    assert ex.map(pow, []) == []
    with pytest.raises(ValueError, match="invalid literal"):
        ex.map(int, [("1",), ("x",), ("3",)])
    ex.close()
    assert ray_session.is_initialized()


def test_unreachable_cluster_is_a_one_line_error(ray_module, monkeypatch):
    from lmforge.data.ray_executor import RayExecutor

    if ray_module.is_initialized():
        ray_module.shutdown()
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(ValueError, match="ray_address: cannot join the Ray cluster at 'auto'"):
        RayExecutor(address="auto", progress=False).map(pow, [(2, 3)])


def test_ray_missing_is_a_clear_error(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(ConfigError, match=r"executor: Ray is not installed.*pip install 'lmforge\[ray\]'"):
        config(tmp_path, executor="ray")
    # building the executor directly without Ray says the same
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.delitem(sys.modules, "lmforge.data.ray_executor", raising=False)

    class Data:
        executor, ray_address, workers, progress = "ray", None, 1, False
    with pytest.raises(ImportError, match=r"pip install 'lmforge\[ray\]'"):
        executor_mod.make_executor(Data())


def test_ray_address_needs_ray_executor(tmp_path):
    with pytest.raises(ConfigError, match="ray_address"):
        config(tmp_path, ray_address="auto")
    assert isinstance(executor_mod.make_executor(config(tmp_path)), executor_mod.LocalExecutor)
