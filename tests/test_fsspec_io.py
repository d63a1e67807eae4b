"""Inputs and outputs as URLs (lmforge.io.fs): the data stage and tokenizer encode read from and
write to S3, against a real S3-compatible server started here (moto's threaded server, spoken to
over HTTP by s3fs/aiobotocore: nothing is patched), and write the same bytes as on local paths."""
import json
import logging
import random

import pytest

from lmforge.cli.errors import EXIT_CONFIG, classify
from lmforge.config import ConfigError, load
from lmforge.data.config import DataConfig
from lmforge.io.fs import FsPath, scratch_dir, upath
from lmforge.io.readers import iter_documents, list_files
from lmforge.stages.data import run as run_data
from test_data_pipeline import prose

s3fs = pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

BUCKET = "lmforge-test"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on a free local port; AWS_* variables point s3fs at it."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)   # one line per request otherwise
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))   # the scratch folders
        s3fs.S3FileSystem.clear_instance_cache()
        fs = s3fs.S3FileSystem(use_listings_cache=False)
        fs.makedirs(BUCKET, exist_ok=True)   # moto keeps its buckets for the process: another module made it
        yield fs
        s3fs.S3FileSystem.clear_instance_cache()
    server.stop()


def _corpus(rng, n):
    """Documents with ids (an id-less record's id is "<file>:<line>", which names the URL),
    near-duplicates for MinHash and short ones for the filters."""
    docs = [{"id": f"d{i}", "text": prose(rng, rng.randint(40, 90)), "meta": {"domain": "web"}}
            for i in range(n)]
    docs += [dict(d, id=f"copy{i}", text=d["text"] + " Thanks.") for i, d in enumerate(docs[:6])]
    docs += [{"id": f"short{i}", "text": "too short."} for i in range(3)]
    return docs


