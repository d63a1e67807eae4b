"""Local copies of files under a URL, for the readers that memory-map them (token shards,
cached teacher logits): `numpy.memmap` needs a local file, and training reads its shards at
random, so a shard is fetched whole once and then mapped as a local one.

    local_copies("s3://b/tokens", ["train-00000.tokens", ...]) -> {name: local Path}
    local_copies("runs/tokens", [...])                          -> {name: runs/tokens/name} (as always)

Each URL folder gets one local cache folder, ROOT/HASH (HASH: of the folder URL; ROOT:
$LMFORGE_FETCH_DIR, else ~/.cache/lmforge/fetched, $XDG_CACHE_HOME moving ~/.cache). A file is
kept there as `NAME~VERSION`, VERSION a hash of the remote object's size, ETag (S3, GCS; hf://:
its blob id) and modification time, all read from one listing of the folder, so:
- an unchanged remote file is not fetched again (same VERSION, copy present);
- a changed one (other ETag, time or size) has a new VERSION and is fetched; the old copy is
  removed (a process still mapping it keeps its pages: unlinking a mapped file is safe on POSIX);
- a fetch writes `.NAME~VERSION.tmp-PID`, fsyncs it, checks its size and that the object did not
  change meanwhile, then renames it: a killed fetch never leaves a file that looks complete
  (the next fetch removes the dead writer's temporary file);
- the processes of one machine (torchrun's ranks) take turns through an flock on the folder's
  `.lock`: the first fetches, the others then find the copies;
- a process handed copies holds the folder (a shared flock on `.inuse`) while `owner` (the
  TokenDataset or TeacherCache mapping them) lives, or until it exits; the folder's
  `.used.json` records when each copy was last handed out.
$LMFORGE_FETCH_MAX_GB caps the cache: before a fetch that would pass the cap, the least recently
used copies are removed, never one the call returns, one this process mapped earlier, nor one
in a folder another process holds; when that cannot make room, or the call's own files exceed
the cap, the call fails with one line before fetching or removing anything
(lmforge.io.fetchcache has the rules). Without a cap nothing is removed but older versions;
`lmforge cache ls` lists the folders and `lmforge cache prune --max-gb N | --all` prunes them.
"""
from __future__ import annotations

import errno
import hashlib
import os
import sys
import weakref
from datetime import datetime, timezone
from pathlib import Path

from tqdm import tqdm

from lmforge.io.atomic import fsync_dir, sweep_temps
from lmforge.io.fetchcache import cap_bytes, check_fits, folder_lock, hold, let_go, make_room, mark_used, set_pending
from lmforge.io.fs import FsPath, cache_home, temp_sibling, upath, url_errors

PROGRESS_MIN_BYTES = 64 << 20     # a progress bar only for fetches at least this large
CHUNK = 8 << 20


def fetch_root() -> Path:
    return Path(os.environ.get("LMFORGE_FETCH_DIR") or cache_home() / "fetched")


def fetch_dir(folder: FsPath) -> Path:
    """The local cache folder of a URL folder."""
    return fetch_root() / hashlib.sha256(folder.url.encode()).hexdigest()[:16]


def version(info: dict) -> str:
    """What identifies one state of a remote object: size, ETag (or its like) and time."""
    tag = next((str(info[k]) for k in ("ETag", "etag", "blob_id", "generation", "md5Hash", "sha") if info.get(k)), "")
    when = next((_time_text(info[k]) for k in ("LastModified", "mtime", "updated", "last_modified", "created")
                 if info.get(k)), "")
    key = f"{int(info.get('size') or 0)}|{tag}|{when}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _time_text(t) -> str:
    """A time as text, the same whether the store gave seconds or a datetime: memory:// lists
    `created` as seconds but its info() gives a datetime (S3's datetimes stay as they were)."""
    if isinstance(t, (int, float)):
        return str(datetime.fromtimestamp(t, timezone.utc))
    return str(t)


def local_copies(folder, names: list[str], listed_in: str = "", progress: bool = True,
                 owner: object = None) -> dict[str, Path]:
    """{name: local path} of each file `names` under `folder`: the files themselves for a local
    folder, current cached copies (fetched when missing or changed) for a URL, held (never
    evicted) while `owner` lives, or while this process does when None. A file missing on the
    store is a FileNotFoundError naming its URL (and `listed_in`, what listed it); files that
    alone exceed the cache's cap, or a cap that copies in use keep from being met, a
    ConfigError before anything is fetched."""
    folder = upath(folder)
    if not isinstance(folder, FsPath):
        return {n: folder / n for n in names}
    if not names:
        return {}
    cap = cap_bytes()
    local = fetch_dir(folder)
    with folder_lock(local):
        out = None
        try:
            out = _fetch_all(folder, local, names, listed_in, progress, cap)
        finally:                # the caller maps the copies: no other process removes them now
            hold(local, out.values() if out else ())
    if owner is not None:
        weakref.finalize(owner, let_go, local, list(out.values()))
    return out


def _fetch_all(folder: FsPath, local: Path, names: list[str], listed_in: str, progress: bool,
               cap: int | None) -> dict[str, Path]:
    """local_copies' work, holding the folder's lock."""
    sweep_temps(local)
    with url_errors(folder):
        listing = {p["name"].rstrip("/").rsplit("/", 1)[-1]: p
                   for p in folder.fs.ls(folder.path, detail=True) if p.get("type") != "directory"}
    missing = [n for n in names if n not in listing]
    if missing:
        why = f" (listed in {listed_in})" if listed_in else ""
        raise FileNotFoundError(f"{folder / missing[0]}: not found{why}")
    sizes = {n: int(listing[n].get("size") or 0) for n in names}
    check_fits(folder.url, len(names), sum(sizes.values()), cap)
    out = {n: local / f"{n}~{version(listing[n])}" for n in names}
    todo = [n for n in names if not _complete(out[n], sizes[n])]
    total = sum(sizes[n] for n in todo)
    make_room(local, folder.url, set(out.values()), total, cap)
    try:
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"fetch {folder.url}", file=sys.stderr,
                  disable=not progress or total < PROGRESS_MIN_BYTES) as bar:
            for n in todo:
                with url_errors(folder / n):
                    out[n] = _fetch(folder / n, local, n, listing[n], bar)
    finally:
        set_pending(local, 0)
    mark_used(local, folder.url, out.values())
    return out


def _complete(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except FileNotFoundError:
        return False


def _fetch(src: FsPath, local: Path, name: str, info: dict, bar, tries: int = 3) -> Path:
    """Download `src` into `local` as NAME~VERSION through a temporary name; older versions of
    NAME go. An object that changes while it is read is read again (at most `tries` times)."""
    for _ in range(tries):
        dst = local / f"{name}~{version(info)}"
        tmp = temp_sibling(dst)
        try:
            with src.fs.open(src.path, "rb", block_size=CHUNK) as f, open(tmp, "wb") as g:
                while chunk := f.read(CHUNK):
                    g.write(chunk)
                    bar.update(len(chunk))
                g.flush()
                os.fsync(g.fileno())
            now = src.fs.info(src.path)
            if version(now) == version(info) and tmp.stat().st_size == int(info.get("size") or 0):
                os.replace(tmp, dst)
                fsync_dir(local)
                for old in local.iterdir():
                    if old.name.startswith(f"{name}~") and old != dst:
                        old.unlink(missing_ok=True)
                return dst
            info = now                          # changed while read: again, as it is now
        finally:
            tmp.unlink(missing_ok=True)
    raise OSError(errno.EAGAIN, f"changed while being fetched {tries} times", src.url)
