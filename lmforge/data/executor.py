"""Run per-shard tasks in worker processes on one machine, with a progress bar.

Tasks return a dict with "docs" and "bytes" (what they processed); the bar shows
shards done and the running documents/s and MB/s. `workers=1` runs in-process
(easier to debug, and no fork cost in tests). Results come back in task order.
"""
from __future__ import annotations

import multiprocessing as mp
import time
from typing import Any, Callable, Sequence

from tqdm import tqdm


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
        bar = tqdm(total=len(tasks), desc=desc, unit="shard", disable=not self.progress,
                   dynamic_ncols=True)
        start, docs, nbytes = time.perf_counter(), 0, 0

        def done(i, res):
            nonlocal docs, nbytes
            results[i] = res
            if isinstance(res, dict):
                docs += int(res.get("docs", 0))
                nbytes += int(res.get("bytes", 0))
            dt = max(time.perf_counter() - start, 1e-9)
            bar.set_postfix_str(f"{docs / dt:,.0f} docs/s, {nbytes / dt / 1e6:,.2f} MB/s")
            bar.update(1)

        try:
            if self.workers == 1 or len(tasks) == 1:
                for i, t in enumerate(tasks):
                    done(i, fn(*t))
            else:
                ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp
                with ctx.Pool(min(self.workers, len(tasks))) as pool:
                    it = pool.imap(_call, [(fn, t) for t in tasks])
                    for i, res in enumerate(it):
                        done(i, res)
        finally:
            bar.close()
        return results
