"""The classical baselines, run as a py4DSTEM user would run them.

Centre: plain centre of mass, py4DSTEM ``get_origin`` (brightest blurred disk + CoM inside it) and
``get_origin_friedel`` (Friedel-symmetry cross-correlation). Ellipse: py4DSTEM ``fit_ellipse_1D`` and
``fit_ellipse_amorphous_ring`` with a fit window chosen automatically from the radial profile.
Denoising: a Gaussian filter and a low-rank (SVD) reconstruction, each with the best parameter chosen
with knowledge of the truth (oracles: an upper bound on what a user could tune by hand).
"""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import py4DSTEM
from py4DSTEM.process.calibration.ellipse import fit_ellipse_1D, fit_ellipse_amorphous_ring
from py4DSTEM.process.calibration.origin import get_origin, get_origin_friedel
from scipy.ndimage import gaussian_filter

from .. import geometry


def center_of_mass(patterns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Plain intensity centre of mass of each pattern ``(N, Qx, Qy)``, pixels."""
    p = np.clip(patterns.astype(np.float64), 0, None)
    total = p.sum(axis=(1, 2))
    qx = (p.sum(2) * np.arange(p.shape[1])).sum(1) / total
    qy = (p.sum(1) * np.arange(p.shape[2])).sum(1) / total
    return qx, qy


def _as_cube(patterns: np.ndarray) -> py4DSTEM.DataCube:
    return py4DSTEM.DataCube(data=np.asarray(patterns, dtype=np.float32)[None])


def py4dstem_get_origin(patterns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """py4DSTEM ``get_origin`` run on each pattern as its own one-pattern cube, so its probe-radius
    estimate (from the maximum pattern, its default) sees only that pattern: the evaluation mixes
    structures and optics that no real scan would."""
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):  # one progress bar per call
        warnings.simplefilter("ignore")
        found = [get_origin(_as_cube(p[None]))[:2] for p in patterns]
    return np.array([float(np.ravel(q[0])[0]) for q in found]), np.array([float(np.ravel(q[1])[0]) for q in found])


def py4dstem_get_origin_friedel(patterns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """py4DSTEM ``get_origin_friedel`` (cross-correlation of each pattern with its inversion)."""
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        qx, qy = get_origin_friedel(_as_cube(patterns))
    return np.asarray(qx)[0], np.asarray(qy)[0]


CENTER_METHODS = {"com": center_of_mass, "get_origin": py4dstem_get_origin,
                  "get_origin_friedel": py4dstem_get_origin_friedel}


def radial_profile(pattern: np.ndarray, center: tuple[float, float]) -> np.ndarray:
    """Mean intensity in 1-px rings around ``center`` (index = radius in px)."""
    qx, qy = np.indices(pattern.shape)
    r = np.hypot(qx - center[0], qy - center[1]).astype(int).ravel()
    return np.bincount(r, pattern.ravel()) / np.maximum(np.bincount(r), 1)


def auto_fit_window(pattern: np.ndarray, center: tuple[float, float]) -> tuple[float, float]:
    """Fit radii around the strongest ring outside the direct beam: the largest peak of the radial
    profile after removing a smooth background, beyond twice the half-maximum radius of the beam."""
    prof = radial_profile(pattern, center)
    rmax = int(min(pattern.shape) / 2 * 0.9)
    prof = prof[:rmax]
    beam = int(np.argmax(prof < prof[0] / 2)) or 2
    log = np.log(np.clip(prof, prof[prof > 0].min() if np.any(prof > 0) else 1e-12, None))
    background = gaussian_filter(log, 6, mode="nearest")
    r0 = 2 * beam + 1
    peak = r0 + int(np.argmax((log - background)[r0:])) if r0 < rmax - 2 else rmax // 2
    half = max(3.0, 0.2 * peak)
    return max(1.0, peak - half), min(rmax, peak + half)


def py4dstem_fit_ellipse(pattern: np.ndarray, method: str) -> tuple[float, float] | None:
    """``(ratio a/b, theta)`` from a centred mean pattern by a py4DSTEM fit, or ``None`` if it fails."""
    center = geometry.detector_center(pattern.shape)
    radii = auto_fit_window(pattern, center)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if method == "fit_ellipse_1D":
                _, _, a, b, theta = fit_ellipse_1D(pattern, center=center, fitradii=radii)
            else:
                (_, _, a, b, theta), _ = fit_ellipse_amorphous_ring(pattern, center=center, fitradii=radii)
    except Exception:  # a failed fit is a result of the evaluation, not an error
        return None
    if not (np.isfinite(a) and np.isfinite(b) and a > 0 and b > 0):
        return None
    ratio, th = geometry.ellipse_from_py4dstem(a, b, theta)
    return (ratio, th) if ratio < 1.5 else None


ELLIPSE_METHODS = ("fit_ellipse_1D", "fit_ellipse_amorphous_ring")


def mse(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared error, counts^2."""
    return float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))


def psnr(estimate: np.ndarray, clean: np.ndarray) -> float:
    """Peak signal-to-noise ratio (dB) against the clean patterns, peak = max of the clean data."""
    return float(10 * np.log10(np.max(clean) ** 2 / max(mse(estimate, clean), 1e-30)))


def gaussian_oracle(noisy: np.ndarray, clean: np.ndarray,
                    sigmas=(0.0, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)) -> np.ndarray:
    """Gaussian-filtered patterns ``(N, Qx, Qy)`` with the sigma (px) that minimises the MSE to the truth
    (sigma 0, no filtering, is a candidate: the oracle is never worse than the input)."""
    best = min((gaussian_filter(noisy, (0, s, s)) for s in sigmas), key=lambda d: mse(d, clean))
    return best


def lowrank_oracle(noisy: np.ndarray, clean: np.ndarray, ranks=(1, 2, 3, 5, 8, 12, 20, 30, 45)) -> np.ndarray:
    """Rank-k SVD reconstruction of the ``(N, Qx*Qy)`` matrix of patterns, best k by MSE to the truth
    (full rank, the input itself, is a candidate)."""
    flat = noisy.reshape(len(noisy), -1).astype(np.float64)
    u, s, vt = np.linalg.svd(flat, full_matrices=False)
    candidates = [((u[:, :k] * s[:k]) @ vt[:k]).reshape(noisy.shape) for k in ranks if k < len(s)] + [noisy]
    return min(candidates, key=lambda d: mse(d, clean))
