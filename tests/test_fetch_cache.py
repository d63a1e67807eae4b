"""The fetch cache's cap and pruning (lmforge.io.fetchcache): least recently used copies go
first, never one the call returns nor one a running process holds; a cap the call's own files
exceed fails before anything is fetched; `lmforge cache ls | prune`. URLs are memory://
folders (fetch treats them as any store); the other processes are real ones holding the flocks."""
import subprocess
import sys
import uuid

import fsspec
import pytest

from lmforge.cli import main
from lmforge.cli.errors import EXIT_CONFIG, classify
from lmforge.config import ConfigError
from lmforge.io.fetch import fetch_dir, local_copies
from lmforge.io.fetchcache import INUSE, LOCK, PENDING, release_all
from lmforge.io.fs import FsPath

KB = 1000


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """A fresh cache folder; this process holds nothing at the start or the end."""
    monkeypatch.setenv("LMFORGE_FETCH_DIR", str(tmp_path / "fetched"))
    monkeypatch.delenv("LMFORGE_FETCH_MAX_GB", raising=False)
    release_all()
    yield tmp_path / "fetched"
    release_all()


def _store(files: dict[str, int]) -> str:
    """A memory:// folder of files of the given sizes (their bytes tell them apart)."""
    url = f"memory://fetchcache-{uuid.uuid4().hex[:8]}"
    fs = fsspec.filesystem("memory")
    for i, (name, size) in enumerate(files.items()):
        fs.pipe(f"{url[len('memory://'):]}/{name}", bytes([i + 1]) * size)
    return url


def _cap(monkeypatch, n_bytes: int) -> None:
    monkeypatch.setenv("LMFORGE_FETCH_MAX_GB", str(n_bytes / 1e9))


def _read(url, names) -> dict:
    """local_copies as one run would, then the run ends (its hold on the folder goes)."""
    out = local_copies(url, names, progress=False)
    release_all()
    return out


def _copies(url) -> dict[str, int]:
    """The cached copies of `url`'s files: name (without version) -> inode."""
    folder = fetch_dir(FsPath(url))
    if not folder.exists():
        return {}
    return {p.name.split("~")[0]: p.stat().st_ino for p in folder.iterdir() if not p.name.startswith(".")}


def _cached_bytes(root) -> int:
    return sum(p.stat().st_size for p in root.glob("*/*") if not p.name.startswith("."))


def test_least_recently_used_copies_go_first_and_the_cap_holds(cache, monkeypatch):
    urls = [_store({"x.tokens": KB}) for _ in range(5)]
    for url in urls:
        _read(url, ["x.tokens"])
    order = [3, 0, 4, 1, 2]                 # used again in this order: 3 is now the least recent
    for i in order:
        _read(urls[i], ["x.tokens"])
    _cap(monkeypatch, 5500)
    for k, i in enumerate(order[:3]):       # each new folder evicts the least recently used one
        _read(_store({"x.tokens": KB}), ["x.tokens"])
        assert [j for j, url in enumerate(urls) if not _copies(url)] == sorted(order[:k + 1])
        assert not fetch_dir(FsPath(urls[i])).exists()                 # its folder went with it
        assert _cached_bytes(cache) == 5 * KB <= 5500


def test_a_file_the_call_returns_is_never_evicted(cache, monkeypatch):
    url = _store({"t1": KB, "t2": KB, "t3": KB})
    _read(url, ["t2"])                   # t2: least recently used of the folder
    _read(url, ["t1"])
    inode = _copies(url)["t2"]
    _cap(monkeypatch, 2500)
    out = _read(url, ["t2", "t3"])      # room for t3: t1 goes, not the older t2 the call needs
    assert _copies(url) == {"t2": inode, "t3": _copies(url)["t3"]}
    assert out["t2"].read_bytes() == bytes([2]) * KB and out["t3"].read_bytes() == bytes([3]) * KB


class _Dataset:
    """What a TokenDataset is to local_copies: the owner of the copies it maps."""


