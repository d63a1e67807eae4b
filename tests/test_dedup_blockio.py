"""Whole-block file I/O of the substring shuffle (dedup/blockio.py): what a BlockWriter
appends in pieces of any size is the file, byte for byte, and BlockReader gives back any
range, with O_DIRECT (where the test folder's filesystem takes it) and through the page
cache; the shuffle gives the same spans either way."""
from __future__ import annotations

import numpy as np
import pytest

from lmforge.data.dedup import blockio
from lmforge.data.dedup.blockio import ALIGN, BlockReader, BlockWriter, scratch


@pytest.fixture(params=[True, False], ids=["direct", "page-cache"])
def direct(request, monkeypatch):
    if not request.param:
        monkeypatch.setattr(blockio, "DIRECT", 0)
    yield request.param
    blockio.release_scratch()


def test_pieces_make_the_file_and_ranges_read_back(tmp_path, direct):
    rng = np.random.default_rng(0)
    sizes = [0, 1, 3, 511, 512, 513, 4096, 70_000, 2, 0, 100_000, 7]  # rows of 8 B
    want = [rng.integers(0, 2**63, n, dtype=np.uint64) for n in sizes]
    path = tmp_path / "rows.bin"
    with BlockWriter(path, "test") as w:
        for rows in want:
            w.room(len(rows), np.uint64)[:] = rows
            w.commit(len(rows), np.uint64)
    data = np.concatenate(want)
    assert path.read_bytes() == data.tobytes()  # exact size: the padded last block is cut
    raw = data.view(np.uint8)
    with BlockReader(path) as r:
        for a, b in [(0, 0), (0, 8), (8, 16), (ALIGN - 8, ALIGN + 8), (123 * 8, len(raw)),
                     (len(raw) - 8, len(raw)), (5 * ALIGN, 9 * ALIGN)]:
            dst = scratch("test-read", b - a + 2 * ALIGN, np.uint8)
            at, used = r.read(dst, a, b)
            assert used % ALIGN == 0 and at + b - a <= used
            assert dst[at:at + b - a].tobytes() == raw[a:b].tobytes(), (a, b)
        with pytest.raises(RuntimeError, match="shorter than its offsets"):
            r.read(scratch("test-read", 3 * ALIGN, np.uint8), len(raw) - 8, len(raw) + 8)


def test_writer_keeps_its_tail_when_the_buffer_grows(tmp_path, direct):
    path = tmp_path / "text.bin"
    pieces = [b"a" * 10, b"b" * (3 * ALIGN + 5), b"c" * 1]
    with BlockWriter(path, "test-grow") as w:
        for p in pieces:
            w.room(len(p), np.uint8)[:] = np.frombuffer(p, np.uint8)
            w.commit(len(p), np.uint8)
    assert path.read_bytes() == b"".join(pieces)


def test_direct_refused_at_the_first_transfer_goes_on_through_the_page_cache(tmp_path, monkeypatch):
    """A file whose O_DIRECT transfers fail with EINVAL (larger device blocks): the same
    call again without the flag, and the bytes are right."""
    import errno
    import os

    real, failed = os.pwrite, []

    def pwrite(fd, data, pos):
        if blockio.DIRECT and blockio.fcntl.fcntl(fd, blockio.fcntl.F_GETFL) & blockio.DIRECT:
            failed.append(pos)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, data, pos)

    monkeypatch.setattr(blockio.os, "pwrite", pwrite)
    path = tmp_path / "x.bin"
    rows = np.arange(3000, dtype=np.uint64)
    with BlockWriter(path, "test-einval") as w:
        w.room(len(rows), np.uint64)[:] = rows
        w.commit(len(rows), np.uint64)
    assert path.read_bytes() == rows.tobytes()
    assert len(failed) <= 1  # one refusal where the folder took O_DIRECT at open, then none
