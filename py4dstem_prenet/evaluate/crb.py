"""Cramer-Rao lower bound on the optical-axis (centre) position of a pattern under Poisson noise.

For a pattern of expected counts ``lam(q - q0)`` shifted by ``q0``, the Fisher information of the shift
under independent Poisson pixels (plus Gaussian read noise of variance ``s2`` electrons^2, in the usual
Poisson + Gaussian approximation ``var = lam + s2``) is ``I_ab = sum_pixels (d lam / d a)(d lam / d b) /
(lam + s2)``, ``a, b`` in ``{qx0, qy0}``. Any unbiased estimator then has covariance ``>= I^-1``; we report
the radial bound ``sqrt(trace(I^-1))`` (px, comparable to an RMS radial error). Derivatives are central
differences of ``sqrt(lam)`` along qx and qy (pixel centres at integers; ``(d lam)^2 / lam = 4 (d sqrt
lam)^2`` stays finite where the expected counts fall to zero, unlike differences of ``lam`` itself).
Saturated pixels (expected counts at or above the counter maximum) carry no information and are left out.
"""

from __future__ import annotations

import numpy as np
import torch

from ..simulate.noise import DetectorEffects, expected_electrons


def centre_crb(clean: torch.Tensor, dose: np.ndarray | float, effects: DetectorEffects | None = None
               ) -> np.ndarray:
    """Radial Cramer-Rao bound (px, ``(N,)``) on the optical axis of each clean pattern ``(N, Qx, Qy)``
    (fractions per pixel) at ``dose`` electrons per pattern on the detector ``effects``; ``inf`` where the
    pattern holds no information about the shift (e.g. all saturated or empty)."""
    effects = effects or DetectorEffects()
    lam = expected_electrons(clean, dose, effects).numpy()
    gx, gy = np.gradient(np.sqrt(lam), axis=(1, 2))  # (d lam)^2 / lam = 4 (d sqrt lam)^2, finite at lam -> 0
    s2 = effects.read_noise**2 + (effects.dark_sigma / effects.gain) ** 2
    info_w = 4.0 * lam / (lam + s2) if s2 else np.full_like(lam, 4.0)
    if effects.bit_depth:
        info_w = np.where(lam * effects.gain >= 2**effects.bit_depth - 1, 0.0, info_w)
    ixx = (gx * gx * info_w).sum((1, 2))
    iyy = (gy * gy * info_w).sum((1, 2))
    ixy = (gx * gy * info_w).sum((1, 2))
    det = ixx * iyy - ixy * ixy
    with np.errstate(divide="ignore", invalid="ignore"):
        trace_inv = (ixx + iyy) / det
    return np.where((det > 0) & np.isfinite(trace_inv), np.sqrt(np.abs(trace_inv)), np.inf)
