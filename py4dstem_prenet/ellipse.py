"""Elliptical distortion: a physical fit to the rings of the mean centred pattern, with its error bar.

:func:`measure_ellipse` fits the ring centre, a/b and the a-axis angle jointly to every usable ring of the
mean pattern (:func:`rings.fit_rings`: sector-by-sector radial shifts against the azimuthal average,
Poisson + read-noise weights, automatic masks of the direct beam, beam stops, dead, hot and saturated
pixels), reports the uncertainty of a/b and theta (residual-scaled fit covariance or a bootstrap over
sectors, whichever is larger), and checks the correction on its result: the mean pattern corrected with
the fitted ellipse must show no second harmonic of the ring radius versus azimuth above its noise
(:func:`check_correction`). Where the mean has no ring contrast (a featureless mean, a single-crystal spot
pattern whose distortion cannot be told from strain) the answer is "not measurable" with the reason, and
a/b = 1 (no correction) with a warning.

**Which centre.** py4DSTEM's ``BraggVectors.calibrate()`` (``braggvectors.py``: ``qx -= origin``, then the
ellipse's linear map) and its polar transforms (``polar_datacube._transform_array``: ``x = qx - origin``
then the elliptical radius) both apply ``(a, b, theta)`` as a linear map *about the calibration origin*,
the direct-beam position (``calibration.get_origin``); there is no separate ring centre. An affine
distortion's linear part is the same about any point, so this package fits the ring centre ``(x0, y0)``
as a free parameter (it can sit pixels away from the direct beam on real data), reports it and its offset
from the direct beam, and calibrates and corrects about the direct-beam origin, as py4DSTEM does; the
offset is not applied.

The ResNet regressor (:func:`ellipse_input`, :func:`decode_output`, trainable with ``prenet train
ellipse``) is kept as a proposer of the start; the shipped settings start round (``postprocess.start``),
which converges from any a/b in 1.00-1.12, and the number reported always comes from the fit.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from . import engine, geometry
from .engine import Output, Step
from .normalization import to_network
from .options import Options
from .rings import Harmonic, RingFit, RingSettings, fit_rings, ring_harmonic
from .runner import resolve_device, to_device
from .weights import LoadedModel, get_entry, load_model


@dataclass
class EllipseFit:
    """Measured distortion of a mean centred pattern ``(Qx, Qy)`` (pixels, py4DSTEM axes).

    ``ratio = a/b >= 1`` and ``theta`` (a-axis angle, radians, qx towards qy) are what the correction
    applies (1 and 0 when not measurable); ``ratio_sigma``, ``theta_sigma`` their 1-sigma errors (NaN when
    not measurable; ``theta_sigma`` is pi/sqrt(12) when a/b is too close to 1 for an angle);
    ``measurable`` and ``reason`` (why not); ``x0, y0`` the fitted ring centre in the mean pattern's frame
    and ``center_offset`` = ring centre minus the direct-beam origin (the detector centre of the centred
    mean), pixels; ``residual`` the weighted rms (px) of the ring radii about the fit and ``chi2`` its
    reduced chi-square; ``radii`` the rings used (px); ``harmonic``/``harmonic_sigma`` the residual second
    harmonic of the ring radius (px) on the corrected mean and its sigma, ``check_ok`` whether it is within
    the noise (:func:`check_correction`); ``rings`` the full :class:`rings.RingFit`.
    """

    ratio: float
    theta: float
    ratio_sigma: float = math.nan
    theta_sigma: float = math.nan
    measurable: bool = True
    reason: str = ""
    x0: float = math.nan
    y0: float = math.nan
    center_offset: tuple[float, float] = (math.nan, math.nan)
    residual: float = math.nan
    chi2: float = math.nan
    radii: tuple[float, ...] = ()
    harmonic: float = math.nan
    harmonic_sigma: float = math.nan
    check_ok: bool = False
    rings: RingFit | None = field(default=None, repr=False)


def centred_sum(counts: torch.Tensor, qx0: np.ndarray, qy0: np.ndarray) -> np.ndarray:
    """Sum ``(Qx, Qy)`` (float64) of patterns ``(n, Qx, Qy)`` after moving each optical axis
    ``(qx0, qy0)`` (pixels) to the detector centre (bicubic, see :func:`geometry.warp`)."""
    f = geometry.distortion_matrix(tuple(counts.shape[-2:]), np.asarray(qx0), np.asarray(qy0))
    return geometry.warp(counts, f).sum(0, dtype=torch.float64).cpu().numpy()


@dataclass
class CentredSumStep(Step):
    """Sum of a cube's patterns (float64) after moving each optical axis ``(qx0, qy0)`` (flat over the scan,
    pixels) to the detector centre; without origins the patterns are summed as they are."""

    qx0: np.ndarray | None
    qy0: np.ndarray | None
    device: str
    desc: str = "mean"

    def outputs(self, shape: tuple[int, int, int, int]) -> dict[str, Output]:
        return {"centred_sum": Output("sum", shape[2:])}

    def process(self, start: int, block: np.ndarray) -> dict[str, np.ndarray]:
        x = to_device(block, resolve_device(self.device))
        if self.qx0 is None:
            return {"centred_sum": x.sum(0, dtype=torch.float64).cpu().numpy()}
        sl = slice(start, start + len(block))
        return {"centred_sum": centred_sum(x, self.qx0[sl], self.qy0[sl])}


def mean_centered_pattern(
    data: Any, qx0: np.ndarray | None = None, qy0: np.ndarray | None = None, device: str = "auto",
    batch_size: int = 64, progress: bool = True, client: Any = None,
) -> np.ndarray:
    """Mean pattern ``(Qx, Qy)`` of a cube after moving every optical axis to the detector centre.

    Accumulated batch by batch (float64, :class:`CentredSumStep`), so the cube is never held whole.
    Without origins the patterns are averaged as they are (the cube is taken to be centred already).
    ``client``: a ``dask.distributed.Client`` to spread the batches over (:mod:`engine`).
    """
    flat = (None, None) if qx0 is None else (np.ravel(qx0).astype(np.float64), np.ravel(qy0).astype(np.float64))
    step = CentredSumStep(flat[0], flat[1], str(device))
    res = engine.run(step, data, Options(device=str(device), batch_size=batch_size, progress=progress, client=client))
    return res["centred_sum"] / (data.shape[0] * data.shape[1])


@torch.no_grad()
def ellipse_input(mean_pattern: np.ndarray | torch.Tensor, n_r: int = 64, n_theta: int = 128,
                  r_min: float = 2.0) -> torch.Tensor:
    """Network input ``(1, 1, n_r, n_theta)`` from a centred mean pattern ``(Qx, Qy)``.

    Rows: radii from ``r_min`` to 0.95 x half the detector (pixels), logarithmically spaced; columns:
    angles ``2 pi k / n_theta`` from qx towards qy; values: the normalised square root of the counts,
    sampled bilinearly around the detector centre.
    """
    m = torch.as_tensor(mean_pattern, dtype=torch.float32)
    x, _ = to_network(m.reshape(1, *m.shape[-2:]))
    h, w = m.shape[-2:]
    cx, cy = geometry.detector_center((h, w))
    r = torch.exp(torch.linspace(np.log(r_min), np.log(0.95 * min(h, w) / 2), n_r))[:, None]
    phi = torch.arange(n_theta, dtype=torch.float32)[None] * (2 * np.pi / n_theta)
    qx, qy = cx + r * torch.cos(phi), cy + r * torch.sin(phi)
    grid = torch.stack([qy * (2.0 / (w - 1)) - 1.0, qx * (2.0 / (h - 1)) - 1.0], dim=-1)[None]
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def decode_output(y: torch.Tensor, ratio_scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Network outputs ``(N, 3)`` -> ratio (>= 1), theta (radians), confidence."""
    y = y.detach().cpu().double().numpy()
    theta = geometry.decode_angle(y[:, 0], y[:, 1])
    ratio = 1.0 + np.clip(y[:, 2], 0, None) / ratio_scale
    conf = np.clip(np.hypot(y[:, 0], y[:, 1]), 0, 1)
    return ratio, theta, conf


