"""One writing discipline for every file a stage leaves: write a temporary sibling, flush it
to disk, rename it over the target. A kill at any moment leaves either the old file or the
new one, never half of one, so a rerun never trips on what an earlier attempt half-wrote.

The temporary name is `.NAME.tmp-PID` in the target's folder (same filesystem, so the
rename is atomic; the PID keeps two writers from sharing a temp file). Files are created
with the process umask (not mkstemp's 0600), like any other file the user writes.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from .fs import FsPath, is_url, replace, temp_sibling, upath


def default_file_mode() -> int:
    """The mode open() gives a new file: 0o666 less the process umask (read without changing it
    where /proc says it, else by setting and restoring it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def with_default_mode(path: str | Path) -> Path:
    """Give a file written by a library that creates it private (safetensors writes 0600) the
    mode of every other file the user writes."""
    os.chmod(path, default_file_mode())
    return Path(path)


def naming(e: BaseException, path: str | Path) -> BaseException:
    """`e` with `path` as its file name when it is an OSError that names none (a write that hits
    a full disk raises ENOSPC without one), so the one error line says which file failed."""
    if isinstance(e, OSError) and not getattr(e, "filename", None):
        return OSError(e.errno, e.strerror or str(e), str(path))
    return e


WRITE_FAILURES = ("enforce fail", "PytorchStreamWriter", "No space left", "os error 28", "IoError")


def write_failure(e: BaseException, path: str | Path) -> BaseException:
    """A library's own error for a failed write (torch.save: "enforce fail"; safetensors:
    "IoError(... os error 28)") as an OSError naming `path`; other errors as they are."""
    if isinstance(e, OSError):
        return naming(e, path)
    text = str(e)
    if type(e).__name__ in ("RuntimeError", "SafetensorError") and any(w in text for w in WRITE_FAILURES):
        code = errno.ENOSPC if ("No space left" in text or "os error 28" in text) else errno.EIO
        return OSError(code, "writing failed: often a full disk, check free disk space", str(path))
    return e


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:      # another user's live process
        return True
    return True


def sweep_temps(folder: str | Path) -> int:
    """Remove the `.NAME.tmp-PID` files and folders under `folder` whose writer is dead (what a
    kill -9 left mid-write; a rerun writes under its own PID, so they would stay forever).
    A live PID's temp is left alone (another rank of a distributed stage may be writing).
    Returns how many were removed. Local folders only."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for p in folder.rglob(".*.tmp-*"):
        pid = p.name.rsplit(".tmp-", 1)[1]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed += 1
    return removed


def fsync_dir(path: str | Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path`, on error it is removed.
    For a URL (lmforge.io.fs) the temporary path is a local file, uploaded to a temporary key
    that is then moved to `path`."""
    if is_url(path):
        with _atomic_url(upath(path)) as tmp:
            yield tmp
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        yield tmp
        if fsync and tmp.is_file():
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        named = write_failure(e, path)
        if named is not e:
            raise named from e
        raise
    if fsync:
        fsync_dir(path.parent)


@contextmanager
def _atomic_url(path: FsPath) -> Iterator[Path]:
    import tempfile
    local = Path(tempfile.mkdtemp(prefix="lmforge-up-"))
    key = temp_sibling(path)
    try:
        yield local / path.name
        key.put(local / path.name)
        replace(key, path)
    except BaseException:
        if (local / path.name).exists():
            key.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(local, ignore_errors=True)


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[Any]:
    """open() of a temporary sibling that replaces `path` when the block ends without error."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=None if "b" in mode else encoding) as f:
            yield f


def write_text(path: str | Path, text: str) -> Path:
    with atomic_open(path) as f:
        f.write(text)
    return upath(path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_open(path, "wb") as f:
        f.write(data)
    return upath(path)


def write_json(path: str | Path, obj: Any, indent: int | None = 1) -> Path:
    return write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False, default=str) + "\n")


def write_jsonl(path: str | Path, records: Iterable[dict]) -> Path:
    with atomic_open(path) as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return upath(path)


def save_figure(fig, path: str | Path, **kwargs) -> Path:
    """matplotlib's fig.savefig through a temporary sibling (the format from `path`'s suffix)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png", **kwargs)
    return Path(path)


def save_npy(path: str | Path, array) -> Path:
    """numpy.save through a temporary sibling (given a file object, np.save adds no suffix)."""
    import numpy as np
    with atomic_open(path, "wb") as f:
        np.save(f, array)
    return Path(path)


def copy_file(src: str | Path, dst: str | Path) -> Path:
    """shutil.copy2 through a temporary sibling of `dst`."""
    with atomic_path(dst) as tmp:
        shutil.copy2(src, tmp)
    return Path(dst)


def read_json(path: str | Path) -> Any:
    return json.loads(upath(path).read_text(encoding="utf-8"))


def read_json_object(path: str | Path) -> dict:
    """A JSON object side file (a tokenizer folder's lmforge_tokenizer.json, tokenizer_config.json,
    special_tokens_map.json), {} when absent. A damaged one (cut short, not UTF-8, not an object)
    is DataError naming it (exit 5), not a bare JSONDecodeError (exit 1)."""
    from lmforge.io.account import DataError
    p = Path(path)
    if not p.is_file():
        return {}
    try:
        data = json.loads(p.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise DataError(f"{p}: not a readable JSON file ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    if not isinstance(data, dict):
        raise DataError(f"{p}: expected a JSON object, got {type(data).__name__}")
    return data


def replace_dir(tmp: str | Path, final: str | Path) -> Path:
    """Move a finished temporary folder into place (an old `final` is removed first)."""
    tmp, final = Path(tmp), Path(final)
    if final.exists():
        trash = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)
    fsync_dir(final.parent)
    return final