def _raw(tmp_path, s3):
    """The same raw files locally (tmp/raw/) and on S3 (raw/*.jsonl), one with a bad line."""
    rng = random.Random(7)
    raw = tmp_path / "raw"
    raw.mkdir(exist_ok=True)
    for name, n in (("a.jsonl", 30), ("b.jsonl", 25)):
        lines = [json.dumps(d) for d in _corpus(rng, n)]
        if name == "b.jsonl":
            lines.insert(3, "{broken json")
        (raw / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
        s3.put_file(str(raw / name), f"{BUCKET}/raw/{name}")
    return raw


def _data_cfg(inp, out, workers=1):
    return load(DataConfig, data={
        "input": [inp], "output": out, "workers": workers, "docs_per_shard": 20, "progress": False,
        "steps": ["filters", "minhash"], "minhash": {"threshold": 0.7},
        "filters": {"min_units": 20, "max_top_ngram_ratio": {}, "max_dup_ngram_ratio": {}}})


def _tree(root, subs: dict) -> dict:
    """Every file under `root` (a Path or an FsPath), relative name -> bytes, with the run's
    own names (`subs`: the input and output locations) replaced and timings dropped. The
    steps' fingerprints (DONE, STARTED) hash the input files' names and times: only present."""
    root = upath(root)
    files = root.files() if isinstance(root, FsPath) else [p for p in root.rglob("*") if p.is_file()]
    out = {}
    for p in files:
        rel = str(p)[len(str(root)) + 1:]
        if p.name in ("DONE", "STARTED") or p.name.startswith("."):
            out[rel] = "present"
            continue
        data = p.read_bytes()
        if p.name.endswith((".json", ".jsonl")) or p.name == "PREPARED":
            text = data.decode()
            for old, new in subs.items():
                text = text.replace(old, new)
            data = ([_drop_seconds(json.loads(x)) for x in text.splitlines()] if p.name.endswith(".jsonl")
                    else _drop_seconds(json.loads(text)))
        out[rel] = data
    return out


def _drop_seconds(obj):
    if isinstance(obj, dict):
        return {k: _drop_seconds(v) for k, v in obj.items() if k != "seconds"}
    if isinstance(obj, list):
        return [_drop_seconds(v) for v in obj]
    return obj



def without_credentials(monkeypatch, tmp_path) -> None:
    """No AWS credentials anywhere: the moto server's keys gone, the config files pointed at
    nothing, s3fs's cached clients dropped (the caller clears the cache again afterwards)."""
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(k)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    s3fs.S3FileSystem.clear_instance_cache()

def test_data_stage_on_s3_writes_the_local_bytes_and_resumes(tmp_path, s3):
    raw = _raw(tmp_path, s3)
    local = run_data(_data_cfg(str(raw), str(tmp_path / "out")), progress=False)
    url = f"s3://{BUCKET}/out"
    remote = run_data(_data_cfg(f"s3://{BUCKET}/raw/*.jsonl", url, workers=2), progress=False)   # forked workers
    assert local["steps"] == remote["steps"] and local["steps"]["minhash"] < local["steps"]["filters"]
    assert remote["final"] == f"{url}/final" and remote["shards"] == local["shards"] >= 3
    subs_l = {str(tmp_path / "out"): "OUT", str(raw): "RAW"}
    subs_r = {url: "OUT", f"s3://{BUCKET}/raw": "RAW"}
    want = _tree(tmp_path / "out", subs_l)
    got = _tree(url, subs_r)
    work = {k: v for k, v in want.items() if "/work/" in k}   # a URL output's work/: local scratch
    assert got == {k: v for k, v in want.items() if k not in work}
    assert work and _tree(scratch_dir(upath(url)), subs_l) == work
    assert any(k.startswith("02-minhash/kept/") and k.endswith(".jsonl.zst") for k in got)
    assert any(k.startswith("02-minhash/work/") and k.endswith(".npy") for k in work)
    assert "01-filters/rejected/errors-00001.jsonl" not in got and "00-read/rejected/errors-00001.jsonl" in got
    assert not [k for k in got if ".tmp" in k]   # every temporary key moved into place

    # a rerun that changed nothing skips every step
    assert run_data(_data_cfg(f"s3://{BUCKET}/raw/*.jsonl", url), progress=False)["skipped"]
    # interrupted in the last step: one shard's stats and output gone, no DONE -> only it is redone
    shard = sorted(s3.ls(f"{BUCKET}/out/02-minhash/kept"))[0].rsplit("/", 1)[1]
    for key in (f"02-minhash/stats/{shard}.json", f"02-minhash/kept/{shard}", "02-minhash/DONE", "DONE.json"):
        s3.rm_file(f"{BUCKET}/out/{key}")
    again = run_data(_data_cfg(f"s3://{BUCKET}/raw/*.jsonl", url), progress=False)
    assert not again.get("skipped") and _tree(url, subs_r) == got


def test_urls_in_the_readers(s3):
    s3.pipe_file(f"{BUCKET}/in/x.jsonl", b'{"id": "1", "text": "one"}\n{"id": "2", "text": "two"}\n')
    s3.pipe_file(f"{BUCKET}/in/sub/y.txt", b"a text file")
    s3.pipe_file(f"{BUCKET}/in/z.bin", b"?")
    s3.pipe_file(f"{BUCKET}/in/.hidden/q.jsonl", b'{"text": "hidden"}\n')
    docs = list(iter_documents([f"s3://{BUCKET}/in"]))
    assert [d["text"] for d in docs] == ["a text file", "one", "two"]
    assert docs[0]["id"] == f"s3://{BUCKET}/in/sub/y.txt"
    from lmforge.io.documents import ErrorSink
    sink = ErrorSink()
    assert [str(f) for f in list_files(f"s3://{BUCKET}/in/*.jsonl", sink)] == [f"s3://{BUCKET}/in/x.jsonl"]
    list_files(f"s3://{BUCKET}/in", sink)
    assert sink.counts == {"unsupported_format": 1}
    # memory:// goes through the same code
    import fsspec
    fsspec.filesystem("memory").pipe("/lmforge-t/a.jsonl", b'{"id": "m", "text": "in memory"}\n')
    assert [d["text"] for d in iter_documents("memory://lmforge-t/*.jsonl")] == ["in memory"]


def test_bad_urls_are_one_line(tmp_path, s3, monkeypatch):
    def fails(inp, out=str(tmp_path / "o")):
        with pytest.raises(Exception) as e:
            run_data(_data_cfg(inp, out), progress=False)
        code, line = classify(e.value)
        assert "\n" not in line
        return code, line

    assert fails(f"s3://{BUCKET}/nothing-here/*.jsonl") == (EXIT_CONFIG, f"s3://{BUCKET}/nothing-here/*.jsonl: no file matches")
    assert fails("s3://no-such-bucket-lm/raw") == (EXIT_CONFIG, "s3://no-such-bucket-lm/raw: input not found")
    with pytest.raises(ConfigError, match="memory:// lives in one process"):
        _data_cfg(f"s3://{BUCKET}/raw", "memory://run", workers=2)
    code, line = fails("nosuch://x/raw")
    assert code == EXIT_CONFIG and line.startswith("config error: nosuch://x/raw: Protocol not known")
    s3.pipe_file(f"{BUCKET}/ok/a.jsonl", b'{"id": "1", "text": "one two three"}\n')
    code, line = fails(f"s3://{BUCKET}/ok", "s3://no-such-out-bucket/run")
    assert (code, line) == (EXIT_CONFIG, "s3://no-such-out-bucket/run: bucket 'no-such-out-bucket' not found")
    without_credentials(monkeypatch, tmp_path)
    try:
        code, line = fails(f"s3://{BUCKET}/ok")
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
    assert code == EXIT_CONFIG and line.startswith(f"config error: s3://{BUCKET}/ok: no credentials for s3://")


def test_encode_writes_token_files_to_s3(tmp_path, s3):
    from lmforge.data.executor import LocalExecutor
    from lmforge.stages.tokenizer import run as run_train
    from lmforge.tokenizer.encode import EncodeConfig, encode_folder
    from lmforge.tokenizer.train import TokenizerConfig
    from test_tokenizer import make_docs, write_jsonl

    docs = make_docs(90, seed=3)
    write_jsonl(tmp_path / "in" / "a.jsonl", docs[:50])
    write_jsonl(tmp_path / "in" / "b.jsonl", docs[50:])
    for name in ("a.jsonl", "b.jsonl"):
        s3.put_file(str(tmp_path / "in" / name), f"{BUCKET}/enc/{name}")
    run_train(TokenizerConfig(inputs=[str(tmp_path / "in")], out_dir=str(tmp_path / "tok"), vocab_size=400),
              progress=False)

    def cfg(inp, out):
        return EncodeConfig(inputs=[inp], tokenizer=str(tmp_path / "tok"), out_dir=out, batch_docs=16,
                            shard_tokens=4000, val_docs_per_domain=3, workers=1)

    encode_folder(cfg(str(tmp_path / "in"), str(tmp_path / "tokens")), progress=False)
    url = f"s3://{BUCKET}/tokens"
    stats = encode_folder(cfg(f"s3://{BUCKET}/enc", url), progress=False)
    parts = f"s3://{BUCKET}/tokens-parts"   # the executor path: per-file parts in local scratch
    encode_folder(cfg(f"s3://{BUCKET}/enc", parts), progress=False, executor=LocalExecutor(1, progress=False))
    local = {p.name: p.read_bytes() for p in (tmp_path / "tokens").iterdir()}
    shards = [k for k in local if k.endswith((".tokens", ".docs", ".domains"))]
    assert stats["shards"] >= 3 and len(shards) == 3 * stats["shards"]
    for folder in (url, parts):
        names = sorted(p.rsplit("/", 1)[1] for p in s3.ls(folder.replace("s3://", "")))
        assert names == sorted(local)
        for k in shards:
            assert s3.cat_file(f"{folder.replace('s3://', '')}/{k}") == local[k], k
        meta = json.loads(s3.cat_file(f"{folder.replace('s3://', '')}/meta.json"))
        want = json.loads(local["meta.json"])
        assert meta["shards"] == want["shards"] and meta["domains"] == want["domains"]
        assert meta["inputs_resolved"] == [f"s3://{BUCKET}/enc"] and meta["tokenizer_relative"] is None
    from lmforge.tokenizer.encode import finished_encoding
    assert finished_encoding(cfg(f"s3://{BUCKET}/enc", url)) is not None   # a rerun would skip
    with pytest.raises(ConfigError, match="already holds tokens"):
        finished_encoding(cfg(str(tmp_path / "in"), url))


def test_writes_to_a_store_appear_whole_or_not_at_all(s3):
    """A shard or JSON file cut short by an error leaves neither its key nor a temporary key;
    a finished one is one key, put in place by a move of its temporary key."""
    from lmforge.io.atomic import atomic_open, write_json
    from lmforge.io.writers import DocWriter

    url = f"s3://{BUCKET}/atomic"
    with pytest.raises(RuntimeError):
        with DocWriter(f"{url}/part.jsonl.zst") as w:
            w.write({"id": "1", "text": "one", "meta": {}})
            raise RuntimeError("killed mid-shard")
    with pytest.raises(RuntimeError):
        with atomic_open(f"{url}/stats.json") as f:
            f.write('{"half":')
            raise RuntimeError("killed mid-file")
    assert not s3.exists(f"{BUCKET}/atomic") or s3.ls(f"{BUCKET}/atomic") == []
    with DocWriter(f"{url}/part.jsonl.zst") as w:
        w.write({"id": "1", "text": "one", "meta": {}})
    write_json(f"{url}/stats.json", {"docs": 1})
    assert sorted(p.rsplit("/", 1)[1] for p in s3.ls(f"{BUCKET}/atomic")) == ["part.jsonl.zst", "stats.json"]
    assert [d["text"] for d in iter_documents(f"{url}/part.jsonl.zst")] == ["one"]
    assert json.loads(s3.cat_file(f"{BUCKET}/atomic/stats.json")) == {"docs": 1}
