"""Training reads token shards (and cached teacher logits) from a URL: the shards are fetched
once into a local cache (lmforge.io.fetch) and memory-mapped from there. Against moto's S3
server started by the test_fsspec_io fixture (reached over HTTP by s3fs; nothing is patched)."""
import json
import subprocess

import numpy as np
import pytest

from conftest import make_token_dataset
from lmforge.cli.errors import EXIT_CONFIG, classify
from lmforge.io.fetch import fetch_dir
from lmforge.numfmt import human_bytes
from lmforge.io.fs import FsPath
from lmforge.shards import TokenDataset
from test_fsspec_io import BUCKET, s3, s3fs, without_credentials  # noqa: F401  (s3: the moto server fixture)
from test_trainer import cfg_for, losses
from lmforge.stages.pretrain import run


def _upload(s3, folder, prefix):
    for p in sorted(folder.iterdir()):
        s3.put_file(str(p), f"{BUCKET}/{prefix}/{p.name}")
    return f"s3://{BUCKET}/{prefix}"


def _cached(url) -> dict:
    """Every cached copy of `url`'s files: name -> (inode, mtime): a fetch shows as a change."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in fetch_dir(FsPath(url)).iterdir()
            if not p.name.startswith(".")}


def _fails(cfg) -> str:
    with pytest.raises(Exception) as e:
        run(cfg, progress=False)
    code, line = classify(e.value)
    assert code == EXIT_CONFIG and "\n" not in line
    return line


def test_training_on_s3_tokens_equals_local_and_fetches_once(tmp_path, s3):
    local = make_token_dataset(tmp_path / "tokens")
    url = _upload(s3, local, "train-tokens")
    steps = ["train.steps=4", "train.eval_every=2", "train.device=cpu"]
    run(cfg_for(local, tmp_path / "local", *steps), progress=False)
    remote = run(cfg_for(url, tmp_path / "remote", *steps), progress=False)
    assert losses(tmp_path / "local") == losses(tmp_path / "remote") and len(losses(tmp_path / "local")) == 4
    recs = [json.loads(x) for x in (tmp_path / "remote" / "metrics.jsonl").read_text().splitlines()]
    want = [json.loads(x) for x in (tmp_path / "local" / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("val/mean") for r in recs] == [r.get("val/mean") for r in want] and remote["val/mean"] > 0
    assert json.loads((tmp_path / "remote" / "config.json").read_text())["data"] == url

    cached = _cached(url)
    names = sorted(n.split("~")[0] for n in cached)
    assert names == sorted(f"{s}-00000{e}" for s in ("train", "val") for e in (".tokens", ".docs", ".domains"))
    for n, v in cached.items():   # each copy is the object's bytes
        assert (fetch_dir(FsPath(url)) / n).read_bytes() == (local / n.split("~")[0]).read_bytes()
    run(cfg_for(url, tmp_path / "again", *steps), progress=False)    # a second run fetches nothing
    assert _cached(url) == cached and losses(tmp_path / "again") == losses(tmp_path / "local")


def test_a_changed_object_is_fetched_again_and_a_killed_fetch_is_not_used(tmp_path, s3):
    local = make_token_dataset(tmp_path / "tokens", n_docs=10)
    url = _upload(s3, local, "changing")
    first = TokenDataset(url, "train")
    before = _cached(url)
    tokens = np.fromfile(local / "train-00000.tokens", dtype=first.dtype)
    changed = (tokens + 1) % 128       # same size, other bytes: a new ETag and time
    s3.pipe_file(f"{BUCKET}/changing/train-00000.tokens", changed.astype(first.dtype).tobytes())
    cache = fetch_dir(FsPath(url))
    gone = subprocess.Popen(["true"])   # the pid of a process that is gone
    gone.wait()
    dead = gone.pid
    half = cache / f".train-00000.tokens~0123456789abcdef.tmp-{dead}"
    half.write_bytes(b"\0" * 10)        # what a fetch killed mid-file leaves
    again = TokenDataset(url, "train")
    assert np.array_equal(np.asarray(again.shards[0].tokens), changed)
    assert np.array_equal(np.asarray(first.shards[0].tokens), tokens)    # the old mapping still reads
    after = _cached(url)
    old_tok = [n for n in before if n.startswith("train-00000.tokens~")]
    new_tok = [n for n in after if n.startswith("train-00000.tokens~")]
    assert len(old_tok) == len(new_tok) == 1 and old_tok != new_tok      # one copy, the new version
    assert {n: v for n, v in after.items() if ".tokens" not in n} == {n: v for n, v in before.items()
                                                                      if ".tokens" not in n}   # not fetched again
    assert not half.exists()
    # a copy cut short (a disk filled, a hand edit) is not taken for the object: fetched again
    path = cache / new_tok[0]
    path.write_bytes(path.read_bytes()[:7])
    assert np.array_equal(np.asarray(TokenDataset(url, "train").shards[0].tokens), changed)


def test_missing_keys_buckets_and_credentials_are_one_line(tmp_path, s3, monkeypatch):
    local = make_token_dataset(tmp_path / "tokens", n_docs=8)
    url = _upload(s3, local, "broken")
    s3.rm_file(f"{BUCKET}/broken/train-00000.docs")
    assert _fails(cfg_for(url, tmp_path / "a", "train.steps=1")) == (
        f"config error: data: {url}/train-00000.docs: not found (listed in {url}/meta.json)")
    assert _fails(cfg_for("s3://no-such-bucket-lm/tokens", tmp_path / "b", "train.steps=1")) == (
        "config error: data: s3://no-such-bucket-lm/tokens: not a token dataset (no meta.json; "
        "run `lmforge tokenizer encode` to make one)")
    without_credentials(monkeypatch, tmp_path)
    try:
        line = _fails(cfg_for(url, tmp_path / "c", "train.steps=1"))
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
    assert line.startswith(f"config error: data: {url}/meta.json: no credentials for s3://")


def test_teacher_cache_on_s3_reads_as_the_local_one(tmp_path, s3):
    from lmforge.train.teacher_cache import FORMAT, TeacherCache
    rng = np.random.default_rng(0)
    folder, shards = tmp_path / "cache", []
    folder.mkdir()
    for name, n in (("train-00000", 50), ("train-00001", 30)):
        rng.integers(0, 128, (n, 4), dtype=np.uint16).tofile(folder / f"{name}.topk_ids")
        rng.standard_normal((n, 4)).astype(np.float16).tofile(folder / f"{name}.topk_logp")
        shards.append({"name": name, "n_tokens": n})
    (folder / "meta.json").write_text(json.dumps({"format": FORMAT, "k": 4, "vocab_size": 128, "temperature": 1.0,
                                                  "dtype": "float16", "shards": shards}))
    url = _upload(s3, folder, "teacher")
    index = rng.integers(0, 80, 40)
    want, got = TeacherCache(folder).lookup(index), TeacherCache(url).lookup(index)
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(want, got))
    s3.rm_file(f"{BUCKET}/teacher/train-00001.topk_logp")
    s3.rm_file(f"{BUCKET}/teacher/meta.json")
    with pytest.raises(FileNotFoundError, match=f"{url}: not a finished teacher cache"):
        TeacherCache(url)


def _open_train(url):
    TokenDataset(url, "train")


def test_processes_of_one_machine_take_turns_fetching(tmp_path, s3):
    """torchrun's ranks: while one holds the cache folder's lock, another waits for it (then
    finds the copies) instead of fetching the same shards beside it."""
    import fcntl
    import multiprocessing
    import time
    url = _upload(s3, make_token_dataset(tmp_path / "tokens", n_docs=8), "ranks")
    cache = fetch_dir(FsPath(url))
    cache.mkdir(parents=True)
    with open(cache / ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        rank = multiprocessing.get_context("fork").Process(target=_open_train, args=(url,))
        rank.start()
        time.sleep(1.0)
        assert rank.is_alive() and not _cached(url)     # waiting, nothing fetched
        fcntl.flock(f, fcntl.LOCK_UN)
    rank.join(60)
    assert rank.exitcode == 0 and len(_cached(url)) == 3


def test_a_capped_fetch_cache_evicts_the_older_dataset_and_refuses_a_cap_too_small(tmp_path, s3, monkeypatch):
    """LMFORGE_FETCH_MAX_GB against S3 (tests/test_fetch_cache.py has the rules in detail)."""
    from lmforge.io.fetchcache import release_all
    monkeypatch.setenv("LMFORGE_FETCH_DIR", str(tmp_path / "fetched"))
    release_all()
    a, b = (make_token_dataset(tmp_path / n, n_docs=8, seed=i) for i, n in enumerate("ab"))
    sizes = [sum(p.stat().st_size for p in d.glob("train-*")) for d in (a, b)]
    a, b = _upload(s3, a, "capped-a"), _upload(s3, b, "capped-b")
    TokenDataset(a, "train")                            # dropped at once: a stage that ended
    monkeypatch.setenv("LMFORGE_FETCH_MAX_GB", str(sizes[1] / 1e9))    # room for b only
    TokenDataset(b, "train")
    assert not fetch_dir(FsPath(a)).exists() and len(_cached(b)) == 3
    monkeypatch.setenv("LMFORGE_FETCH_MAX_GB", str((sizes[1] - 1) / 1e9))
    assert _fails(cfg_for(b, tmp_path / "small", "train.steps=1")) == (
        f"config error: data: {b}: the 3 files read need {human_bytes(sizes[1])} ({sizes[1]} bytes), more than the "
        f"fetch cache's cap of {human_bytes(sizes[1] - 1)} ({sizes[1] - 1} bytes, LMFORGE_FETCH_MAX_GB): raise the "
        f"cap or point LMFORGE_FETCH_DIR at a larger disk")
    release_all()
