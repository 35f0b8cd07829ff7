"""Synthetic 4D-STEM scans from clean patterns: descan drift, jitter, grains, halos and polycrystals.

One builder, :func:`build_scan`, used by the evaluation (and anything else that needs a scan with a known
optical axis per position). Geometry goes through :mod:`py4dstem_prenet.geometry` (the one distortion
model), one resampling per output pattern (several, averaged, for halos and polycrystals). Units: pixels
and radians, py4DSTEM axes (cube ``(Rx, Ry, Qx, Qy)``, detector centre ``(Qx/2, Qy/2)``); the clean input
patterns have their optical axis at the detector centre (as a library's do) and hold fractions of the
incident electrons per pixel, as does the output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .. import geometry


@dataclass(frozen=True)
class ScanRanges:
    """What :func:`build_scan` draws (uniformly unless said otherwise).

    scan : scan size ``(Rx, Ry)``.
    drift : "plane", "parabola" or "random" (either, equally likely): the smooth descan drift.
    drift_frac : largest drift excursion across the scan, as a fraction of the detector side (drawn in
        ``[0, drift_frac]``); 0.1 = up to 12.8 px on 128 px.
    offset_frac : offset of the drift's mean from the detector centre, fraction of the side, per axis.
    jitter_px : standard deviation of the per-position jitter on top of the drift, px.
    grains : (min, max) number of grains: the scan is cut into Voronoi cells, one source pattern each.
    ratio : elliptical distortion a/b range (one ellipse per scan, any angle).
    halo_fraction : probability that the scan is precession-like: every pattern is the mean of the
        pattern moved around a circle of ``halo_px`` radius (an imperfectly descanned precession).
    halo_px : (min, max) halo radius, px.
    ring_fraction : probability that every grain is a polycrystal: the mean of ``ring_grains`` random
        in-plane rotations of its pattern about the optical axis (rings from many grains).
    ring_grains : number of rotations averaged for a polycrystal.
    """

    scan: tuple[int, int] = (16, 16)
    drift: str = "random"
    drift_frac: float = 0.1
    offset_frac: float = 0.03
    jitter_px: float = 0.2
    grains: tuple[int, int] = (1, 3)
    ratio: tuple[float, float] = (1.0, 1.1)
    halo_fraction: float = 0.0
    halo_px: tuple[float, float] = (1.0, 3.0)
    ring_fraction: float = 0.0
    ring_grains: int = 24


def descan_drift(scan: tuple[int, int], drift_px: float, rng: np.random.Generator, shape: tuple[int, int],
                 *, kind: str = "fixed", jitter_px: float = 0.15, offset: tuple[float, float] = (0.0, 0.0)
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Optical axis ``(qx0, qy0)`` ``(Rx, Ry)`` per scan position, px: a smooth descan drift whose largest
    excursion from ``detector centre + offset`` is ``drift_px``, plus Gaussian jitter of ``jitter_px``.

    ``kind`` "plane": a random tilted plane; "parabola": a random plane plus random quadratic terms;
    "fixed": one tilted plane plus parabola (the shape :mod:`evaluate.strain` uses).
    """
    u, v = np.meshgrid(np.linspace(-1, 1, scan[0]), np.linspace(-1, 1, scan[1]), indexing="ij")
    if kind == "fixed":
        dx = 0.6 * u - 0.25 * v + 0.3 * u * u
        dy = 0.3 * u + 0.6 * v - 0.3 * v * v
    elif kind in ("plane", "parabola"):
        a = rng.normal(size=(2, 3 if kind == "plane" else 6))
        terms = [u, v, np.zeros_like(u)] if kind == "plane" else [u, v, u * u - 1 / 3, v * v - 1 / 3, u * v,
                                                                    np.zeros_like(u)]
        dx, dy = (sum(c * t for c, t in zip(row, terms, strict=False)) for row in a)
    else:
        raise ValueError(f"drift kind must be 'plane', 'parabola' or 'fixed', got {kind!r}")
    peak = np.hypot(dx, dy).max()
    scale = drift_px / peak if peak > 0 else 0.0
    cx, cy = geometry.detector_center(shape)
    return (cx + offset[0] + scale * dx + rng.normal(0, jitter_px, scan),
            cy + offset[1] + scale * dy + rng.normal(0, jitter_px, scan))


def _voronoi(scan: tuple[int, int], k: int, rng: np.random.Generator) -> np.ndarray:
    """Grain index ``(Rx, Ry)`` of each scan position: nearest of ``k`` random seed points."""
    seeds = rng.uniform(0, 1, (k, 2)) * np.array(scan)
    gx, gy = np.meshgrid(np.arange(scan[0]) + 0.5, np.arange(scan[1]) + 0.5, indexing="ij")
    d = (gx[..., None] - seeds[:, 0]) ** 2 + (gy[..., None] - seeds[:, 1]) ** 2
    return d.argmin(-1)


