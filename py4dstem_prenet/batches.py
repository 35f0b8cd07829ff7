"""Reading a cube batch by batch: the only code that touches the stored patterns.

:func:`iter_batches` reads ``(n, Qx, Qy)`` float32 blocks from anything indexable like ``data[rx0:rx1]``
(a NumPy array, an ``h5py.Dataset``, a memmap), validates them, and hands them over with their flat scan
index; :func:`prefetch` reads ahead in a thread; :func:`write_block` puts a batch's per-pattern results
back at its scan positions. The executors of :mod:`engine` are built on these.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .validation import check_batch_size, check_cube_shape, check_patterns


def iter_batches(
    data: Any, batch_size: int = 64, progress: bool = True, desc: str = "patterns",
    rows: tuple[int, int] | None = None, neighbours: bool = False,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(flat_start, block)`` with ``block`` float32 ``(n, Qx, Qy)``, n <= batch_size.

    ``data`` is ``(Rx, Ry, Qx, Qy)``; flat index ``i`` is scan position ``np.unravel_index(i, (Rx, Ry))``.
    Blocks are read whole scan rows at a time when a row fits in a batch (contiguous HDF5 reads);
    ``rows = (r0, r1)`` restricts the walk to scan rows ``r0 <= rx < r1``, which must start on a
    multiple of :func:`rows_per_read` so that the batches are exactly those of a whole-cube walk.
    With ``neighbours`` each block is ``(n, 5, Qx, Qy)``: the pattern and its scan neighbours up, down,
    left and right (one extra row is read on each side; at the scan's edge the neighbour on the other
    side stands in).
    """
    batch_size = check_batch_size(batch_size)
    check_cube_shape(tuple(data.shape), data.dtype)
    rx, ry = int(data.shape[0]), int(data.shape[1])
    step = rows_per_read(ry, batch_size)
    r_start, r_stop = rows or (0, rx)
    with tqdm(total=(r_stop - r_start) * ry, desc=desc, unit="pattern", disable=not progress, leave=False) as bar:
        for r0 in range(r_start, r_stop, step):
            r1 = min(r0 + step, r_stop)
            lo, hi = (max(0, r0 - 1), min(rx, r1 + 1)) if neighbours else (r0, r1)
            read = np.asarray(data[lo:hi], dtype=np.float32)
            block = read[r0 - lo:r1 - lo].reshape(-1, *data.shape[2:])
            if neighbours:
                block = _with_neighbours(read, lo, r0, r1, rx)
            for s in range(0, len(block), batch_size):
                sub = block[s:s + batch_size]
                start = r0 * ry + s
                check_patterns(sub[:, 0] if neighbours else sub, start, (rx, ry))
                yield start, sub
                bar.update(len(sub))


def _with_neighbours(read: np.ndarray, lo: int, r0: int, r1: int, rx: int) -> np.ndarray:
    """``(n, 5, Qx, Qy)`` for scan rows ``r0..r1`` of ``read`` (rows ``lo..`` of a scan of ``rx`` rows):
    each pattern, then its neighbours up, down, left, right (mirrored at the scan's edge)."""
    ry = read.shape[1]
    g = np.arange(r0, r1)
    up = np.where(g > 0, g - 1, np.minimum(g + 1, rx - 1)) - lo
    down = np.where(g < rx - 1, g + 1, np.maximum(g - 1, 0)) - lo
    c = np.arange(ry)
    left = np.where(c > 0, c - 1, np.minimum(c + 1, ry - 1))
    right = np.where(c < ry - 1, c + 1, np.maximum(c - 1, 0))
    here = g - lo
    stack = [read[here], read[up], read[down], read[here][:, left], read[here][:, right]]
    return np.stack(stack, axis=2).reshape(-1, 5, *read.shape[2:])


def rows_per_read(ry: int, batch_size: int) -> int:
    """Scan rows read at once by :func:`iter_batches`: as many whole rows as fit in a batch (at least 1)."""
    return max(1, batch_size // ry)


def prefetch(items: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """Yield from ``items`` while a background thread reads ahead up to ``depth`` items: reading and
    checking the next batch (file I/O, conversion, validation) overlaps the work on the current one.
    Exceptions raised while reading reach the consumer; stopping early stops the reader."""
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(done)
        except BaseException as exc:  # handed to the consumer, raised there
            put(exc)

    reader = threading.Thread(target=read, daemon=True, name="prenet-prefetch")
    reader.start()
    try:
        while (item := buffer.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        reader.join()


def write_block(out: Any, start: int, block: np.ndarray) -> None:
    """Write ``block (n, Qx, Qy)`` (as yielded by :func:`iter_batches`) into ``out (Rx, Ry, Qx, Qy)``."""
    ry = out.shape[1]
    r0, c0 = divmod(start, ry)
    if c0 == 0 and len(block) % ry == 0:
        out[r0:r0 + len(block) // ry] = block.reshape(-1, ry, *block.shape[1:])
    else:  # a segment of one scan row
        out[r0, c0:c0 + len(block)] = block
