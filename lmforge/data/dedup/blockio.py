"""Per-process scratch buffers and whole-block file I/O for the substring shuffle's big
intermediate files (keys, bucket ids, joined text: ~11 B per corpus byte, each written
once and read once).

Files are opened with O_DIRECT where the filesystem takes it: the bytes go between the
disk and a scratch buffer this process already faulted in, and no page-cache page is
allocated, zeroed, dirtied or freed for them. On the development machine (ext4 on a
virtio disk, in a VM) keys scattered into a mapped file cost 0.7-1.0 CPU s of system time
per GB (more when the kernel used large folios), write() 1-3 s per GB, O_DIRECT from a
faulted-in buffer 0.03-0.05 s, at 1.3-1.4 GB/s (bench/RESULTS.md, third speed-up).
Where O_DIRECT is refused (tmpfs, some FUSE and network filesystems, no O_DIRECT on the
platform), the same block reads and writes go through the page cache: same files, slower.

Transfers are whole ALIGN-byte blocks at ALIGN-aligned file offsets into page-aligned
buffers, as O_DIRECT requires: a writer keeps the last partial block and writes it
again padded at the end, then truncates the file to its exact size; a reader reads the
blocks that cover a byte range and says where in the buffer the range starts.
"""
from __future__ import annotations

import errno
import fcntl
import mmap
import os
import threading

import numpy as np

ALIGN = 4096  # a multiple of every logical block size O_DIRECT asks for (512 or 4096)
DIRECT = getattr(os, "O_DIRECT", 0)  # 0: through the page cache (tests set it to cover that)

_SCRATCH: dict[str, np.ndarray] = {}


def scratch(name: str, n: int, dtype) -> np.ndarray:
    """n rows of this process's buffer `name` (page-aligned), which only grows until
    release_scratch(). A task's big arrays come from here: fresh memory costs a page fault
    per page on first touch, 0.3-3 CPU s per GB on the development machine (more when the
    kernel compacts memory for huge pages), paid once per process instead of once per
    chunk, task and stage (bench/RESULTS.md). The contents are not cleared. Names: u64
    (keys), u16 (bucket ids), txt (joined text), u8 (flags per row, then `later`)."""
    dtype = np.dtype(dtype)
    buf = _SCRATCH.get(name)
    if buf is None or len(buf) < n * dtype.itemsize:
        _SCRATCH.pop(name, None)
        del buf
        # an anonymous mapping, not np.empty: numpy asks for huge pages, and their first
        # touch cost ~3 CPU s per GB (the kernel compacting memory) against ~0.3 for 4 KB pages.
        # A quarter more than asked: the span task's chunk (bytes) is about the size of a
        # repeat task's partition (rows), and pages never touched cost no memory
        size = max(n * dtype.itemsize * 5 // 4, 1)
        buf = _SCRATCH[name] = np.frombuffer(mmap.mmap(-1, size), np.uint8)
    return buf[:n * dtype.itemsize].view(dtype)


def release_scratch() -> None:
    """Free the scratch buffers (the driver calls this after the shuffle: tasks it ran
    itself must not leave their buffers in its memory; between stages they are reused)."""
    _SCRATCH.clear()


def _open(path, flags: int) -> int:
    if DIRECT:
        try:
            return os.open(path, flags | DIRECT, 0o644)
        except OSError as e:
            if e.errno != errno.EINVAL:  # EINVAL: this filesystem takes no O_DIRECT
                raise
    return os.open(path, flags, 0o644)


def _io(fd: int, call):
    """call(), once more through the page cache if O_DIRECT refused it (EINVAL: a device
    whose blocks are larger than ALIGN, or a filesystem that takes the flag at open only)."""
    try:
        return call()
    except OSError as e:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        if e.errno != errno.EINVAL or not DIRECT or not flags & DIRECT:
            raise
        fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~DIRECT)
        return call()


