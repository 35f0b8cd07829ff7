"""Spreading the per-batch work over a Dask cluster (``pip install "py4dstem-prenet[distributed]"``).

:func:`map_chunks` cuts the scan into chunks of whole rows, each a whole number of
:func:`batches.iter_batches` batches, and has the workers run the same per-batch function on the same
batches as a single process would, so the results are identical. A cube in an HDF5 file is read by the
workers themselves (they need the file at the same path: a shared filesystem); any other cube is read
here and its chunks are sent to them. At most two chunks per worker are in flight, so neither side
holds more than a few chunks. Models are loaded once per worker process (:func:`weights.load_model`
caches them).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np
from tqdm.auto import tqdm

from .batches import iter_batches, rows_per_read

#: Patterns per task: large enough that scheduling costs little, small enough to balance the workers.
CHUNK_PATTERNS = 1024


@dataclass(frozen=True)
class HDF5Rows:
    """Where a worker reads its chunk: an HDF5 dataset by file path and dataset name, read through the
    survey's cleaning (:class:`survey.CleanedCube`) when ``survey`` is given."""

    path: str
    dataset: str
    survey: Any = None


class _RowWindow:
    """Rows ``r0 <= rx < r0 + len(block)`` of a cube of ``shape``, indexable like the whole cube by
    scan-row slices (all that :func:`batches.iter_batches` asks of its data)."""

    def __init__(self, block: np.ndarray, r0: int, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.block, self.r0, self.shape, self.dtype = block, r0, shape, dtype

    def __getitem__(self, rows: slice) -> np.ndarray:
        return self.block[rows.start - self.r0:rows.stop - self.r0]


def _set_worker_threads() -> None:
    """One PyTorch thread per Dask worker thread: several worker processes each using every core
    oversubscribe the CPU (measured: tens of times slower)."""
    import torch
    from distributed import get_worker

    try:
        torch.set_num_threads(max(1, int(get_worker().state.nthreads)))
    except (ValueError, AttributeError):  # not inside a worker (synchronous scheduler)
        pass


def _run_chunk(fn: Callable[[int, np.ndarray], Any], payload: HDF5Rows | tuple[int, np.ndarray],
               shape: tuple[int, ...], dtype: str, rows: tuple[int, int], batch_size: int,
               neighbours: bool) -> list[tuple[int, Any]]:
    _set_worker_threads()
    kw = {"rows": rows, "neighbours": neighbours}
    if isinstance(payload, HDF5Rows):
        with h5py.File(payload.path, "r") as f:
            source = f[payload.dataset]
            if payload.survey is not None:
                from .survey import CleanedCube

                source = CleanedCube(source, payload.survey)
            return [(s, fn(s, b)) for s, b in iter_batches(source, batch_size, False, **kw)]
    window = _RowWindow(payload[1], payload[0], shape, np.dtype(dtype))
    return [(s, fn(s, b)) for s, b in iter_batches(window, batch_size, False, **kw)]


def _payload(data: Any, rows: tuple[int, int], halo: int) -> HDF5Rows | tuple[int, np.ndarray]:
    """What a worker needs to read ``rows`` (plus ``halo`` rows each side): the file, or the rows."""
    if isinstance(data, h5py.Dataset):
        return HDF5Rows(str(data.file.filename), str(data.name))
    if isinstance(getattr(data, "data", None), h5py.Dataset) and hasattr(data, "survey"):  # a CleanedCube
        return HDF5Rows(str(data.data.file.filename), str(data.data.name), data.survey)
    lo = max(0, rows[0] - halo)
    return lo, np.asarray(data[lo:rows[1] + halo])


def map_chunks(client: Any, fn: Callable[[int, np.ndarray], Any], data: Any, batch_size: int, progress: bool,
               desc: str, neighbours: bool = False) -> Iterator[tuple[int, Any]]:
    """``(flat_start, fn(flat_start, block))`` for every batch, in scan order, computed by ``client``'s
    workers (see the module docstring)."""
    shape = tuple(int(s) for s in data.shape)
    rx, ry = shape[:2]
    step = rows_per_read(ry, batch_size)
    chunk_rows = step * max(1, CHUNK_PATTERNS // (step * ry))
    workers = max(1, len(client.scheduler_info().get("workers", {})))
    pending: deque = deque()
    starts = iter(range(0, rx, chunk_rows))
    with tqdm(total=rx * ry, desc=f"{desc} (dask)", unit="pattern", disable=not progress, leave=False) as bar:
        while True:
            while len(pending) < 2 * workers and (r0 := next(starts, None)) is not None:
                rows = (r0, min(r0 + chunk_rows, rx))
                payload = _payload(data, rows, 1 if neighbours else 0)
                pending.append((client.submit(_run_chunk, fn, payload, shape, str(data.dtype), rows, batch_size,
                                              neighbours, pure=False), (rows[1] - rows[0]) * ry))
            if not pending:
                return
            future, n = pending.popleft()
            yield from future.result()
            bar.update(n)
