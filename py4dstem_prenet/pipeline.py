"""The chain over a cube of any size, in two streaming passes over the recorded patterns.

1. Centre pass (:func:`center.measure_origins`): every pattern's candidate direct beams, measured by
   a geometric disk fit, and in the same pass the mean pattern with every optical axis moved to the
   detector centre (float64 sum); the scan consensus then chooses among the stored candidates (no
   pattern is read again) and the sum is corrected for the positions it changed.
2. The ellipse is measured on that mean pattern (:func:`ellipse.measure_ellipse`): the only full-cube
   reduction, accumulated on the fly.
3. Transform pass (:func:`transform`): each batch is denoised and resampled once (shift + ellipse
   correction, bicubic, counts conserved) and written to ``out`` (a NumPy array, or an
   ``h5py.Dataset`` so that the result streams to disk).

Only a batch of patterns (and a few chunks when a Dask client spreads the batches over a cluster) is
in memory at a time; the input is read twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from py4DSTEM.process.calibration.origin import fit_origin

from . import geometry
from .center import Origins, measure_origins
from .denoise import denoise_block
from .ellipse import EllipseFit, measure_ellipse
from .runner import map_batches, resolve_device, to_device, write_block
from .weights import LoadedModel, load_model

FITS = (None, "plane", "parabola", "bezier_two", "constant")


def check_fit(fit: str | None) -> None:
    """Refuse an unknown origin-fit name before any pass over the cube is made."""
    if fit not in FITS:
        raise ValueError(f"fit must be one of {FITS}, got {fit!r}")


def _transform_batch(start: int, block: np.ndarray, denoise_model: str | None, qx0: np.ndarray | None,
                     qy0: np.ndarray | None, ratio: float, theta: float, device: str) -> np.ndarray:
    """One batch of the transform pass: denoise (if a model is given; ``block`` then holds each pattern's
    scan neighbours too when the model uses them), then one resampling (if origins are given) that moves
    each optical axis to the detector centre and makes rings circular."""
    dev = resolve_device(device)
    x = to_device(block, dev)
    if denoise_model is not None:
        loaded = load_model("denoise", denoise_model)
        loaded.module.to(dev)
        x = denoise_block(loaded, x)
    if qx0 is not None:
        sl = slice(start, start + len(block))
        f = geometry.distortion_matrix(tuple(block.shape[-2:]), qx0[sl], qy0[sl], ratio, theta)
        x = geometry.warp(x, f, preserve_counts=True)
    return x.cpu().numpy()


def transform(
    data: Any, out: Any = None, denoise_model: str | None = None, qx0: np.ndarray | None = None,
    qy0: np.ndarray | None = None, ratio: float = 1.0, theta: float = 0.0, device: str = "auto",
    batch_size: int = 64, progress: bool = True, client: Any = None,
) -> tuple[Any, LoadedModel | None]:
    """Denoise and/or align every pattern of ``data (Rx, Ry, Qx, Qy)`` into ``out`` (float32 counts).

    ``denoise_model``: a denoise model name/path, or ``None`` to skip denoising. ``qx0, qy0``
    ``(Rx, Ry)`` pixels: move each optical axis to the detector centre and, with ``ratio = a/b > 1``
    at angle ``theta`` (radians), make rings circular, in one bicubic resampling that conserves counts
    (see :mod:`geometry`; values are not clipped, so interpolation next to sharp disks may leave small
    negative values). ``out`` defaults to a new NumPy array; an ``h5py.Dataset`` streams to disk.
    ``client``: a ``dask.distributed.Client`` to spread the batches over. Returns ``out`` and the
    loaded denoise model (``None`` without denoising).
    """
    out = np.empty(data.shape, dtype=np.float32) if out is None else out
    flat = [None if q is None else np.ravel(q).astype(np.float64) for q in (qx0, qy0)]
    fn = partial(_transform_batch, denoise_model=denoise_model, qx0=flat[0], qy0=flat[1], ratio=float(ratio),
                 theta=float(theta), device=str(device))
    desc = "denoise" if qx0 is None else "align" if denoise_model is None else "denoise + align"
    loaded = None if denoise_model is None else load_model("denoise", denoise_model)
    neighbours = bool(loaded is not None and loaded.entry.input.get("neighbours", 0))
    for start, res in map_batches(fn, data, batch_size, progress, desc, client, neighbours):
        write_block(out, start, res)
    return out, loaded


def fit_origins(origins: Origins, fit: str | None, robust: bool) -> tuple[np.ndarray, np.ndarray]:
    """The origins to align with: the measurement, or py4DSTEM's ``fit_origin`` of it (``fit`` one of
    :data:`FITS`; ``robust`` rejects outliers)."""
    check_fit(fit)
    if fit is None:
        return origins.qx0, origins.qy0
    qx, qy, _, _ = fit_origin((origins.qx0, origins.qy0), fitfunction=fit, robust=robust)
    return np.asarray(qx, dtype=np.float64), np.asarray(qy, dtype=np.float64)


@dataclass
class ChainResult:
    """What the chain measured. ``origins``: per-pattern measurement (pixels) and confidence;
    ``qx0, qy0``: the origins the patterns were aligned with (the measurement or its fit);
    ``ellipse``: the distortion; ``mean``: the mean centred pattern it was measured on (counts per
    pattern); ``models``: the loaded models by task (provenance)."""

    origins: Origins
    qx0: np.ndarray
    qy0: np.ndarray
    ellipse: EllipseFit
    mean: np.ndarray
    models: dict[str, LoadedModel]


def run_chain(
    data: Any, out: Any = None, denoise_model: str | None = "default", center_model: str = "default",
    ellipse_model: str = "default", device: str = "auto", batch_size: int = 64, progress: bool = True,
    fit: str | None = None, robust: bool = False, client: Any = None,
) -> tuple[Any, ChainResult]:
    """Denoise, centre and ellipse-correct ``data (Rx, Ry, Qx, Qy)`` into ``out`` (see the module
    docstring; ``denoise_model=None`` skips denoising).

    Centres are measured on the patterns as recorded (the centre network was trained on noisy
    patterns), and the ellipse on the mean of the recorded patterns centred at the measured origins
    (averaging removes the noise; the ellipse network was trained on such means).
    """
    check_fit(fit)
    origins, center_loaded, mean = measure_origins(data, center_model, device, batch_size, progress, mean=True,
                                                   client=client)
    qx0, qy0 = fit_origins(origins, fit, robust)
    ellipse, ellipse_loaded = measure_ellipse(mean, ellipse_model, device)
    out, denoise_loaded = transform(data, out, denoise_model, qx0, qy0, ellipse.ratio, ellipse.theta, device,
                                    batch_size, progress, client)
    models = {"center": center_loaded, "ellipse": ellipse_loaded}
    if denoise_loaded is not None:
        models["denoise"] = denoise_loaded
    return out, ChainResult(origins, qx0, qy0, ellipse, mean, models)
