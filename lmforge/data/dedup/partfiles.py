"""Partitioned row files: the shuffle of the distributed MinHash stages.

A map task writes its rows grouped by destination partition into one `.npy` (rows sorted
by partition, stable) and a second `.off.npy` with the partition offsets (P + 1 int64).
The reduce task for partition p memory-maps every map task's pair of files and reads only
slice p of each. So a shuffle of M map tasks into P partitions is 2M files, not M x P,
and no row ever passes through the driver.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lmforge.io.atomic import save_npy

_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads keys and node ids evenly over partitions."""
    x = x.astype(np.uint64, copy=True)
    x ^= x >> np.uint64(30)
    x *= _M1
    x ^= x >> np.uint64(27)
    x *= _M2
    x ^= x >> np.uint64(31)
    return x


def partition_of(x: np.ndarray, parts: int) -> np.ndarray:
    return (mix64(x) % np.uint64(parts)).astype(np.int64)


def offsets_path(path: Path) -> Path:
    return path.with_name(path.name[:-len(".npy")] + ".off.npy")


def write_partitioned(path: Path, part: np.ndarray, parts: int, **columns: np.ndarray) -> None:
    """Rows (the columns, equal length) grouped by `part` (stable), one file per column
    (`path` with the column name) and the offsets beside them."""
    order = np.argsort(part, kind="stable")
    off = np.zeros(parts + 1, dtype=np.int64)
    np.cumsum(np.bincount(part, minlength=parts), out=off[1:])
    for name, col in columns.items():
        save_npy(column_path(path, name), col[order])
    save_npy(offsets_path(path), off)


def column_path(path: Path, name: str) -> Path:
    return path.with_name(f"{path.name[:-len('.npy')]}.{name}.npy")


def read_partition(paths: list[Path], p: int, *names: str) -> list[np.ndarray]:
    """Slice p of every file in `paths`, concatenated in that order, one array per column."""
    cols: list[list[np.ndarray]] = [[] for _ in names]
    for path in paths:
        off = np.load(offsets_path(path))
        a, b = int(off[p]), int(off[p + 1])
        for k, name in enumerate(names):
            cols[k].append(np.load(column_path(path, name), mmap_mode="r")[a:b])
    return [np.concatenate(c) if c else np.zeros(0) for c in cols]
