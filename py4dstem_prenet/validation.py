"""Checks at the boundary: every public entry point validates its data here, with errors that say
what is wrong, where, and what to do."""

from __future__ import annotations

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