def ring_settings(model: str = "default") -> RingSettings:
    """The ring-fit settings of an ellipse manifest entry (``postprocess.ring_fit``, chosen by
    ``benchmarks/ellipse_eval.py --tune``); a weights file or an entry without them gets the default
    entry's."""
    post = load_model("ellipse", model).entry.postprocess or get_entry("ellipse", "default").postprocess
    return RingSettings.from_dict(post.get("ring_fit"))


def check_correction(mean_pattern: np.ndarray, ratio: float, theta: float, x0: float, y0: float,
                     settings: RingSettings, mask: np.ndarray | None = None) -> tuple[np.ndarray, Harmonic]:
    """The mean pattern corrected with ``(ratio, theta)`` about the detector centre (as the chain corrects
    every pattern) and the residual second harmonic of its ring radius versus azimuth, measured about
    the ring centre ``(x0, y0)`` carried through the same correction."""
    f = geometry.distortion_matrix(mean_pattern.shape, ratio=ratio, theta=theta)
    m = torch.from_numpy(np.asarray(mean_pattern, dtype=np.float64))[None]
    corrected = geometry.warp(m, f, preserve_counts=True)[0].numpy()
    cx, cy = geometry.detector_center(mean_pattern.shape)
    ux, uy = geometry.correct_points(np.array([x0]), np.array([y0]), cx, cy, ratio, theta)
    if mask is not None:  # masked pixels follow the correction (nearest valid after resampling)
        w = geometry.warp(torch.from_numpy(np.asarray(mask, np.float64))[None], f)[0].numpy()
        mask = w > 0.99
    return corrected, ring_harmonic(corrected, x0=cx + ux[0], y0=cy + uy[0], mask=mask, settings=settings)


