"""Pick the executor a DataConfig asks for (`executor: local|ray`; see docs/scale.md)."""
from __future__ import annotations

from lmforge.data.executor import Executor, LocalExecutor


def make_executor(data) -> Executor:
    if getattr(data, "executor", "local") == "ray":
        from lmforge.data.ray_executor import RayExecutor  # raises ImportError(RAY_MISSING) without Ray

        return RayExecutor(address=data.ray_address, num_cpus=data.workers, progress=data.progress)
    return LocalExecutor(data.workers, data.progress)
