"""Worker processes (bottom layer): how a pool worker treats signals."""
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
