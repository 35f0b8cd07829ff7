"""Checks at the boundary: every public entry point validates its data here, with errors that say
what is wrong, where, and what to do."""

from __future__ import annotations

import numbers
import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

MIN_DETECTOR = 32  # pixels per side: the networks down-sample 4 times and need a few pixels left


class InputError(ValueError):
    """The data cannot be processed as given; the message says why and what to do."""


def check_cube_shape(shape: tuple[int, ...], dtype: np.dtype) -> None:
    """Rank, size and dtype of a 4D-STEM cube ``(Rx, Ry, Qx, Qy)``."""
    if len(shape) != 4:
        raise InputError(
            f"expected a 4D cube (Rx, Ry, Qx, Qy), got {len(shape)} dimensions {tuple(shape)}; "
            "a single pattern or a line scan must be reshaped to (1, N, Qx, Qy)"
        )
    if min(shape) == 0:
        raise InputError(f"the cube is empty (shape {tuple(shape)})")
    dt = np.dtype(dtype)
    if dt.kind not in "uif":
        raise InputError(f"patterns must be integer or floating-point counts, got dtype {dt}; convert with .astype")
    if min(shape[2:]) < MIN_DETECTOR:
        raise InputError(f"detector {shape[2]}x{shape[3]} is smaller than the {MIN_DETECTOR}x{MIN_DETECTOR} "
                         "pixels the networks need; do not bin the data this far")


def check_patterns(block: np.ndarray, first_index: int, scan_shape: tuple[int, int]) -> None:
    """Values of a block of patterns ``(n, Qx, Qy)`` whose first one is flat scan index ``first_index``.

    Rejects NaN/inf (with the count and the first scan positions), and patterns that are constant
    (empty) or mostly negative: summing to less than -3 standard errors of a zero-mean pattern, i.e.
    negative beyond what read noise can explain (a wrong sign or dark level). Small negative values, as in
    dark-subtracted data from integrating detectors or read noise at low dose, are accepted: the networks
    clip them to zero.
    """
    if block.dtype.kind == "f":
        bad = ~np.isfinite(block)
        if bad.any():
            per = bad.reshape(len(block), -1).sum(1)
            where = [np.unravel_index(first_index + i, scan_shape) for i in np.flatnonzero(per)[:5]]
            raise InputError(
                f"{int(bad.sum())} NaN/inf values in {int((per > 0).sum())} pattern(s), first at scan "
                f"position(s) (rx, ry) {[tuple(int(v) for v in w) for w in where]}; replace them "
                "(e.g. np.nan_to_num) or crop them out"
            )
    flat = block.reshape(len(block), -1).astype(np.float64, copy=False)
    hi, lo = flat.max(1), flat.min(1)
    negative = flat.sum(1) < -3 * flat.std(1) * np.sqrt(flat.shape[1])
    for mask, what in ((hi == lo, "constant (empty or blanked beam)"),
                       (negative & (hi != lo), "mostly negative (negative beyond what noise explains)")):
        if mask.any():
            where = [np.unravel_index(first_index + i, scan_shape) for i in np.flatnonzero(mask)[:5]]
            raise InputError(
                f"{int(mask.sum())} pattern(s) are {what}, first at scan position(s) (rx, ry) "
                f"{[tuple(int(v) for v in w) for w in where]}; they hold no beam to process: check the "
                "dark reference / crop the scan"
            )


# --- options: checked once, before any pass over the data ------------------------------------------------

