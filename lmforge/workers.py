"""Signals and worker pools (bottom layer): how a pool worker treats signals, SIGTERM in the
main process, and a process pool that Ctrl-C or `kill` cannot leave half started or half
stopped."""
from __future__ import annotations

import multiprocessing as mp
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator


def quiet_worker(*_) -> None:
    """Pool initializer: workers leave shutdown to the parent. Ctrl-C, which the terminal sends
    to the whole process group, is ignored here; SIGTERM, which a pool sends to end its
    workers, kills at once (the default action) instead of running a Python handler inherited
    from the parent. So neither a good run nor Ctrl-C prints worker tracebacks, and no worker
    dies raising inside a queue lock."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    single_threaded_torch()


def single_threaded_torch() -> None:
    """In a forked worker, torch runs its ops on one thread. The parent's OpenMP thread pool
    does not survive fork(): once the parent has run a parallel op (an embedding model fitted
    before the shards are handed out), the child's first parallel op waits forever for pool
    threads that do not exist (the `data` stage's embedding topics hung so). One thread per
    worker is also what a pool of one worker per core wants. Torch is not imported here: a
    parent that never loaded it has no pool to lose."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every stage stops and resumes the same way; what
    stops only on a user's Ctrl-C (a chat reply) can tell the two apart."""


def sigterm_as_interrupt() -> None:
    """In the main process, `kill PID` (a scheduler, a timeout) is handled like Ctrl-C: a
    KeyboardInterrupt that the stage turns into a resumable stop and the CLI into exit 130.
    Pool workers set SIGTERM back to the default action (quiet_worker), so a pool's own
    terminate() stays silent."""
    if threading.current_thread() is threading.main_thread():
        def handler(signum, frame):
            raise Terminated(f"signal {signum}")
        signal.signal(signal.SIGTERM, handler)


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends, then act on the first one as usual.

    An interrupt raised at an arbitrary point inside multiprocessing (a fork hook, a pool's
    half-built state, its shutdown handshake) is swallowed as "Exception ignored" or leaves
    worker processes holding a queue lock: the run then goes on after the signal, or hangs
    at exit. Pools are therefore started and stopped with interrupts held; only the wait for
    results is interruptible. Forked children inherit the holding handlers until
    quiet_worker replaces them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []

    def hold(signum, frame):
        got.append(signum)

    old = {s: signal.signal(s, hold) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        if got:
            handler = old[got[0]]
            if callable(handler):
                handler(got[0], None)              # raises KeyboardInterrupt / Terminated
            elif handler == signal.SIG_DFL:
                signal.raise_signal(got[0])        # the default action: end the process


@contextmanager
def worker_pool(processes: int, method: str = "fork") -> Iterator["mp.pool.Pool"]:
    """A multiprocessing pool of quiet workers, started and stopped with interrupts held: on
    success it is closed and joined, on any exception (Ctrl-C, SIGTERM, an error) terminated."""
    ctx = mp.get_context(method if method in mp.get_all_start_methods() else None)
    with deferred_interrupts():
        pool = ctx.Pool(processes, initializer=quiet_worker)
    ok = False
    try:
        yield pool
        ok = True
    finally:
        with deferred_interrupts():
            if ok:
                pool.close()
            else:
                pool.terminate()
            pool.join()
