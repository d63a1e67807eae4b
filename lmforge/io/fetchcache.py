"""The fetch cache's bookkeeping (lmforge.io.fetch): which copies are in use, which were used
least recently, its size cap, and pruning.

ROOT ($LMFORGE_FETCH_DIR, else ~/.cache/lmforge/fetched) holds one folder per URL folder, named
by 16 hex digits; its copies are the files `NAME~VERSION`. Beside them each folder has:
- `.lock`: flock'ed exclusively by the process fetching into the folder or pruning it (the
  ranks of one machine take turns through it); a waiter whose lock file was removed meanwhile
  (a pruner removed the folder) takes the new one;
- `.inuse`: flock'ed shared by every live process using copies from the folder: while the
  object they were handed for (a TokenDataset, a TeacherCache) lives, else until the process
  exits (the copies are memory-mapped, and an unlinked mapped file keeps its disk until
  unmapped); nothing is removed from a folder another process holds, nor a copy this process
  still uses;
- `.used.json`: the folder's URL and when each copy was last handed out, written atomically
  under `.lock` (not atime, which noatime mounts never update, and not the copy's mtime,
  which says when it was fetched);
- `.pending`: the bytes a fetch in progress will add, which a cap check elsewhere counts.
ROOT's own `.lock` serializes the accounting (one cap check at a time on a machine; the
fetches themselves run side by side). It is waited for only by a process holding no lock but
its own folder's, and its holder only tries other folders' locks, never waits for them: no two
processes can wait on each other.

The cap ($LMFORGE_FETCH_MAX_GB, GB of 10^9 bytes) is on the copies' bytes under ROOT plus the
pending fetches. Before a fetch that would pass it, the least recently used copies go first,
from any folder no other process holds and from the fetching folder those the current call
does not return; if that cannot make room, or the call's own files exceed the cap, nothing is
removed or fetched and the error says why.
"""
from __future__ import annotations

import fcntl
import json
import math
import os
import re
import time
from collections import Counter
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

from lmforge.config import ConfigError
from lmforge.io.atomic import sweep_temps, write_json
from lmforge.numfmt import human_bytes

ENV_CAP = "LMFORGE_FETCH_MAX_GB"
LOCK, INUSE, INDEX, PENDING = ".lock", ".inuse", ".used.json", ".pending"
_FOLDER = re.compile(r"[0-9a-f]{16}")
_COPY = re.compile(r".+~[0-9a-f]{16}")

# This process's holds: folder -> its `.inuse`, flock'ed shared while any copy handed out from
# it is in use here; folder -> those copies, counted (two datasets over one split hold it twice).
_held: dict[Path, IO] = {}
_mine: dict[Path, Counter] = {}


def _forget_holds_in_child() -> None:
    # A forked child shares its parent's open files: closing them leaves the parent's locks
    # (flock belongs to the open file, released when its last descriptor closes); the child
    # takes holds of its own, so that it never mistakes its parent's for its own.
    for f in _held.values():
        f.close()
    _held.clear()
    _mine.clear()


os.register_at_fork(after_in_child=_forget_holds_in_child)


def cap_bytes() -> int | None:
    """The cap from $LMFORGE_FETCH_MAX_GB in bytes, None when unset."""
    raw = os.environ.get(ENV_CAP, "").strip()
    if not raw:
        return None
    try:
        gb = float(raw)
    except ValueError:
        gb = math.nan
    if not (math.isfinite(gb) and gb > 0):
        raise ConfigError(f"{ENV_CAP}={raw!r}: expected a size in GB above 0 (e.g. 200 or 0.5)")
    return int(round(gb * 1e9))


