"""Run the pipeline's per-shard tasks as Ray tasks (optional extra: pip install 'lmforge[ray]').

What fans out: every `executor.map` of the pipeline, i.e. reading raw files, each
step's per-shard pass (`run_shard`: filters, langid, quality scoring, applying dedup
and topic decisions) and the MinHash signatures. Each is one Ray task per shard with
num_cpus=1. What stays on the driver: the global parts of `prepare` (MinHash LSH +
connected components, suffix arrays, quality-classifier training, topic k-means), so
the driver's machine needs the memory of docs/scale.md.

Tasks read and write the step folders themselves, so on several machines the input
and output folders must be on a filesystem every node mounts at the same path (NFS,
Lustre, ...) or be URLs (s3://..., lmforge.io.fs; then the steps' work/ folder, `scratch`,
must be shared); nothing but small result dicts travels through Ray. Results are gathered
in task order, and every task writes files named by its shard only, so a Ray run
writes exactly the files of a local run (tests/test_data_ray.py checks byte equality).
"""
from __future__ import annotations

import os
from pathlib import PurePath
from typing import Any, Callable, Sequence

from .executor import RAY_MISSING, Progress

try:
    import ray
except ImportError as e:  # the extra is not installed
    raise ImportError(RAY_MISSING) from e

_CHEAP = (int, float, str, bytes, bool, type(None), PurePath)
_remote_cache: dict[float, Any] = {}


def _run_task(cwd: str, fn: Callable, *args):
    # relative paths in a config mean the driver's folder; on another node that folder
    # exists only on a shared filesystem mounted at the same path
    if cwd and os.getcwd() != cwd and os.path.isdir(cwd):
        os.chdir(cwd)
    return fn(*args)


def _remote(cpus: float):
    if cpus not in _remote_cache:
        _remote_cache[cpus] = ray.remote(num_cpus=cpus, max_retries=2)(_run_task)
    return _remote_cache[cpus]


def _share(tasks: Sequence[tuple]) -> list[list]:
    """Arguments that are the same object in every task (the step, its context) go to
    the object store once instead of being pickled into each task."""
    rows = [list(t) for t in tasks]
    if len(rows) < 2 or len({len(r) for r in rows}) != 1:
        return rows
    for j, v in enumerate(rows[0]):
        if not isinstance(v, _CHEAP) and all(r[j] is v for r in rows):
            ref = ray.put(v)
            for r in rows:
                r[j] = ref
    return rows


class RayExecutor:
    """executor.map on a Ray cluster.

    address: None starts a private local Ray with `num_cpus` CPUs (stopped by close());
    "auto" joins the cluster this machine belongs to (`ray start --head` / `--address`);
    "ray://HOST:10001" connects through Ray Client. If Ray is already initialised in
    this process (a notebook, a test), that session is used and left running.
    """

    def __init__(self, address: str | None = None, num_cpus: int | None = None,
                 progress: bool = True, cpus_per_task: float = 1, max_in_flight: int | None = None):
        self.address, self.num_cpus, self.progress = address, num_cpus, progress
        self.cpus_per_task, self.max_in_flight = cpus_per_task, max_in_flight
        self._owns = False

    def __getstate__(self):  # a copy inside a task's context must never stop the cluster
        return {**self.__dict__, "_owns": False}

    def _ensure(self) -> None:
        if ray.is_initialized():
            return
        if self.address is None:
            ray.init(num_cpus=self.num_cpus, include_dashboard=False)
        else:
            try:
                ray.init(address=self.address)
            except ConnectionError as e:  # ValueError: the CLI prints it as a one-line error
                raise ValueError(f"ray_address: cannot join the Ray cluster at {self.address!r}: "
                                 f"{str(e).splitlines()[0]}") from e
        self._owns = True

    def _limit(self) -> int:
        if self.max_in_flight:
            return self.max_in_flight
        cpus = ray.cluster_resources().get("CPU", 1)  # keep every CPU busy, bound the queue
        return max(2, int(2 * cpus / self.cpus_per_task))

    def map(self, fn: Callable[..., Any], tasks: Sequence[tuple], desc: str = "") -> list[Any]:
        results: list[Any] = [None] * len(tasks)
        if not tasks:
            return results
        self._ensure()
        remote, rows, cwd = _remote(self.cpus_per_task), _share(tasks), os.getcwd()
        fn_ref, limit = ray.put(fn), self._limit()
        bar = Progress(len(tasks), desc, self.progress)
        pending: dict = {}  # ObjectRef -> task index
        nxt = 0
        try:
            while nxt < len(rows) or pending:
                while nxt < len(rows) and len(pending) < limit:
                    pending[remote.remote(cwd, fn_ref, *rows[nxt])] = nxt
                    nxt += 1
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    i = pending.pop(ref)
                    results[i] = ray.get(ref)  # a task's exception is re-raised here
                    bar.done(results[i])
        except BaseException:
            for ref in pending:
                ray.cancel(ref)
            raise
        finally:
            bar.close()
        return results

    def close(self) -> None:
        if self._owns and ray.is_initialized():
            ray.shutdown()
        self._owns = False