#: Origin fits (py4DSTEM's ``fit_origin``); ``None`` aligns with the raw measurement.
FITS = (None, "plane", "parabola", "bezier_two", "constant")
#: Free parameters of each fit per coordinate, and the fewest distinct scan rows / columns that
#: determine them (a plane needs 2 of each, a parabola or a quadratic Bezier surface 3 of each).
_FIT_PARAMETERS = {"plane": (3, 2), "parabola": (6, 3), "bezier_two": (9, 3), "constant": (1, 1)}
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def check_batch_size(batch_size: Any) -> int:
    """``batch_size`` as an int: a positive integer (not a bool, float or string)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer (patterns per network call), got {batch_size!r}")
    return int(batch_size)


def check_device(device: Any) -> str:
    """The device name, one of ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (or a ``torch.device`` of
    those), checked against the GPUs PyTorch sees: CUDA without a GPU, or a GPU index beyond the ones
    present, is refused."""
    import torch

    name = str(device)
    if not _DEVICE.match(name):
        raise InputError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N' (N a GPU index), got {device!r}")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"device={name!r} was asked for but PyTorch sees no CUDA GPU (a CPU-only build of "
                             "torch, or no driver); use device='cpu' or 'auto'")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise InputError(f"device={name!r}: PyTorch sees only {torch.cuda.device_count()} GPU(s) "
                             f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
    return name


def check_fit(fit: str | None, scan_shape: tuple[int, int] | None = None, robust: bool = False) -> None:
    """Refuse an unknown origin-fit name, or a fit the scan is too small for, before any pass.

    A fit of ``p`` parameters per coordinate needs at least ``p`` scan positions over enough distinct
    rows and columns (plane: 2 x 2, parabola and bezier_two: 3 x 3); with ``robust`` (which rejects
    outliers and fits again) at least ``2 p`` positions, so that the refit is still determined.
    """
    if fit not in FITS:
        raise InputError(f"fit must be one of {FITS}, got {fit!r}")
    if fit is None or scan_shape is None:
        return
    params, side = _FIT_PARAMETERS[fit]
    rx, ry = (int(s) for s in scan_shape)
    need = 2 * params if robust and fit != "constant" else params  # a constant's robust fit is its mean
    if min(rx, ry) < side or rx * ry < need:
        raise InputError(
            f"fit={fit!r}{' with robust=True' if robust else ''} needs a scan of at least {side} x {side} "
            f"positions and {need} in all ({params} parameters per coordinate); this scan is {rx} x {ry}: "
            "use fit='constant', a simpler fit, or fit=None"
        )


def check_model(task: str, model: Any) -> None:
    """A model must be named for every stage that runs: a manifest name, ``"default"`` or a path."""
    if model is None or not isinstance(model, str | os.PathLike) or not str(model):
        raise InputError(f"no {task} model given ({model!r}): pass a manifest name, 'default' or the path of a "
                         f".safetensors file (prenet train {task})")


def check_options(*, scan_shape: tuple[int, ...] | None = None, batch_size: Any = 64, device: Any = "auto",
                  fit: str | None = None, robust: bool = False,
                  models: Mapping[str, Any] | None = None) -> tuple[int, str]:
    """The one check of the options every public entry point takes (DataCube methods, ``run_chain``,
    ``run_file``, the CLI), before any pass over the data: ``batch_size`` a positive integer, ``device``
    a valid name, ``fit`` known and feasible for ``scan_shape`` (``(Rx, Ry)`` or the cube's shape),
    ``models`` ({task: model}) given for every stage that runs. Returns ``(batch_size, device)``."""
    batch_size = check_batch_size(batch_size)
    device = check_device(device)
    check_fit(fit, None if scan_shape is None else tuple(scan_shape)[:2], robust)
    for task, model in (models or {}).items():
        check_model(task, model)
    return batch_size, device


def check_origins(qx0: np.ndarray, qy0: np.ndarray) -> None:
    """Origins ``(Rx, Ry)`` (pixels) must be finite before they are used to resample; positions far off the
    detector are allowed (a beam can sit outside it) but NaN/inf cannot be aligned."""
    for name, q in (("qx0", qx0), ("qy0", qy0)):
        bad = ~np.isfinite(np.asarray(q, dtype=np.float64))
        if bad.any():
            where = [tuple(int(v) for v in w) for w in np.argwhere(bad)[:5]]
            raise InputError(f"the origin {name} is NaN/inf at {int(bad.sum())} scan position(s), first {where}: "
                             "measure it again (prenet_center) or set finite values with "
                             "calibration.set_origin((qx0, qy0))")
