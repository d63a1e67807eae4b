"""Paths and URLs: a local path stays a `pathlib.Path` (today's code, byte for byte and at the
same speed); a URL (`s3://`, `gs://`, `hf://`, `memory://`, ...) becomes an `FsPath`, the few
`pathlib.Path` operations the data and token writers use, done through fsspec.

    upath("runs/data")          -> PosixPath('runs/data')
    upath("s3://bucket/data")   -> FsPath('s3://bucket/data')   (s3fs; gs:// needs gcsfs)
    upath("file:///tmp/x")      -> PosixPath('/tmp/x')

An FsPath has no `__fspath__`, so a local-only call (`open`, `np.load`, `os.replace`) given one
fails at once instead of writing a local folder called `s3:`; the readers and writers call
`open_file`, `replace` and `rmtree` here, which take either kind.

Object stores have no rename and no folders:
- `replace(tmp, final)` is fsspec's `cp_file` + `rm_file`: on S3 a server-side CopyObject of the finished
  temporary key to the final key, then a delete of the temporary key. The final key appears
  whole or not at all (CopyObject is atomic), so the writers' "temp name + rename" still means
  "a file that exists is complete"; a kill between copy and delete leaves a temporary key
  (`NAME.tmp`, `.NAME.tmp-PID`) that every listing here ignores and a rerun overwrites.
- `mkdir` does nothing on an object store (a "folder" exists once a key is under it), and
  `is_dir` is true once one is.
- Listings are never cached (`use_listings_cache=False`): shards written by worker processes
  or Ray tasks on other machines must show up in the driver's next listing.

Credentials and endpoints come from the usual places of each library (for S3: AWS_* variables,
~/.aws, instance roles; AWS_ENDPOINT_URL for an S3-compatible server such as MinIO or moto).
A URL whose scheme no installed fsspec implementation knows, missing credentials, or a missing
bucket is one line naming the URL (`url_error`): ConfigError (exit 2) or FileNotFoundError
(exit 2).
"""
from __future__ import annotations

import errno
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

from lmforge.config import ConfigError

BUCKET_STORES = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "r2")   # URL = bucket/key
OBJECT_STORES = BUCKET_STORES + ("hf",)                                   # no folders, no rename
GLOB_CHARS = "*?["
_INSTALL = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs",
            "hf": "huggingface_hub"}


def is_url(p) -> bool:
    """A URL fsspec should open (`file://` is a local path)."""
    if isinstance(p, FsPath):
        return True
    if isinstance(p, Path) or not isinstance(p, str):
        return False
    return "://" in p and not p.startswith("file://")


def upath(p) -> "Path | FsPath":
    """Path for a local path (as `Path(p)` always did), FsPath for a URL."""
    if isinstance(p, (Path, FsPath)):
        return p
    s = os.fspath(p)
    if s.startswith("file://"):
        return Path(s[len("file://"):])
    return FsPath(s) if is_url(s) else Path(s)


def protocol(url: str) -> str:
    return url.split("://", 1)[0].lower()


def _resolve(url: str):
    """(filesystem, path inside it) for a URL; a one-line ConfigError when it cannot be opened."""
    import fsspec
    try:
        return fsspec.core.url_to_fs(url, use_listings_cache=False)
    except ImportError as e:
        pkg = _INSTALL.get(protocol(url), "the fsspec implementation for it")
        raise ConfigError(f"{url}: {protocol(url)}:// needs {pkg} (pip install {pkg}; "
                          f"s3:// comes with pip install 'lmforge[cloud]'): {e}") from None
    except ValueError as e:   # "Protocol not known: foo"
        raise ConfigError(f"{url}: {e} (a local path, or a URL fsspec knows: s3://, gs://, hf://, "
                          f"memory://)") from None


