"""The executor interface and the local executor: run per-shard tasks with a progress bar, in
worker processes on one machine. The Ray executor (ray_executor.py) implements the same
interface; executors.py picks one for a config, so this module depends on neither.

Tasks return a dict with "docs" and "bytes" (what they processed); the bar shows
shards done and the running documents/s and MB/s. `workers=1` runs in-process
(easier to debug, and no fork cost in tests). Results come back in task order, so
every executor writes the same files.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Protocol, Sequence

from tqdm import tqdm

from lmforge.workers import worker_pool

RAY_MISSING = "Ray is not installed (executor: ray needs it): pip install 'lmforge[ray]'"


class Executor(Protocol):
    def map(self, fn: Callable[..., Any], tasks: Sequence[tuple], desc: str = "") -> list[Any]: ...

    def close(self) -> None: ...


class Progress:
    """Shards done, with running documents/s and MB/s from the tasks' result dicts."""

    def __init__(self, total: int, desc: str, enabled: bool):
        self.bar = tqdm(total=total, desc=desc, unit="shard", disable=not enabled,
                        dynamic_ncols=True)
        self.start, self.docs, self.nbytes = time.perf_counter(), 0, 0

    def done(self, res) -> None:
        if isinstance(res, dict):
            self.docs += int(res.get("docs", 0))
            self.nbytes += int(res.get("bytes", 0))
        dt = max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix_str(f"{self.docs / dt:,.0f} docs/s, {self.nbytes / dt / 1e6:,.2f} MB/s")
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def _call(args):
    fn, task = args
    return fn(*task)


class LocalExecutor:
    def __init__(self, workers: int = 1, progress: bool = True):
        self.workers = max(1, int(workers))
        self.progress = progress

    def map(self, fn: Callable[..., dict], tasks: Sequence[tuple], desc: str = "") -> list[Any]:
        results: list[Any] = [None] * len(tasks)
        if not tasks:
            return results
        bar = Progress(len(tasks), desc, self.progress)
        try:
            if self.workers == 1 or len(tasks) == 1:
                for i, t in enumerate(tasks):
                    results[i] = fn(*t)
                    bar.done(results[i])
            else:
                with worker_pool(min(self.workers, len(tasks))) as pool:   # quiet, interrupt-safe
                    it = pool.imap(_call, [(fn, t) for t in tasks])
                    for i, res in enumerate(it):
                        results[i] = res
                        bar.done(res)
        finally:
            bar.close()
        return results

    def close(self) -> None:
        pass