def test_copies_this_process_uses_are_not_evicted_until_their_owner_goes(cache, monkeypatch):
    url = _store({"train": KB, "val": KB, "extra": KB})
    _cap(monkeypatch, 2500)
    train, val = _Dataset(), _Dataset()
    local_copies(url, ["train"], progress=False, owner=train)     # a stage maps its train split,
    local_copies(url, ["val"], progress=False, owner=val)         # then its val split: 2 kB
    with pytest.raises(ConfigError, match="to 3.00 kB, over its cap of 2.50 kB .*, and 2.00 kB of it is in use"):
        local_copies(url, ["extra"], progress=False)   # room only by evicting what the stage maps
    assert set(_copies(url)) == {"train", "val"}
    del train                                          # that dataset is gone (the next stage runs)
    _read(url, ["extra"])
    assert set(_copies(url)) == {"val", "extra"}
    _cap(monkeypatch, 1500)                            # over the cap, but nothing to fetch: nothing goes
    _read(url, ["val"])
    assert set(_copies(url)) == {"val", "extra"}
    assert val


def test_a_cap_the_call_alone_exceeds_fails_before_fetching_anything(cache, monkeypatch):
    other = _store({"x": KB})
    _read(other, ["x"])
    url = _store({"a.tokens": KB, "b.tokens": KB})
    _cap(monkeypatch, 1500)
    with pytest.raises(ConfigError) as e:
        local_copies(url, ["a.tokens", "b.tokens"], progress=False)
    code, line = classify(e.value)
    assert code == EXIT_CONFIG and "\n" not in line
    assert line == (f"config error: {url}: the 2 files read need 2.00 kB (2000 bytes), more than the fetch "
                    f"cache's cap of 1.50 kB (1500 bytes, LMFORGE_FETCH_MAX_GB): raise the cap or point "
                    f"LMFORGE_FETCH_DIR at a larger disk")
    assert _copies(url) == {} and set(_copies(other)) == {"x"}      # nothing fetched, nothing evicted
    monkeypatch.setenv("LMFORGE_FETCH_MAX_GB", "lots")
    with pytest.raises(ConfigError, match="LMFORGE_FETCH_MAX_GB='lots': expected a size in GB above 0"):
        local_copies(url, ["a.tokens"], progress=False)