class FsPath:
    """The part of pathlib.Path the data pipeline and the token writers use, over fsspec."""

    __slots__ = ("url", "_fs", "_path")

    def __init__(self, url: str, _fs=None, _path: str | None = None):
        self.url = url if url.endswith("://") else url.rstrip("/")
        self._fs, self._path = _fs, _path

    def _open_fs(self) -> None:
        if self._fs is None:
            self._fs, self._path = _resolve(self.url)

    @property
    def fs(self):
        self._open_fs()
        return self._fs

    @property
    def path(self) -> str:
        self._open_fs()
        return self._path

    def __reduce__(self):            # to worker processes and Ray tasks: the URL only
        return (FsPath, (self.url,))

    # ---------------------------------------------------------------- names
    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"FsPath({self.url!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, FsPath) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    def __lt__(self, other: "FsPath") -> bool:
        return self.url < other.url

    def __truediv__(self, name: str) -> "FsPath":
        child = FsPath(f"{self.url}/{name}")
        if self._fs is not None:
            child._fs, child._path = self._fs, f"{self._path.rstrip('/')}/{name}"
        return child

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def parent(self) -> "FsPath":
        head = self.url.rsplit("/", 1)[0]
        return self if head.endswith(":/") else FsPath(head)

    @property
    def suffix(self) -> str:
        return Path(self.name).suffix

    @property
    def stem(self) -> str:
        return Path(self.name).stem

    def with_name(self, name: str) -> "FsPath":
        return self.parent / name

    def resolve(self) -> "FsPath":
        return self

    # ---------------------------------------------------------------- queries
    def exists(self) -> bool:
        return self.fs.exists(self.path)

    def is_file(self) -> bool:
        return self.fs.isfile(self.path)

    def is_dir(self) -> bool:
        return self.fs.isdir(self.path)

    def stat(self) -> SimpleNamespace:
        """st_size, and st_mtime_ns from the store's modification time (S3: LastModified)."""
        info = self.fs.info(self.path)
        t = info.get("LastModified") or info.get("mtime") or info.get("created") or info.get("updated")
        if hasattr(t, "timestamp"):
            t = t.timestamp()
        try:
            ns = int(float(t) * 1e9)
        except (TypeError, ValueError):
            ns = 0
        return SimpleNamespace(st_size=int(info.get("size") or 0), st_mtime_ns=ns,
                               etag=str(info.get("ETag") or info.get("etag") or ""))

    def _url_of(self, fs_path: str) -> FsPath:
        base = self.path.rstrip("/")
        rel = fs_path[len(base):].lstrip("/") if fs_path.startswith(base) else fs_path.rsplit("/", 1)[-1]
        return self / rel if rel else self

    def iterdir(self) -> Iterator["FsPath"]:
        try:
            found = self.fs.ls(self.path, detail=False)
        except FileNotFoundError:
            if protocol(self.url) not in OBJECT_STORES:
                raise
            found = []                    # an object store's empty "folder" does not exist
        for p in found:
            if p.rstrip("/") != self.path.rstrip("/"):
                yield self._url_of(p)

    def glob(self, pattern: str) -> Iterator["FsPath"]:
        for p in self.fs.glob(f"{self.path.rstrip('/')}/{pattern}"):
            yield self._url_of(p)

    def files(self) -> list["FsPath"]:
        """Every file under this folder, recursively (rglob('*') of the files)."""
        return [self._url_of(p) for p in self.fs.find(self.path)]

    # ---------------------------------------------------------------- reading and writing
    def open(self, mode: str = "r", encoding: str | None = None, newline: str | None = None):
        kw = {} if "b" in mode else {"encoding": encoding or "utf-8", "newline": newline}
        return self.fs.open(self.path, mode, **kw)

    def read_bytes(self) -> bytes:
        return self.fs.cat_file(self.path)

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        if protocol(self.url) not in OBJECT_STORES:
            self.fs.makedirs(self.path, exist_ok=True)

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.rm_file(self.path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def put(self, local: str | Path) -> None:
        self.fs.put_file(os.fspath(local), self.path)


# -------------------------------------------------------------------- either kind


def open_file(p, mode: str = "r", encoding: str | None = None, newline: str | None = None):
    """open() for a local path (the builtin, unchanged), fsspec's open for an FsPath."""
    if isinstance(p, FsPath):
        return p.open(mode, encoding=encoding, newline=newline)
    return open(p, mode, encoding=encoding, newline=newline)


def replace(src, dst) -> None:
    """os.replace locally; on a store, a move of the finished temporary key (module doc)."""
    if isinstance(src, FsPath) or isinstance(dst, FsPath):
        src.fs.cp_file(src.path, dst.path)   # one CopyObject (fs.mv lists both names first)
        src.fs.rm_file(src.path)
    else:
        os.replace(src, dst)


def rmtree(p) -> None:
    """shutil.rmtree locally; every key under the prefix on a store (none: nothing to do)."""
    if isinstance(p, FsPath):
        try:
            p.fs.rm(p.path, recursive=True)
        except FileNotFoundError:
            pass
    else:
        shutil.rmtree(p)


def temp_sibling(path) -> Path | FsPath:
    """The one temporary name of a file being written, local or URL: `.NAME.tmp-PID` beside it
    (listings skip it; lmforge.io.atomic.sweep_temps removes a dead writer's)."""
    path = upath(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def copy(src, dst) -> None:
    """A copy (server-side between keys of one store) through a temporary name at `dst`."""
    if isinstance(src, FsPath) and isinstance(dst, FsPath) and src.fs is dst.fs:
        tmp = temp_sibling(dst)
        src.fs.copy(src.path, tmp.path)
        replace(tmp, dst)
    elif isinstance(dst, FsPath):
        tmp = temp_sibling(dst)
        with open_file(src, "rb") as f, tmp.open("wb") as g:
            shutil.copyfileobj(f, g, 1 << 22)
        replace(tmp, dst)
    else:   # a local destination: through its temporary name too (a cut copy never bears the final name)
        tmp = temp_sibling(dst)
        try:
            with open_file(src, "rb") as f, open(tmp, "wb") as g:
                shutil.copyfileobj(f, g, 1 << 22)
            os.replace(tmp, dst)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


# -------------------------------------------------------------------- errors


def _one_line(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0][:200]


def url_error(url: str, e: BaseException) -> BaseException | None:
    """The one-line error for an fsspec failure on `url`, or None to let `e` through as it is."""
    name = type(e).__name__
    if name in ("NoCredentialsError", "PartialCredentialsError", "NoAuthTokenError",
                "DefaultCredentialsError", "CredentialRetrievalError"):
        return ConfigError(f"{url}: no credentials for {protocol(url)}:// ({_one_line(e)}): set them "
                           f"(for S3: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or ~/.aws) and rerun")
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError"):
        return ConfigError(f"{url}: cannot reach the store ({_one_line(e)}); check AWS_ENDPOINT_URL "
                           f"or the network")
    if isinstance(e, FileNotFoundError):
        return FileNotFoundError(errno.ENOENT, e.strerror or "not found", url)
    if isinstance(e, PermissionError):
        return PermissionError(errno.EACCES, f"access denied ({_one_line(e)})", url)
    return None


@contextmanager
def url_errors(url) -> Iterator[None]:
    """Turn a store's errors inside the block into one line naming `url` (a no-op locally)."""
    try:
        yield
    except ConfigError:
        raise
    except Exception as e:
        if not is_url(url):
            raise
        mapped = url_error(str(url), e)
        if mapped is None:
            raise
        raise mapped from e


def check_output(p) -> None:
    """Before any work: the bucket (or top folder) of an output URL exists and can be listed,
    so a typo or missing credentials is one line now, not a traceback after the first step."""
    if not isinstance(p, FsPath) or protocol(p.url) not in BUCKET_STORES:
        return
    with url_errors(p):
        bucket = p.path.strip("/").split("/", 1)[0]
        try:
            p.fs.ls(bucket, detail=False)
        except FileNotFoundError:
            raise FileNotFoundError(errno.ENOENT, f"bucket {bucket!r} not found", p.url) from None


def cache_home() -> Path:
    """~/.cache/lmforge ($XDG_CACHE_HOME moves ~/.cache): scratch folders, fetched copies (io.fetch)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lmforge"


def scratch_dir(p, root: str | Path = "") -> Path:
    """A local folder for what cannot live on an object store (memory-mapped work files, the
    run lock): `root` or ~/.cache/lmforge/scratch, then a hash of the URL."""
    import hashlib
    base = Path(root) if root else cache_home() / "scratch"
    return base / hashlib.sha256(str(p).encode()).hexdigest()[:16]
