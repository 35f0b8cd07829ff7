"""Augmentation of clean simulated patterns: shift, ellipse, in-plane rotation, scale and dose.

All geometric changes are composed into one affine map from :mod:`py4dstem_prenet.geometry` and applied
in a single resampling, so a pattern is interpolated once. The labels returned are exactly the
parameters of that map (pixels and radians, py4DSTEM conventions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .. import geometry


@dataclass(frozen=True)
class AugmentRanges:
    """Ranges drawn uniformly (dose log-uniformly).

    shift_frac : maximum |shift| of the optical axis from the detector centre, as a fraction of the
        detector side (0.1 -> up to 12.8 px on a 128 detector), per axis.
    ratio : axis ratio a/b range (1 = no ellipse).
    rotation : in-plane rotation applied to the ideal pattern, radians (full turn by default).
    scale : camera-length change range (1 = unchanged).
    dose : electrons per pattern range.
    far_fraction, far_shift_frac : a fraction of the patterns is shifted up to ``far_shift_frac`` instead
        (beams near the detector edge).
    saturation_fraction : fraction of training batches whose counts saturate (see
        :class:`~py4dstem_prenet.simulate.noise.DetectorEffects`).
    detectors : detector kinds (:data:`~py4dstem_prenet.simulate.noise.KINDS`: "ideal", "counting",
        "integrating"); when given, each batch's detector is drawn by
        :func:`~py4dstem_prenet.simulate.noise.draw_detector` from one of them (bit depths, charge
        sharing, gain, read noise, dark residual, bad pixels) instead of the default read-noise/hot-pixel
        draw; empty (the default) keeps the default draw.
    beam_stop_fraction : with ``detectors``, the fraction of batches recorded behind a beam stop.
    """

    shift_frac: float = 0.1
    ratio: tuple[float, float] = (1.0, 1.12)
    rotation: tuple[float, float] = (0.0, 2 * math.pi)
    scale: tuple[float, float] = (0.9, 1.1)
    dose: tuple[float, float] = (1e2, 1e5)
    far_fraction: float = 0.0
    far_shift_frac: float = 0.4
    saturation_fraction: float = 0.0
    detectors: tuple[str, ...] = ()
    beam_stop_fraction: float = 0.0


def draw_geometry(rng: np.random.Generator, n: int, shape: tuple[int, int],
                  ranges: AugmentRanges = AugmentRanges()) -> dict[str, np.ndarray]:
    """Random distortion parameters for ``n`` patterns: qx0, qy0 (px), ratio, theta, rotation (rad), scale."""
    cx, cy = geometry.detector_center(shape)
    far = rng.random(n) < ranges.far_fraction if ranges.far_fraction else np.zeros(n, dtype=bool)
    s = np.where(far, ranges.far_shift_frac, ranges.shift_frac)
    return {
        "qx0": cx + rng.uniform(-s, s) * shape[0],
        "qy0": cy + rng.uniform(-s, s) * shape[1],
        "ratio": rng.uniform(*ranges.ratio, n),
        "theta": rng.uniform(-math.pi / 2, math.pi / 2, n),
        "rotation": rng.uniform(*ranges.rotation, n),
        "scale": rng.uniform(*ranges.scale, n),
    }


def distort(clean: torch.Tensor, params: dict[str, np.ndarray]) -> torch.Tensor:
    """Apply shift + ellipse + rotation + scale to ideal patterns ``(N, Qx, Qy)`` in one resampling.

    Counts are conserved (``preserve_counts``) and interpolation ringing is clipped at zero.
    """
    keys = ("qx0", "qy0", "ratio", "theta", "rotation", "scale")
    f = geometry.distortion_matrix(clean.shape[-2:], *(params[k] for k in keys))
    return geometry.warp(clean, geometry.invert(f), preserve_counts=True).clamp_min(0)