def lock_file(path: Path, how: int, create: bool = True) -> IO | None:
    """`path` opened and flock'ed (`how`: LOCK_EX or LOCK_SH, | LOCK_NB to only try): None when
    another process holds it (LOCK_NB), or when the file is gone and `create` is False."""
    while True:
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            f = open(path, "a")
        except FileNotFoundError:
            if create:
                continue
            return None
        try:
            fcntl.flock(f, how)         # released when the process dies, however it dies
        except BlockingIOError:
            f.close()
            return None
        try:
            same = os.stat(path).st_ino == os.fstat(f.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return f
        f.close()                       # removed while waited for: the lock of nothing
        if not create:
            return None


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """The folder's `.lock`, waited for (created with the folder when missing)."""
    f = lock_file(folder / LOCK, fcntl.LOCK_EX)
    try:
        yield
    finally:
        f.close()


def hold(folder: Path, paths=()) -> None:
    """Mark `paths` in `folder` as used by this process until let_go(folder, paths) (or release());
    the folder stays held while any copy of it is."""
    mine_ = _mine.setdefault(folder, Counter())
    mine_.update(paths)
    if not mine_:                       # nothing of it in use here
        release(folder)
        return
    f = _held.get(folder)
    if f is None:
        f = _held[folder] = open(folder / INUSE, "a")
    fcntl.flock(f, fcntl.LOCK_SH)       # also turns others_hold()'s exclusive lock into a shared one


def let_go(folder: Path, paths) -> None:
    """Undo hold(folder, paths): their user is gone (a dataset garbage-collected)."""
    mine_ = _mine.get(folder)
    if mine_ is not None:
        mine_.subtract(paths)
        if not +mine_:
            release(folder)
        else:
            _mine[folder] = +mine_


def holds(folder: Path) -> bool:
    return bool(_mine.get(folder))


def mine(folder: Path) -> set[Path]:
    """The copies of `folder` in use in this process (an earlier split, still mapped)."""
    return set(+_mine.get(folder, Counter()))


def release(folder: Path) -> None:
    f = _held.pop(folder, None)
    if f is not None:
        f.close()
    _mine.pop(folder, None)


def release_all() -> None:
    for folder in set(_held) | set(_mine):
        release(folder)


def others_hold(folder: Path) -> bool:
    """Whether another live process holds `folder`. Called holding its `.lock`, so no process
    takes a new hold meanwhile; this process's own lock is dropped for the check and, when no
    one else holds the folder, kept exclusive until hold() or release()."""
    f = _held.pop(folder, None)
    if f is not None:
        f.close()
    f = open(folder / INUSE, "a")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return True
    _held[folder] = f
    return False


@dataclass
class Copy:
    path: Path
    size: int
    used: float          # when last handed out (seconds since the epoch)


def cache_folders(root: Path) -> list[Path]:
    try:
        return sorted(p for p in root.iterdir() if _FOLDER.fullmatch(p.name) and p.is_dir())
    except FileNotFoundError:
        return []


def read_index(folder: Path) -> tuple[str, dict[str, float]]:
    """(the folder's URL, {copy name: when last used}); empty for a folder without a readable one."""
    try:
        d = json.loads((folder / INDEX).read_text(encoding="utf-8"))
        return str(d.get("url", "")), {str(k): float(v) for k, v in d.get("used", {}).items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return "", {}


def copies(folder: Path) -> list[Copy]:
    """The folder's copies; one the index lacks counts as last used when it was fetched."""
    _, used = read_index(folder)
    out = []
    for p in folder.iterdir():
        if _COPY.fullmatch(p.name):
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            out.append(Copy(p, st.st_size, used.get(p.name, st.st_mtime)))
    return out


def mark_used(folder: Path, url: str, paths=()) -> None:
    """Record `paths` as used now, and forget copies that are gone (called holding `.lock`)."""
    old_url, used = read_index(folder)
    present = {c.path.name: c.used for c in copies(folder)}
    used = {n: used.get(n, t) for n, t in present.items()}
    now = time.time()
    used.update({p.name: now for p in paths})
    write_json(folder / INDEX, {"url": url or old_url, "used": used})


def pending(folder: Path) -> int:
    try:
        return int((folder / PENDING).read_text())
    except (OSError, ValueError):
        return 0


def set_pending(folder: Path, n: int) -> None:
    if n:
        write_json(folder / PENDING, n, indent=None)
    else:
        (folder / PENDING).unlink(missing_ok=True)


def _claim(folder: Path, stack: ExitStack, tidy: bool = True) -> bool:
    """Take `folder`'s `.lock` and an exclusive `.inuse` without waiting, both kept until `stack`
    closes: False when a process fetches into it, prunes it or holds it. `tidy`: then remove
    what a dead fetch left (its temporary file, its `.pending`)."""
    lock = lock_file(folder / LOCK, fcntl.LOCK_EX | fcntl.LOCK_NB, create=False)
    if lock is None:
        return False
    stack.callback(lock.close)
    inuse = lock_file(folder / INUSE, fcntl.LOCK_EX | fcntl.LOCK_NB, create=False)
    if inuse is None:
        return False
    stack.callback(inuse.close)
    if tidy:
        sweep_temps(folder)
        set_pending(folder, 0)
    return True


def _bytes(copies_: list[Copy]) -> int:
    return sum(c.size for c in copies_)


def _oldest(candidates: list[Copy], need: int | None) -> list[Copy]:
    """The least recently used of `candidates` that add up to `need` bytes (None: all of them;
    fewer when they cannot)."""
    chosen, freed = [], 0
    for c in sorted(candidates, key=lambda c: (c.used, str(c.path))):
        if need is not None and freed >= need:
            break
        chosen.append(c)
        freed += c.size
    return chosen


def _remove(chosen: list[Copy], keep_folder: Path | None = None) -> int:
    """Delete `chosen` (their folders claimed); a folder left without copies goes too (except
    `keep_folder`), the others' indexes forget what went. Returns how many folders went."""
    for c in chosen:
        c.path.unlink(missing_ok=True)
    gone = 0
    for folder in sorted({c.path.parent for c in chosen}):
        if folder == keep_folder:
            continue
        if copies(folder):
            mark_used(folder, "")
            continue
        for name in (INDEX, PENDING, INUSE, LOCK):
            (folder / name).unlink(missing_ok=True)
        try:
            folder.rmdir()
            gone += 1
        except OSError:                 # something not ours is in it: leave it
            pass
    return gone


def make_room(local: Path, url: str, needed: set[Path], incoming: int, cap: int | None) -> None:
    """Before `incoming` bytes are fetched into `local` (its `.lock` held): evict least recently
    used copies until the cache stays within `cap` (None: no cap), never one of `needed` (the
    call's), one this process mapped before, nor one in a folder another process holds; then
    record `incoming` as pending. Either enough room is made or nothing is removed and a
    ConfigError says why. Nothing is evicted for a call that fetches nothing."""
    root = local.parent
    with ExitStack() as stack:
        stack.callback(lock_file(root / LOCK, fcntl.LOCK_EX).close)
        if cap is not None and incoming:
            total, held, candidates = 0, 0, []
            for folder in cache_folders(root):
                found = copies(folder)
                total += _bytes(found)
                if folder.name == local.name:
                    spare, earlier = [c for c in found if c.path not in needed], mine(local)
                    if others_hold(local):
                        held += _bytes(spare)
                    else:
                        candidates += [c for c in spare if c.path not in earlier]
                        held += _bytes([c for c in spare if c.path in earlier])
                elif _claim(folder, stack):
                    candidates += found
                else:
                    total += pending(folder)
                    held += _bytes(found) + pending(folder)
            excess = total + incoming - cap
            if excess > 0:
                chosen = _oldest(candidates, excess)
                if _bytes(chosen) < excess:
                    raise ConfigError(
                        f"{url}: fetching {human_bytes(incoming)} would take the fetch cache ({root}) to "
                        f"{human_bytes(total + incoming)}, over its cap of {human_bytes(cap)} ({ENV_CAP}), and "
                        f"{human_bytes(held)} of it is in use by running processes: wait for them, raise "
                        f"the cap, or point LMFORGE_FETCH_DIR at a larger disk")
                _remove(chosen, keep_folder=local)
        set_pending(local, incoming)


def check_fits(url: str, n_files: int, needed: int, cap: int | None) -> None:
    """Refuse a call whose own files exceed the cap, before anything is fetched or removed."""
    if cap is not None and needed > cap:
        raise ConfigError(f"{url}: the {n_files} files read need {human_bytes(needed)} ({needed} bytes), more than "
                          f"the fetch cache's cap of {human_bytes(cap)} ({cap} bytes, {ENV_CAP}): raise the cap "
                          f"or point LMFORGE_FETCH_DIR at a larger disk")


def prune(root: Path, cap: int | None = None, everything: bool = False) -> dict:
    """Remove copies no live process holds: all of them (`everything`), else the least recently
    used first until the cache is within `cap`. Returns the counts for the summary line."""
    out = {"folders": 0, "files": 0, "freed": 0, "busy": 0, "left": 0, "left_folders": 0}
    if not root.is_dir():
        return out
    with ExitStack() as stack:
        stack.callback(lock_file(root / LOCK, fcntl.LOCK_EX).close)
        total, candidates, folders = 0, [], cache_folders(root)
        for folder in folders:
            found = copies(folder)
            if _claim(folder, stack):
                candidates += found
                total += _bytes(found)
            else:
                out["busy"] += 1
                total += _bytes(found) + pending(folder)
        if everything:
            chosen = _oldest(candidates, None)
        else:
            chosen = _oldest(candidates, max(total - cap, 0) if cap is not None else 0)
        out.update(folders=_remove(chosen), files=len(chosen), freed=_bytes(chosen))
        out.update(left=total - out["freed"], left_folders=len(cache_folders(root)))
    return out


def in_use(folder: Path) -> bool:
    """Whether a process fetches into `folder`, prunes it or holds it (tried, then let go)."""
    with ExitStack() as stack:
        return not _claim(folder, stack, tidy=False)


def listing(root: Path) -> list[dict]:
    """One row per cache folder: name, URL, copies, bytes, when last used, whether in use."""
    rows = []
    for folder in cache_folders(root):
        found = copies(folder)
        rows.append({"folder": folder.name, "url": read_index(folder)[0] or "?", "files": len(found),
                     "bytes": _bytes(found), "used": max((c.used for c in found), default=0.0),
                     "in_use": in_use(folder)})
    return rows
