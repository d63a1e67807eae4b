"""Signals (bottom layer): how a pool worker treats them, and SIGTERM in the main process."""
from __future__ import annotations

import signal


def quiet_worker(*_) -> None:
    """Pool initializer: workers leave shutdown to the parent. Ctrl-C, which the terminal sends
    to the whole process group, is ignored here; SIGTERM, which a pool sends to end its
    workers, kills at once (the default action) instead of running a Python handler inherited
    from the parent. So neither a good run nor Ctrl-C prints worker tracebacks, and no worker
    dies raising inside a queue lock."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def sigterm_as_interrupt() -> None:
    """In the main process, `kill PID` (a scheduler, a timeout) is handled like Ctrl-C: a
    KeyboardInterrupt that the stage turns into a resumable stop and the CLI into exit 130.
    Pool workers set SIGTERM back to the default action (quiet_worker), so a pool's own
    terminate() stays silent."""
    import threading
    if threading.current_thread() is threading.main_thread():
        def handler(signum, frame):
            raise KeyboardInterrupt(f"signal {signum}")
        signal.signal(signal.SIGTERM, handler)
