"""The CLI's error boundary: every failure a user can cause or meet is one line and an exit code.

    2   config or usage error (names the file and key), a missing input, or a folder locked by
        another lmforge process ("locked: ...")
    3   training diverged (too many non-finite steps; the last good checkpoint is intact)
    4   I/O error: permission denied, read-only or full disk (names the path)
    5   bad input data: a corrupt checkpoint or file that cannot be read
    130 interrupted (Ctrl-C or SIGTERM): rerun the same command to resume
    1   anything else (a bug: rerun with --debug and report the traceback)
"""
from __future__ import annotations

import errno
import os
import pickle
import sys
import traceback

from lmforge.config import ConfigError
from lmforge.io.account import DataError
from lmforge.io.documents import InputRejected
from lmforge.stagekit.lock import LockError

EXIT_CONFIG, EXIT_DIVERGED, EXIT_IO, EXIT_DATA, EXIT_BUG, EXIT_INTERRUPTED = 2, 3, 4, 5, 1, 130

_IO_HINTS = {
    errno.ENOSPC: "no space left on the device: free some space (or point out_dir elsewhere) and rerun",
    errno.EDQUOT: "disk quota exceeded: free some space and rerun",
    errno.EROFS: "read-only file system: choose a writable out_dir",
    errno.EACCES: "permission denied: check the folder's permissions or choose another out_dir",
    errno.EPERM: "operation not permitted: check the folder's permissions",
}


def describe_os_error(e: OSError) -> str:
    where = f"{e.filename}: " if getattr(e, "filename", None) else ""
    hint = _IO_HINTS.get(e.errno or -1)
    if hint is None and ("enforce fail" in str(e) or "file write failed" in str(e).lower()):
        hint = "writing failed (often a full disk: check free space) and rerun"
    return f"{where}{hint or (e.strerror or str(e))}"


def _is_diverged(e: BaseException) -> bool:
    return type(e).__name__ == "TrainingDiverged"


def classify(e: BaseException) -> tuple[int, str]:
    """(exit code, one-line message) for an exception that reached the CLI."""
    if isinstance(e, LockError):     # another process writes the folder: say so, not "config error"
        return EXIT_CONFIG, f"locked: {e}"
    if isinstance(e, ConfigError):
        return EXIT_CONFIG, f"config error: {e}"
    if isinstance(e, FileNotFoundError):
        if not e.filename:
            return EXIT_CONFIG, str(e)
        what = e.strerror if e.strerror and e.strerror != os.strerror(errno.ENOENT) else "not found"
        return EXIT_CONFIG, f"{e.filename}: {what}"
    if isinstance(e, UnicodeDecodeError):
        return EXIT_DATA, f"invalid UTF-8 in the input ({e.reason} at byte {e.start})"
    if isinstance(e, OSError):
        return EXIT_IO, describe_os_error(e)
    if isinstance(e, (RuntimeError, MemoryError)) and ("can't allocate memory" in str(e) or isinstance(e, MemoryError)):
        return EXIT_IO, f"out of memory ({str(e).splitlines()[0][-160:] if str(e) else 'MemoryError'}): " \
                        f"a smaller model, batch or input, or a machine with more memory"
    if isinstance(e, RuntimeError) and ("enforce fail" in str(e) or "PytorchStreamWriter" in str(e)):
        return EXIT_IO, f"writing a checkpoint failed ({str(e).splitlines()[0][:120]}): check free disk space"
    if _is_diverged(e):
        return EXIT_DIVERGED, str(e)
    if isinstance(e, (DataError, InputRejected, pickle.UnpicklingError, EOFError)):
        return EXIT_DATA, str(e)
    return EXIT_BUG, f"error: {type(e).__name__}: {e} (rerun with --debug for the traceback)"


def run_guarded(func, args, command: str, debug: bool = False) -> int:
    from lmforge.workers import sigterm_as_interrupt
    sigterm_as_interrupt()
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        print(f"lmforge {command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (SystemExit, BrokenPipeError):   # a closed pipe (`| head`) is main's: silent, exit 141
        raise
    except BaseException as e:   # noqa: BLE001 - this is the boundary
        code, message = classify(e)
        if debug:
            traceback.print_exc()
        print(f"lmforge {command}: {message}", file=sys.stderr)
        return code
