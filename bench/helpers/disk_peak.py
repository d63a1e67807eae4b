"""Peak disk use of a folder while a command runs: a thread adds up the sizes of the files
under it every `every` seconds (a sample, so a peak shorter than that can be missed), and
a check that a run's derived disk need fits the free space before it starts."""
from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path


def tree_bytes(root: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        for f in files:
            try:
                total += os.stat(os.path.join(dirpath, f)).st_blocks * 512  # allocated, not length
            except FileNotFoundError:  # deleted between the listing and the stat
                pass
    return total


class DiskPeak:
    """with DiskPeak(folder) as d: ...; then d.peak (bytes, allocated blocks)."""

    def __init__(self, root: Path, every: float = 2.0):
        self.root, self.every, self.peak = Path(root), every, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.peak = max(self.peak, tree_bytes(self.root))
            if self._stop.wait(self.every):
                return

    def __enter__(self) -> "DiskPeak":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, tree_bytes(self.root))


def fits(folder: Path, need_bytes: float, margin_bytes: float = 5e9) -> bool:
    """True when need_bytes plus a margin (other users of the disk) are free under folder."""
    return shutil.disk_usage(folder).free >= need_bytes + margin_bytes
