"""The chain over a cube of any size, in streaming passes over the recorded patterns (each an
:mod:`engine` step).

0. Survey pass (:func:`survey.preflight`, cheap): every pattern checked, hot/dead pixels and a pedestal
   found; every later pass reads the patterns with those repaired (:func:`survey.cleaned`).
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
in memory at a time; the input is read three times (plus the denoiser's self-check sample of at most
256 patterns).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from py4DSTEM.process.calibration.origin import fit_origin

from . import engine, geometry
from .center import Origins, measure_origins
from .denoise import DenoisePlan, apply_plan, plan_denoise
from .ellipse import EllipseFit, measure_ellipse
from .engine import Output, Step
from .options import Options
from .runner import resolve_device, to_device
from .survey import Survey, cleaned, preflight
from .validation import FITS, check_fit, check_origins  # noqa: F401  (FITS, check_fit: used from here)
from .weights import LoadedModel


@dataclass
class TransformStep(Step):
    """The transform pass (:mod:`engine` step): each batch denoised as the self-check's ``plan`` says (if
    given; the block then holds each pattern's scan neighbours too when the plan uses them), then
    resampled once (if origins are given, flat over the scan, pixels) so that each optical axis moves to
    the detector centre and rings become circular. Output ``data``: float32, the input's units."""

    plan: DenoisePlan | None
    qx0: np.ndarray | None
    qy0: np.ndarray | None
    ratio: float
    theta: float
    device: str
    neighbours: bool = False
    desc: str = "transform"

    def outputs(self, shape: tuple[int, int, int, int]) -> dict[str, Output]:
        return {"data": Output("nav", shape[2:], "float32")}

    def process(self, start: int, block: np.ndarray) -> dict[str, np.ndarray]:
        dev = resolve_device(self.device)
        x = to_device(block, dev)
        if self.plan is not None:
            x = apply_plan(self.plan, x)
        if self.qx0 is not None:
            sl = slice(start, start + len(block))
            f = geometry.distortion_matrix(tuple(block.shape[-2:]), self.qx0[sl], self.qy0[sl], self.ratio, self.theta)
            x = geometry.warp(x, f, preserve_counts=True, clamp=True)
        return {"data": x.cpu().numpy()}


def transform(
    data: Any, out: Any = None, denoise_model: str | DenoisePlan | None = None, qx0: np.ndarray | None = None,
    qy0: np.ndarray | None = None, ratio: float = 1.0, theta: float = 0.0, device: str = "auto",
    batch_size: int = 64, progress: bool = True, client: Any = None,
) -> tuple[Any, DenoisePlan | None]:
    """Denoise and/or align every pattern of ``data (Rx, Ry, Qx, Qy)`` into ``out`` (float32 counts).

    ``denoise_model``: a denoise model name/path (the self-check, :func:`denoise.plan_denoise`, first
    decides on a sample of the batches how to denoise), a ready :class:`denoise.DenoisePlan`, or ``None``
    to skip denoising; the denoised values are in the input's units. ``qx0, qy0``
    ``(Rx, Ry)`` pixels: move each optical axis to the detector centre and, with ``ratio = a/b > 1``
    at angle ``theta`` (radians), make rings circular, in one bicubic resampling without ringing that
    conserves counts (:func:`geometry.warp` with ``clamp``: non-negative input stays non-negative, each
    pattern's total is that of the exact resampling). ``out`` defaults to a new NumPy array; an
    ``h5py.Dataset`` streams to disk.
    ``client``: a ``dask.distributed.Client`` to spread the batches over. Returns ``out`` and the
    denoise plan (``None`` without denoising).
    """
    if qx0 is not None:
        check_origins(qx0, qy0)
    plan = denoise_model
    if isinstance(denoise_model, str):
        plan = plan_denoise(data, model=denoise_model, device=device, batch_size=batch_size)
    flat = [None if q is None else np.ravel(q).astype(np.float64) for q in (qx0, qy0)]
    neighbours = bool(plan is not None and plan.needs_neighbours)
    desc = "denoise" if qx0 is None else "align" if plan is None else "denoise + align"
    step = TransformStep(plan, flat[0], flat[1], float(ratio), float(theta), str(device), neighbours, desc)
    opts = Options(device=str(device), batch_size=batch_size, progress=progress, client=client)
    into = {} if out is None else {"data": out}
    return engine.run(step, data, opts, into=into)["data"], plan


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
    pattern); ``models``: the loaded models by task (provenance); ``survey``: the pre-pass over the
    input (:mod:`survey`: hot/dead pixels, pedestal); ``denoise``: the self-check's plan."""

    origins: Origins
    qx0: np.ndarray
    qy0: np.ndarray
    ellipse: EllipseFit
    mean: np.ndarray
    models: dict[str, LoadedModel]
    survey: Survey | None = None
    denoise: DenoisePlan | None = None


def run_chain(
    data: Any, *, out: Any = None, denoise_model: str | None = "default", center_model: str = "default",
    ellipse_model: str = "default", fit: str | None = None, robust: bool = False, device: str = "auto",
    batch_size: int = 64, progress: bool = True, client: Any = None,
) -> tuple[Any, ChainResult]:
    """Denoise, centre and ellipse-correct ``data (Rx, Ry, Qx, Qy)`` into ``out`` (see the module
    docstring; ``denoise_model=None`` skips denoising).

    First the survey (:func:`survey.preflight`: options and every pattern checked, hot/dead pixels and a
    pedestal found); every stage then reads the patterns with those repaired (:func:`survey.cleaned`).
    Centres are measured on the patterns as recorded (not denoised), and the ellipse on the mean of the
    patterns centred at the measured origins (the ring fit of :func:`ellipse.measure_ellipse` measures
    a/b, angle and ring centre with their errors there; where it is not measurable the patterns are only
    centred, a/b = 1).
    """
    stages = {"center": center_model, "ellipse": ellipse_model}
    survey = preflight(data, batch_size=batch_size, device=device, fit=fit, robust=robust, progress=progress,
                       client=client, models=stages if denoise_model is None else {**stages, "denoise": denoise_model})
    source, good = cleaned(data, survey), ~survey.mask
    origins, center_loaded, mean = measure_origins(source, center_model, device, batch_size, progress, mean=True,
                                                   client=client, mask=good)
    qx0, qy0 = fit_origins(origins, fit, robust)
    check_origins(qx0, qy0)
    ellipse, ellipse_loaded = measure_ellipse(mean, ellipse_model, device, mask=good)
    out, plan = transform(source, out, denoise_model, qx0, qy0, ellipse.ratio, ellipse.theta, device,
                          batch_size, progress, client)
    models = {"center": center_loaded, "ellipse": ellipse_loaded}
    if plan is not None:
        models["denoise"] = plan.loaded
    return out, ChainResult(origins, qx0, qy0, ellipse, mean, models, survey, plan)
