"""Tokenizer encode on the data pipeline's executors (one task per input file, then the shards
written in input order): the same bytes as the streaming encoder, locally and on Ray;
resumable per input file; bad records in the same rejects file."""
import json
from pathlib import Path

import pytest

from lmforge.config import ConfigError
from lmforge.data.executor import LocalExecutor
from lmforge.stages.encode import run as run_encode_stage
from lmforge.tokenizer import encode_parts
from lmforge.tokenizer.encode import EncodeConfig, encode_folder as run_encode
from lmforge.stages.tokenizer import run as run_train
from lmforge.tokenizer.train import TokenizerConfig
from test_tokenizer import make_docs, write_jsonl


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("encparts")
    docs = make_docs(240, seed=5)
    docs[7]["text"] = ""          # empty: counted, not written
    docs[11]["meta"] = {}         # no domain -> "default"
    write_jsonl(d / "in" / "a.jsonl", docs[:90])
    write_jsonl(d / "in" / "b.jsonl", docs[90:170])
    write_jsonl(d / "in" / "c.jsonl", docs[170:])
    with open(d / "in" / "b.jsonl", "a", encoding="utf-8") as f:
        f.write("{not json\n")    # a bad record: the same reject either way
    run_train(TokenizerConfig(inputs=[str(d / "in")], out_dir=str(d / "tok"), vocab_size=600),
              progress=False)
    return d


def _cfg(d, name, **kw):
    return EncodeConfig(**{"inputs": [str(d / "in")], "tokenizer": str(d / "tok"),
                           "out_dir": str(d / name), "batch_docs": 16, "shard_tokens": 3000,
                           "val_docs_per_domain": 4, "workers": 1, **kw})


def _files(folder):
    """Every output file's bytes; stats.json without its run-dependent fields (timings, the
    folder's own path)."""
    out = {}
    for p in sorted(folder.iterdir()):
        data = p.read_bytes()
        if p.name == "stats.json":
            st = json.loads(data)
            data = {k: v.replace(str(folder), "OUT") if isinstance(v, str) else v
                    for k, v in st.items() if k not in ("seconds", "mb_per_s", "workers")}
        out[p.name] = data
    return out


def test_executor_path_writes_the_same_bytes_and_resumes(setup, monkeypatch):
    d = setup
    ref = run_encode(_cfg(d, "stream"), progress=False)
    assert ref["shards"] >= 3 and ref["val_docs"] > 0 and ref["reader_errors"]
    stats = run_encode(_cfg(d, "parts"), progress=False, executor=LocalExecutor(2, progress=False))
    assert _files(d / "stream") == _files(d / "parts")
    assert not (d / "parts" / "parts").exists()  # per-file parts removed once meta.json is written
    assert stats["train_tokens"] == ref["train_tokens"]

    # interrupted after the tasks: finished parts are reused, only the missing one is encoded
    calls = []
    real = encode_parts.encode_file_task

    def counting(*args):
        calls.append((Path(args[3]) / "DONE.json").is_file())  # was this part finished?
        return real(*args)

    cfg = _cfg(d, "resumed")
    monkeypatch.setattr(encode_parts, "write_json", _fail_on("docs.json", after=2))
    with pytest.raises(RuntimeError, match="interrupted"):
        run_encode(cfg, progress=False, executor=LocalExecutor(1, progress=False))
    monkeypatch.undo()
    done = sorted(p.parent.name for p in (d / "resumed" / "parts").glob("*/DONE.json"))
    assert done == ["part-00000", "part-00001"]
    monkeypatch.setattr(encode_parts, "encode_file_task", counting)
    run_encode(cfg, progress=False, executor=LocalExecutor(1, progress=False))
    assert _files(d / "stream") == _files(d / "resumed")
    # a.jsonl's and b.jsonl's parts were kept; only c.jsonl's was encoded again
    assert calls == [True, True, False]
    assert not (d / "resumed" / "parts").exists()


def _fail_on(name, after):
    from lmforge.io.atomic import write_json
    seen = []

    def fake(path, obj):
        if path.name == name:
            seen.append(path)
            if len(seen) > after:
                raise RuntimeError("interrupted")
        write_json(path, obj)
    return fake


def test_ray_executor_writes_the_same_bytes(setup):
    ray = pytest.importorskip("ray")
    d = setup
    run_encode_stage(_cfg(d, "stream2"), progress=False)     # the stage, local executor
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        run_encode_stage(_cfg(d, "ray", executor="ray"), progress=False)
    finally:
        ray.shutdown()
    a, b = _files(d / "stream2"), _files(d / "ray")
    assert a.pop("DONE.json") and b.pop("DONE.json")   # the stage's summary names its own rejects path
    assert a == b


def test_config_refusals(setup):
    d = setup
    with pytest.raises(ConfigError, match="ray_address"):
        _cfg(d, "x", ray_address="auto")
    with pytest.raises(ConfigError, match="max_docs"):
        _cfg(d, "x", executor="ray", max_docs=10)