HOLDER = """
import fcntl, sys
f = open(sys.argv[1], "a")
fcntl.flock(f, fcntl.LOCK_SH if sys.argv[2] == "shared" else fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""


class _Holder:
    """Another process holding a cache folder's flock (`.inuse` shared: a run reading the
    copies; `.lock` exclusive: a fetch in progress) until the block ends."""

    def __init__(self, folder, name, how):
        self.args = [sys.executable, "-c", HOLDER, str(folder / name), how]

    def __enter__(self):
        self.proc = subprocess.Popen(self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline() == "held\n"
        return self

    def __exit__(self, *exc):
        self.proc.stdin.close()
        self.proc.wait(10)


def test_copies_another_process_holds_are_not_evicted(cache, monkeypatch):
    old, new, more = (_store({"x": KB}) for _ in range(3))
    _read(old, ["x"])
    _read(new, ["x"])
    _cap(monkeypatch, 2500)
    with _Holder(fetch_dir(FsPath(old)), INUSE, "shared"):     # a run still reads old's copies
        local_copies(more, ["x"], progress=False)                   # and this one holds more's
        assert set(_copies(old)) == {"x"} and _copies(new) == {}       # the newer one went instead
        last = _store({"x": KB})
        with pytest.raises(ConfigError) as e:                         # only held copies are left
            local_copies(last, ["x"], progress=False)
        assert str(e.value) == (f"{last}: fetching 1.00 kB would take the fetch cache ({cache}) to 3.00 kB, over "
                                f"its cap of 2.50 kB (LMFORGE_FETCH_MAX_GB), and 2.00 kB of it is in use by running "
                                f"processes: wait for them, raise the cap, or point LMFORGE_FETCH_DIR at a larger disk")
        assert _copies(last) == {} and set(_copies(old)) == set(_copies(more)) == {"x"}
    release_all()                                                   # both runs have ended
    with _Holder(fetch_dir(FsPath(more)), LOCK, "exclusive"):    # a fetch into `more` in progress
        _read(last, ["x"])
        assert _copies(old) == {} and set(_copies(more)) == {"x"}   # the reader gone: old is free again
        (fetch_dir(FsPath(more)) / PENDING).write_text("1000")   # that fetch brings 1 kB more
        with pytest.raises(ConfigError, match=r"to 4\.00 kB, over its cap of 2\.50 kB .*, and 2\.00 kB of it is in use"):
            local_copies(_store({"x": KB}), ["x"], progress=False)
    assert set(_copies(last)) == set(_copies(more)) == {"x"}


def test_the_split_another_process_reads_stays_while_this_one_fetches_another(cache, monkeypatch):
    url = _store({"val": KB, "train": KB})
    _read(url, ["val"])
    _cap(monkeypatch, 1500)
    with _Holder(fetch_dir(FsPath(url)), INUSE, "shared"):     # another run reads the val split
        with pytest.raises(ConfigError, match="to 2.00 kB, over its cap of 1.50 kB .*, and 1.00 kB of it is in use"):
            local_copies(url, ["train"], progress=False)
        assert set(_copies(url)) == {"val"}
    _read(url, ["train"])                                          # that run ended: val goes
    assert set(_copies(url)) == {"train"}


def _cli(capsys, *args) -> tuple[int, str]:
    code = main(["cache", *args])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_cli_lists_and_prunes(cache, monkeypatch, capsys):
    a, b, c = (_store({"x": KB, "y": 2 * KB}) for _ in range(3))
    for url in (a, b, c):
        _read(url, ["x", "y"])
    code, out = _cli(capsys, "ls")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["FOLDER", "FILES", "SIZE", "LAST", "USED", "URL"]
    rows = {line.split()[-1]: line.split() for line in lines[1:4]}
    assert set(rows) == {a, b, c} and all(r[1:4] == ["2", "3.00", "kB"] for r in rows.values())
    assert lines[4] == f"cache {cache}: 3 folders, 6 files, 9.00 kB; no cap (LMFORGE_FETCH_MAX_GB unset)"
    assert _cli(capsys, "prune") == (2, "lmforge cache prune: give --max-gb N or --all (or set LMFORGE_FETCH_MAX_GB)\n")

    code, out = _cli(capsys, "prune", "--max-gb", "5e-6")     # 9 kB down to 5: a's copies, then b's oldest
    assert (code, out) == (0, f"cache prune (down to 5.00 kB): removed 3 files, 1 folder, freed 4.00 kB; "
                              f"left 5.00 kB in 2 folders ({cache})\n")
    assert _copies(a) == {} and set(_copies(b)) == {"y"} and set(_copies(c)) == {"x", "y"}

    d = _store({"x": KB})
    _read(d, ["x"])
    with _Holder(fetch_dir(FsPath(c)), INUSE, "shared"):
        code, out = _cli(capsys, "ls")
        assert f"{c}  (in use)" in out and out.splitlines()[-1] == (
            f"cache {cache}: 3 folders, 4 files, 6.00 kB, 1 in use; no cap (LMFORGE_FETCH_MAX_GB unset)")
        code, out = _cli(capsys, "prune", "--all")
        assert (code, out) == (0, f"cache prune (all): removed 2 files, 2 folders, freed 3.00 kB; 1 folder in use "
                                  f"kept; left 3.00 kB in 1 folder ({cache})\n")
    assert _copies(b) == _copies(d) == {} and set(_copies(c)) == {"x", "y"}
    assert _cli(capsys, "prune", "--all")[1].startswith("cache prune (all): removed 2 files, 1 folder, freed 3.00 kB")
    assert [p.name for p in cache.iterdir()] == [".lock"]