def _up(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


class _Closes:
    """`with` closes it."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class BlockWriter(_Closes):
    """Appends rows to a new file from the scratch buffer `name`: room() gives the caller
    the place for its next rows (after the partial block still to write), commit() writes
    the whole blocks on a thread of its own (the caller goes on, e.g. decoding the next
    chunk, while the disk works: O_DIRECT waits for it), close() the rest and the exact
    size. Use as a context manager."""

    def __init__(self, path, name: str):
        self.fd = _open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        self.path, self.name, self.pos, self.tail = path, name, 0, b""
        self._thread, self._error = None, None

    def room(self, n: int, dtype) -> np.ndarray:
        """Scratch for the next n rows of dtype (valid until the next room() or close())."""
        self._wait()
        size, t = np.dtype(dtype).itemsize, len(self.tail)
        assert t % size == 0, (t, size)
        buf = scratch(self.name, t + n * size + ALIGN, np.uint8)
        buf[:t] = np.frombuffer(self.tail, np.uint8)
        return buf[t:t + n * size].view(dtype)

    def commit(self, n: int, dtype) -> None:
        """Write the rows put in room(n, dtype), but the last partial block (in the
        background: the buffer is not touched again before the next room())."""
        end = len(self.tail) + n * np.dtype(dtype).itemsize
        buf = scratch(self.name, end, np.uint8)
        full = end // ALIGN * ALIGN
        self.tail = bytes(buf[full:end])
        if full:
            self._thread = threading.Thread(target=self._write_bg, args=(buf[:full],))
            self._thread.start()

    def _write_bg(self, data: np.ndarray) -> None:
        try:
            self._write(data)
        except BaseException as e:  # raised again by the caller's next room() or close()
            self._error = e

    def _wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            raise self._error

    def _write(self, data: np.ndarray) -> None:
        view, done = memoryview(data), 0
        while done < len(view):
            got = _io(self.fd, lambda: os.pwrite(self.fd, view[done:], self.pos))
            if got <= 0:
                raise OSError(f"{self.path}: write returned {got}")
            done, self.pos = done + got, self.pos + got

    def close(self) -> None:
        if self.fd < 0:
            return
        try:
            self._wait()
            if self.tail:
                t = len(self.tail)
                buf = scratch(self.name, _up(t), np.uint8)
                buf[:t] = np.frombuffer(self.tail, np.uint8)
                end = self.pos + t
                self._write(buf[:_up(t)])  # the last block, padded
                os.ftruncate(self.fd, end)
        finally:
            if self._thread is not None:  # an error above: let the write end first
                self._thread.join()
            os.close(self.fd)
            self.fd = -1


class BlockReader(_Closes):
    """Reads byte ranges of a file as whole blocks into page-aligned buffers."""

    def __init__(self, path):
        self.path, self.fd = path, _open(path, os.O_RDONLY)

    def read(self, dst: np.ndarray, start: int, end: int) -> tuple[int, int]:
        """Bytes [start, end) of the file into dst (uint8, page-aligned at dst[0], room for
        the blocks that cover the range: end - start + 2 x ALIGN bytes is always enough).
        Returns (where the range starts in dst, bytes of dst used: a multiple of ALIGN)."""
        if end <= start:
            return 0, 0
        a, b = start // ALIGN * ALIGN, _up(end)
        assert len(dst) >= b - a, (len(dst), b - a)
        view, got = memoryview(dst[:b - a]), 0
        while got < end - a:
            n = _io(self.fd, lambda: os.preadv(self.fd, [view[got:]], a + got))
            if n <= 0:
                raise RuntimeError(f"{self.path}: shorter than its offsets say; delete the step "
                                   "folder and rerun")
            got += n
        return start - a, b - a

    def read_scratch(self, name: str, start: int, end: int) -> np.ndarray:
        """Bytes [start, end) of the file as a view of this process's scratch buffer `name`
        (valid until that buffer is used again)."""
        at, _ = self.read(scratch(name, end - start + 2 * ALIGN, np.uint8), start, end)
        return scratch(name, at + end - start, np.uint8)[at:]

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