def render(ideal: torch.Tensor, qx0: np.ndarray, qy0: np.ndarray, ratio: float, theta: float, *,
           rotations: np.ndarray | None = None, halo_px: float = 0.0, halo_steps: int = 12) -> torch.Tensor:
    """Patterns ``(N, Q, Q)`` of ``ideal`` (``(N, Q, Q)``, optical axis at the detector centre) with the axis
    moved to ``(qx0, qy0)`` and the ellipse ``(ratio, theta)``; counts conserved, ringing clipped at 0.

    ``rotations`` (``(N, G)`` radians): each output is the mean of ``G`` in-plane rotations of its pattern
    about the optical axis (a polycrystal). ``halo_px``: the mean over ``halo_steps`` axis positions on a
    circle of that radius around ``(qx0, qy0)`` (precession-like halo; the truth stays the circle's centre).
    """
    n, q = ideal.shape[0], ideal.shape[-2:]
    rot = np.zeros((n, 1)) if rotations is None else np.asarray(rotations, dtype=np.float64).reshape(n, -1)
    phis = 2 * math.pi * np.arange(halo_steps) / halo_steps if halo_px else np.zeros(1)
    out = torch.zeros_like(ideal)
    for phi in phis:
        ox, oy = halo_px * math.cos(phi), halo_px * math.sin(phi)
        for g in range(rot.shape[1]):
            f = geometry.distortion_matrix(q, np.asarray(qx0).ravel() + ox, np.asarray(qy0).ravel() + oy,
                                           ratio, theta, rot[:, g])
            out += geometry.warp(ideal, geometry.invert(f), preserve_counts=True).clamp_min(0)
    return out / (len(phis) * rot.shape[1])


def build_scan(patterns: torch.Tensor, rng: np.random.Generator, ranges: ScanRanges = ScanRanges()
               ) -> tuple[np.ndarray, dict]:
    """A clean scan ``(Rx, Ry, Q, Q)`` float32 (fractions of the incident electrons per pixel) and its truth.

    ``patterns``: pool ``(M, Q, Q)`` of clean patterns (optical axis at the detector centre) the grains are
    drawn from. Truth: ``qx0, qy0`` ``(Rx, Ry)`` px (optical axis per position), ``source`` ``(Rx, Ry)``
    (index into ``patterns``), ``ratio``, ``theta`` (ellipse), ``drift`` (kind), ``drift_px`` (largest
    excursion), ``halo_px`` (0 = none), ``rings`` (polycrystal or not), ``grains``.
    """
    scan, shape = tuple(ranges.scan), tuple(patterns.shape[-2:])
    kind = ranges.drift if ranges.drift != "random" else ("plane", "parabola")[int(rng.integers(2))]
    drift_px = float(rng.uniform(0, ranges.drift_frac) * min(shape))
    offset = tuple(float(o) for o in rng.uniform(-ranges.offset_frac, ranges.offset_frac, 2) * np.array(shape))
    qx0, qy0 = descan_drift(scan, drift_px, rng, shape, kind=kind, jitter_px=ranges.jitter_px, offset=offset)
    k = int(rng.integers(ranges.grains[0], ranges.grains[1] + 1))
    grain = _voronoi(scan, k, rng)
    sources = rng.integers(0, patterns.shape[0], k)
    ratio, theta = float(rng.uniform(*ranges.ratio)), float(rng.uniform(-math.pi / 2, math.pi / 2))
    halo = float(rng.uniform(*ranges.halo_px)) if rng.random() < ranges.halo_fraction else 0.0
    rings = bool(rng.random() < ranges.ring_fraction)
    rotations = None
    if rings:
        per_grain = rng.uniform(0, 2 * math.pi, (k, ranges.ring_grains))
        rotations = per_grain[grain.ravel()]
    else:  # each grain has its own in-plane orientation
        rotations = rng.uniform(0, 2 * math.pi, k)[grain.ravel()][:, None]
    ideal = patterns[torch.from_numpy(sources[grain.ravel()])]
    clean = render(ideal, qx0, qy0, ratio, theta, rotations=rotations, halo_px=halo)
    truth = {"qx0": qx0, "qy0": qy0, "source": sources[grain], "ratio": ratio, "theta": theta, "drift": kind,
             "drift_px": drift_px, "halo_px": halo, "rings": rings, "grains": k}
    return clean.float().numpy().reshape(*scan, *shape), truth