def measure_ellipse(mean_pattern: np.ndarray, model: str = "default", device: str = "auto", *,
                    mask: np.ndarray | None = None, settings: RingSettings | None = None,
                    seed: int = 0) -> tuple[EllipseFit, LoadedModel]:
    """Axis ratio, angle and ring centre, with errors, from a centred mean pattern ``(Qx, Qy)`` (counts).

    ``model``: the ellipse manifest entry whose ``postprocess`` settings the fit uses (a ``.safetensors``
    path uses the default entry's settings); returned for provenance. ``device``: where the network runs
    when the settings start from its proposal. ``mask``: pixels to use (True), added to the automatic
    masks. ``settings``: override the manifest's :class:`rings.RingSettings`. Warns when the ellipse is not
    measurable (a/b = 1 is returned: no correction) or when the corrected mean still shows a second
    harmonic above its noise.
    """
    if np.ndim(mean_pattern) != 2:
        raise ValueError(f"mean pattern must be 2D (Qx, Qy), got shape {np.shape(mean_pattern)}")
    loaded = load_model("ellipse", model)
    post = loaded.entry.postprocess
    s = settings or ring_settings(model)
    ratio0, theta0 = 1.0, 0.0
    if post.get("start", "round") == "network":
        dev = resolve_device(device)
        loaded = load_model("ellipse", model, device=dev)
        inp = loaded.entry.input
        with torch.inference_mode():
            y = loaded.module(ellipse_input(mean_pattern, int(inp["n_r"]), int(inp["n_theta"])).to(dev))
        r, t, _ = decode_output(y, float(inp.get("ratio_scale", 10.0)))
        ratio0, theta0 = float(r[0]), float(t[0])
    fit = fit_rings(mean_pattern, ratio=ratio0, theta=theta0, mask=mask, settings=s, seed=seed)
    cx, cy = geometry.detector_center(np.shape(mean_pattern))
    out = EllipseFit(fit.ratio, fit.theta, fit.ratio_sigma, fit.theta_sigma, fit.measurable, fit.reason, fit.x0,
                     fit.y0, (fit.x0 - cx, fit.y0 - cy), fit.residual, fit.chi2,
                     tuple(float(r) for r in fit.radii), rings=fit)
    if not fit.measurable:
        warnings.warn(f"ellipse not measurable: {fit.reason}; the patterns are not ellipse-corrected (a/b = 1)",
                      stacklevel=2)
        return out, loaded
    _, harm = check_correction(mean_pattern, fit.ratio, fit.theta, fit.x0, fit.y0, s, fit.mask)
    out.harmonic, out.harmonic_sigma, out.check_ok = harm.amplitude, harm.sigma, harm.ok
    if harm.measurable and not harm.ok:
        warnings.warn(f"the corrected mean pattern still shows a second harmonic of the ring radius of "
                      f"{harm.amplitude:.3f} +- {harm.sigma:.3f} px (a/b {harm.ratio:.4f}): the ellipse correction "
                      "is incomplete; look at the report", stacklevel=2)
    return out, loaded
