"""The survey: one cheap pass over a cube, before any expensive one, that checks every pattern and
finds what the detector adds to the data (hot and dead pixels, a pedestal).

:func:`survey_cube` reads the cube batch by batch (an :mod:`engine` step; the batches refuse NaN/inf,
constant and mostly negative patterns with their scan positions) and accumulates per-pixel statistics
across the scan: the sum, the sum of squares, the minimum, the maximum and the number of frames in
which the pixel reads exactly zero. From these, per cube:

* **pedestal**: a constant offset common to all pixels (a dark level that was never subtracted).
  Counting detectors read exactly zero in most background pixels of most frames, and read noise
  around a zero level goes below zero, so a positive minimum across the scan shared by the darkest
  pixels (the 1st percentile over the detector) reveals an offset; its value is that minimum when the
  darkest pixels share it exactly (counts), else the level they sit at (the median scan-mean of the
  darkest 5 %, read noise averaged out, their own faint signal included). Data whose
  darkest pixels never record zero (very high dose everywhere) would be mistaken for a pedestal: pass
  ``pedestal=0`` then.
* **hot pixels**: the scan-mean (pedestal removed) exceeds the median of its 5 x 5 neighbourhood by
  more than ``sigma`` times the larger of its standard error (the pixel's and its neighbours' scan
  variance over the number of patterns) and the neighbourhood's own robust scatter (which also
  guards a scan too short to estimate the noise from, down to a single pattern) *and* is more than
  ``ratio`` times its second-brightest of 8 neighbours. A diffraction feature spans several pixels, so
  its brightest pixel is never that isolated unless it is narrower than about 1.6 px FWHM; one hot
  pixel or a pair of adjacent ones is found, a bigger cluster is not. For integer data the noise is
  never taken below one count per pattern (a single count is an event, not a hot pixel).
* **dead pixels**: the mirror image (far below the neighbourhood and below ``1 / ratio`` of the
  second-darkest neighbour), or zero in every frame while the second-darkest of its 8 neighbours is
  non-zero so often that a run of zeros that long has a chance below 1e-6 (the neighbours' rate of
  zeros estimated by Laplace's rule of succession or, for integer counts, as Poisson from its mean).
  The inside of a beam stop or the detector's dark corners are not dead pixels: their neighbours are
  dark too.

Both tests compare the data with itself, so a positive scale of the intensities (counts, electrons,
normalised patterns) finds the same pixels. :func:`clean_patterns` then gives patterns with the masked
pixels replaced by the median of their unmasked neighbours and the pedestal subtracted (a new array; the
input is never modified). Units: the input's intensity units throughout; positions ``(qx, qy)`` pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from emdfile import Metadata

from . import engine
from ._version import __version__
from .engine import Output, Step
from .options import Options
from .validation import check_cube_shape, check_options

#: Standard errors by which a hot/dead pixel's scan-mean must differ from its neighbourhood.
HOT_SIGMA = 10.0
#: How many times brighter (darker) than its second-brightest (second-darkest) neighbour a hot (dead)
#: pixel's scan-mean must be.
HOT_RATIO = 3.0
#: Chance below which a pixel reading zero in every frame is called dead (given its neighbours): a
#: 256 x 256 detector of Poisson counts then holds 0.07 false dead pixels on average.
DEAD_CHANCE = 1e-6


@dataclass(frozen=True)
class Survey:
    """Per-pixel statistics across the scan of a cube and what they reveal (see the module docstring).

    ``mean``, ``std``, ``minimum``, ``maximum``: ``(Qx, Qy)`` float64 in the input's units;
    ``zero_fraction``: the fraction of frames in which each pixel reads exactly 0; ``mask_hot``,
    ``mask_dead``: ``(Qx, Qy)`` bool; ``pedestal``: the constant offset (input units, 0 when none);
    ``n_patterns``: patterns surveyed.
    """

    n_patterns: int
    mean: np.ndarray
    std: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray
    zero_fraction: np.ndarray
    mask_hot: np.ndarray
    mask_dead: np.ndarray
    pedestal: float
    _repair: list[tuple[int, np.ndarray]] = field(default_factory=list, repr=False, compare=False)

    @property
    def mask(self) -> np.ndarray:
        """Hot or dead: the pixels :func:`clean_patterns` replaces, ``(Qx, Qy)`` bool."""
        return self.mask_hot | self.mask_dead

    @property
    def hot_pixels(self) -> np.ndarray:
        """``(k, 2)`` int ``(qx, qy)`` of the hot pixels."""
        return np.argwhere(self.mask_hot)

    @property
    def dead_pixels(self) -> np.ndarray:
        """``(k, 2)`` int ``(qx, qy)`` of the dead pixels."""
        return np.argwhere(self.mask_dead)

    def metadata(self) -> Metadata:
        """Metadata ``prenet_survey`` for an EMD tree: the pixel lists, the pedestal and how they were found."""
        return Metadata(name="prenet_survey", data={
            "n_patterns": int(self.n_patterns), "pedestal": float(self.pedestal),
            "n_hot": int(self.mask_hot.sum()), "n_dead": int(self.mask_dead.sum()),
            "hot_pixels": self.hot_pixels.astype(np.int64), "dead_pixels": self.dead_pixels.astype(np.int64),
            "units": "pixel positions (qx, qy); pedestal in the input's intensity units",
            "method": f"scan statistics: {HOT_SIGMA:g} x the noise from the 5 x 5 median and x{HOT_RATIO:g} the "
                      f"second-brightest (darkest) neighbour, or zero in every frame (chance < {DEAD_CHANCE:g})",
            "package": "py4dstem_prenet", "version": __version__})


def _neighbours(a: np.ndarray, radius: int) -> np.ndarray:
    """``(Qx, Qy, (2r+1)^2 - 1)``: every pixel's neighbours within a ``(2r+1)`` square, the pixel itself
    left out; mirrored at the detector's edge."""
    k = 2 * radius + 1
    win = np.lib.stride_tricks.sliding_window_view(np.pad(a, radius, mode="reflect"), (k, k))
    flat = win.reshape(*a.shape, k * k)
    return np.delete(flat, (k * k) // 2, axis=-1)


def estimate_pedestal(minimum: np.ndarray, mean: np.ndarray) -> float:
    """The pedestal from each pixel's minimum and mean across the scan ``(Qx, Qy)`` (see the module
    docstring): 0 unless the darkest pixels' minimum (the 1st percentile over the detector) is positive;
    then that minimum when at least 1 % of the pixels share it exactly (counting data without read
    noise), else the median scan-mean of the darkest 5 % of pixels (by their minimum), the level they
    sit at once read noise is averaged out (this includes their own signal, e.g. 0.008 counts per pixel
    in the example cube)."""
    lowest = float(np.percentile(minimum, 1))
    if lowest <= 0:
        return 0.0
    if np.mean(minimum == lowest) >= 0.01:  # counts: the darkest pixels read exactly the offset
        return lowest
    return float(np.median(mean[minimum <= np.percentile(minimum, 5)]))


def find_bad_pixels(mean: np.ndarray, var: np.ndarray, zero_fraction: np.ndarray, n_patterns: int,
                    pedestal: float = 0.0, sigma: float = HOT_SIGMA, ratio: float = HOT_RATIO,
                    quantum: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """``(mask_hot, mask_dead)`` from the scan-mean, scan variance and zero fraction of every pixel
    ``(Qx, Qy)`` over ``n_patterns`` patterns (see the module docstring). ``quantum``: the step of the
    values (1 for integer counts, 0 when unknown); the noise of a scan-mean is never taken below
    ``quantum / sqrt(n_patterns)`` (one count in a pattern is an event, not a hot pixel)."""
    m = np.asarray(mean, dtype=np.float64) - pedestal
    se2 = np.asarray(var, dtype=np.float64) / n_patterns
    near = _neighbours(m, 2)
    med = np.median(near, axis=-1)
    noise = np.sqrt(se2 + np.median(_neighbours(se2, 2), axis=-1))
    spread = 1.4826 * np.median(np.abs(near - med[..., None]), axis=-1)  # the neighbourhood's own scatter
    noise = np.maximum(noise, np.maximum(spread, quantum / np.sqrt(n_patterns)))
    noise = np.maximum(noise, 1e-9 * max(float(np.abs(m).max()), np.finfo(np.float64).tiny))
    ring = np.sort(_neighbours(m, 1), axis=-1)
    hot = (m - med > sigma * noise) & (m > ratio * np.maximum(ring[..., -2], 0))
    dead = (med - m > sigma * noise) & (ratio * m < ring[..., 1]) & (ring[..., 1] > 0)
    nonzero_near = np.sort(_neighbours(1.0 - np.asarray(zero_fraction, np.float64), 1), axis=-1)[..., 1]
    zero_rate = ((1.0 - nonzero_near) * n_patterns + 1) / (n_patterns + 2)  # rule of succession: never 0
    chance = n_patterns * np.log(zero_rate)  # ln P(zero in every frame | the neighbours' rate)
    if quantum:  # counts: Poisson, P(zero in every frame) = exp(-n * the second-darkest neighbour's mean)
        chance = np.minimum(chance, -n_patterns * np.maximum(ring[..., 1], 0.0) / quantum)
    dead |= (np.asarray(zero_fraction) >= 1.0) & (chance < np.log(DEAD_CHANCE))
    return hot & ~dead, dead


def _repair_plan(mask: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """For every masked pixel, its flat index and the flat indices of the unmasked pixels it is replaced
    from: those within 1 pixel (3 x 3), else within 2, 3, ... pixels."""
    qx, qy = mask.shape
    plan = []
    for x, y in np.argwhere(mask):
        for r in range(1, max(qx, qy)):
            rows, cols = np.mgrid[max(0, x - r):min(qx, x + r + 1), max(0, y - r):min(qy, y + r + 1)]
            good = ~mask[rows, cols]
            if good.any():
                plan.append((int(x * qy + y), (rows[good] * qy + cols[good]).astype(np.int64)))
                break
    return plan


@dataclass
class SurveyStep(Step):
    """The survey pass (:mod:`engine` step): per-pixel sum, sum of squares, minimum, maximum and number of
    exact zeros over the scan (float64), and the number of non-integer values (integer data or not)."""

    desc: str = "survey"

    def outputs(self, shape: tuple[int, int, int, int]) -> dict[str, Output]:
        sig = shape[2:]
        return {"sum": Output("sum", sig), "sumsq": Output("sum", sig), "minimum": Output("min", sig),
                "maximum": Output("max", sig), "zeros": Output("sum", sig), "fractional": Output("sum")}

    def process(self, start: int, block: np.ndarray) -> dict[str, np.ndarray]:
        b = block.astype(np.float64)
        return {"sum": b.sum(0), "sumsq": (b * b).sum(0), "minimum": b.min(0), "maximum": b.max(0),
                "zeros": (block == 0).sum(0).astype(np.float64),
                "fractional": np.float64(np.count_nonzero(block != np.round(block)))}


def survey_cube(data: Any, *, batch_size: int = 64, progress: bool = True, pedestal: float | None = None,
                sigma: float = HOT_SIGMA, ratio: float = HOT_RATIO, client: Any = None) -> Survey:
    """Survey ``data (Rx, Ry, Qx, Qy)`` (an array, an ``h5py.Dataset``: anything the engine reads) in one
    cheap pass (:class:`SurveyStep`; on ``client``'s Dask workers when given): every pattern is checked
    (an :class:`InputError` names the first bad scan positions, before any expensive pass has run) and
    the per-pixel statistics, hot and dead pixels and the pedestal are returned as a :class:`Survey`.
    ``pedestal``: give it (input units) instead of estimating it; ``sigma`` and ``ratio``: the detection
    thresholds (module docstring)."""
    res = engine.run(SurveyStep(), data, Options(device="cpu", batch_size=batch_size, progress=progress,
                                                 client=client))
    n = int(data.shape[0]) * int(data.shape[1])
    mean = res["sum"] / n
    var = np.maximum(res["sumsq"] / n - mean * mean, 0.0)
    zero_fraction = res["zeros"] / n
    lo, hi = res["minimum"], res["maximum"]
    integral = float(res["fractional"]) == 0
    ped = estimate_pedestal(lo, mean) if pedestal is None else float(pedestal)
    hot, dead = find_bad_pixels(mean, var, zero_fraction, n, ped, sigma, ratio, 1.0 if integral else 0.0)
    return Survey(n, mean, np.sqrt(var), lo, hi, zero_fraction, hot, dead, ped, _repair_plan(hot | dead))


def clean_patterns(block: np.ndarray, survey: Survey) -> np.ndarray:
    """Patterns ``(..., Qx, Qy)`` with every hot/dead pixel of ``survey`` replaced by the median of its
    unmasked neighbours in the same pattern and the pedestal subtracted: a new float32 array (the input
    is never modified)."""
    shape = block.shape
    flat = np.array(block, dtype=np.float32, copy=True).reshape(-1, shape[-2] * shape[-1])
    for index, sources in survey._repair:
        flat[:, index] = np.median(flat[:, sources], axis=1)
    if survey.pedestal:
        flat -= np.float32(survey.pedestal)
    return flat.reshape(shape)


class CleanedCube:
    """A cube ``(Rx, Ry, Qx, Qy)`` read through :func:`clean_patterns`: slicing scan rows
    (``cube[r0:r1]``, all the engine asks of its data) returns float32 patterns with the survey's hot and
    dead pixels repaired and its pedestal subtracted, so every stage sees the same clean data. The
    wrapped cube is never modified."""

    def __init__(self, data: Any, survey: Survey) -> None:
        self.data, self.survey = data, survey
        self.shape, self.dtype = tuple(int(s) for s in data.shape), np.dtype(np.float32)

    def __getitem__(self, rows: Any) -> np.ndarray:
        return clean_patterns(np.asarray(self.data[rows]), self.survey)


def cleaned(data: Any, survey: Survey) -> Any:
    """``data`` as every stage should read it: a :class:`CleanedCube` when the survey found hot/dead pixels
    or a pedestal, else ``data`` itself."""
    return CleanedCube(data, survey) if survey.mask.any() or survey.pedestal else data


def preflight(data: Any, *, batch_size: Any = 64, device: Any = "auto", fit: str | None = None,
              robust: bool = False, models: dict[str, Any] | None = None, progress: bool = True,
              client: Any = None) -> Survey:
    """What every public entry point does before its first expensive pass: check the options
    (:func:`validation.check_options`: batch size, device, fit for this scan, a model for every stage)
    and survey the cube (:func:`survey_cube`: every pattern's values checked, hot/dead pixels and
    pedestal found). Raises :class:`~validation.InputError` naming the first problem."""
    check_cube_shape(tuple(data.shape), data.dtype)
    batch_size, _ = check_options(scan_shape=tuple(data.shape), batch_size=batch_size, device=device, fit=fit,
                                  robust=robust, models=models)
    return survey_cube(data, batch_size=batch_size, progress=progress, client=client)
