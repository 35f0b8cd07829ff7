"""The engine: every pass over a cube is a :class:`Step` run by an executor (LiberTEM's UDF idea, in small).

A step is a small picklable object with one job. It declares its outputs (:class:`Output`): ``"nav"``
outputs hold one value (or array) per scan position and are placed at the batch's positions; ``"sum"``
outputs are summed over the scan (float64); ``"min"`` and ``"max"`` outputs keep the element-wise extreme
over the scan; ``"items"`` outputs collect a few per-pattern extras (``{flat_index: array}``) up to a memory
limit (:class:`Items`). Its :meth:`Step.process` maps one batch
``(flat_start, block (n, Qx, Qy) float32)`` (with :attr:`Step.neighbours`: ``(n, 5, Qx, Qy)``, each
pattern and its scan neighbours) to a dict of those outputs for the batch. The engine reads the cube batch
by batch (:mod:`batches`), hands the batches to an executor and merges the parts in scan order:

* :class:`LocalExecutor`: this process, the next batch read and checked by a background thread while the
  current one is processed;
* :class:`DaskExecutor`: the workers of a ``dask.distributed.Client`` (:mod:`distributed`), on exactly
  the same batches, so the merged result is the same.

Only one batch (a few chunks with Dask) is in memory at a time; a ``"nav"`` output may be given as an
``h5py.Dataset`` (``run(..., into={"data": dataset})``) so that a corrected cube streams to disk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .batches import iter_batches, prefetch, write_block
from .options import Options


@dataclass(frozen=True)
class Output:
    """One output of a step: ``kind`` ``"nav"`` (per scan position, trailing ``shape``), ``"sum"`` (summed
    over the scan, ``shape``), ``"min"`` or ``"max"`` (element-wise extreme over the scan, ``shape``), stored
    as ``dtype``."""

    kind: Literal["nav", "sum", "min", "max", "items"]
    shape: tuple[int, ...] = ()
    dtype: str = "float64"
    limit_mb: float = 0.0


class Items(dict):
    """An ``"items"`` output: ``{flat_index: array}`` gathered from the batches in scan order until they
    would hold more than the output's ``limit_mb``; ``dropped`` counts the items left out beyond it."""

    def __init__(self, limit_mb: float) -> None:
        super().__init__()
        self.limit, self.nbytes, self.dropped = limit_mb * 2**20, 0, 0

    def merge(self, part: dict[int, np.ndarray]) -> None:
        for index, value in part.items():
            if self.nbytes + value.nbytes <= self.limit:
                self[index] = value
                self.nbytes += value.nbytes
            else:
                self.dropped += 1


class Step:
    """Base of every per-batch step (see the module docstring). Subclasses are dataclasses of plain
    values (model names, device strings, arrays): they travel to Dask workers by pickling."""

    desc: str = "patterns"
    neighbours: bool = False

    def outputs(self, shape: tuple[int, int, int, int]) -> dict[str, Output]:
        """The outputs this step makes for a cube of ``shape`` ``(Rx, Ry, Qx, Qy)``."""
        raise NotImplementedError

    def process(self, start: int, block: np.ndarray) -> dict[str, np.ndarray]:
        """The outputs of the batch of patterns ``start .. start + len(block)`` (flat scan indices)."""
        raise NotImplementedError


class LocalExecutor:
    """Runs the batches in this process, reading ahead in a background thread."""

    def map(self, fn: Callable[[int, np.ndarray], Any], data: Any, *, batch_size: int, progress: bool,
            desc: str, neighbours: bool) -> Iterator[tuple[int, Any]]:
        """``(flat_start, fn(flat_start, block))`` for every batch, in scan order."""
        batches = iter_batches(data, batch_size, progress, desc, neighbours=neighbours)
        for start, block in prefetch(batches):
            yield start, fn(start, block)


@dataclass
class DaskExecutor:
    """Runs the batches on the workers of ``client`` (chunks of scan rows, see :mod:`distributed`)."""

    client: Any

    def map(self, fn: Callable[[int, np.ndarray], Any], data: Any, *, batch_size: int, progress: bool,
            desc: str, neighbours: bool) -> Iterator[tuple[int, Any]]:
        """``(flat_start, fn(flat_start, block))`` for every batch, in scan order."""
        from .distributed import map_chunks

        yield from map_chunks(self.client, fn, data, batch_size, progress, desc, neighbours)


def executor_for(options: Options) -> LocalExecutor | DaskExecutor:
    """The executor ``options`` ask for: Dask when a client is given, else this process."""
    return LocalExecutor() if options.client is None else DaskExecutor(options.client)


def run(step: Step, data: Any, options: Options, *, into: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run ``step`` over ``data (Rx, Ry, Qx, Qy)`` and return its merged outputs by name: ``"nav"`` ones
    ``(Rx, Ry, *shape)``, ``"sum"`` ones ``shape``. ``into`` supplies ready buffers for some ``"nav"``
    outputs (a NumPy array or an ``h5py.Dataset`` of the full shape), which are filled and returned."""
    shape = tuple(int(s) for s in data.shape)
    declared = step.outputs(shape)
    into = into or {}
    unknown = set(into) - set(declared)
    if unknown:
        raise ValueError(f"{type(step).__name__} has no outputs {sorted(unknown)}; it makes {sorted(declared)}")
    buffers: dict[str, Any] = {}
    for name, out in declared.items():
        if name in into:
            buffers[name] = into[name]
        elif out.kind == "nav":
            buffers[name] = np.empty(shape[:2] + tuple(out.shape), dtype=out.dtype)
        elif out.kind == "items":
            buffers[name] = Items(out.limit_mb)
        else:
            initial = {"sum": 0, "min": np.inf, "max": -np.inf}[out.kind]
            buffers[name] = np.full(out.shape, initial, dtype=out.dtype)
    parts = executor_for(options).map(step.process, data, batch_size=options.batch_size,
                                      progress=options.progress, desc=step.desc, neighbours=step.neighbours)
    for start, part in parts:
        if set(part) != set(declared):
            raise RuntimeError(f"{type(step).__name__}.process returned {sorted(part)}, declared {sorted(declared)}")
        for name, value in part.items():
            kind = declared[name].kind
            if kind == "nav":
                write_block(buffers[name], start, np.asarray(value))
            elif kind == "sum":
                buffers[name] += value
            elif kind == "items":
                buffers[name].merge(value)
            else:
                (np.minimum if kind == "min" else np.maximum)(buffers[name], value, out=buffers[name])
    return buffers
