"""One writer per folder: DIR/.lock holds the owner's pid, host and start time.

Taken by `lmforge run` on its run folder and by the stage contract (lmforge.stagekit.stage) on
every stage's out_dir, so two commands writing one folder cannot interleave their checkpoints
and metrics. A second writer refuses in one line naming the holder (LockError: the CLI says
"locked", not "config error"); a lock whose process is gone (same host, dead pid) is stale and
taken over, with a message. The lock is created with O_EXCL, so two runs starting at the same
moment cannot both get it.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from lmforge.config import ConfigError


class LockError(ConfigError):
    """The folder is being written by another lmforge process (exit 2, like a usage error)."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    def __init__(self, run_dir: str | Path, log=print):
        self.path = Path(run_dir) / ".lock"
        self.log = log
        self.held = False
        self.made_dir = False    # the folder was created for the lock: removed again if left empty

    def _create(self) -> bool:
        if not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.made_dir = True
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}, f)
        return True

    def holder(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def acquire(self) -> None:
        for _ in range(3):
            if self._create():
                self.held = True
                return
            h = self.holder()
            same_host = h.get("host") == socket.gethostname()
            pid = h.get("pid")
            if isinstance(pid, int) and same_host and not _alive(pid):
                self.log(f"note: taking over a stale lock {self.path} (process {pid} is gone)")
                self.path.unlink(missing_ok=True)
                continue
            if not h:           # half-written by a run that is starting right now: look again
                time.sleep(0.2)
                if not self.holder():
                    self.path.unlink(missing_ok=True)
                continue
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h.get("since", 0)))
            raise LockError(f"{self.path.parent} is in use by another lmforge run (pid {pid} on "
                              f"{h.get('host')}, since {since}); wait for it, or delete {self.path} "
                              "if that run is gone")
        raise LockError(f"{self.path}: could not take the folder's lock")

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def release(self) -> None:
        if self.held:
            if self.holder().get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False
            if self.made_dir:     # a stage refused before writing anything leaves no folder behind
                try:
                    self.path.parent.rmdir()
                except OSError:
                    pass
