"""The one distortion model of py4dstem-prenet: beam shift + elliptical distortion as one affine map.

Conventions (used by simulation, training labels, evaluation and correction alike)
-----------------------------------------------------------------------------------
* Axes are py4DSTEM's: a pattern is indexed ``[qx, qy]``; ``qx`` is the row (first) index, ``qy`` the
  column (second) index. Positions are in pixels, 0-based, with pixel centres at integers.
* **Detector centre**: the point ``(Qx / 2, Qy / 2)`` of a ``(Qx, Qy)`` pattern (for 128 x 128 that is
  pixel ``(64, 64)``, the zero-frequency pixel of an ``fftshift``-ed simulation). Alignment moves the
  optical axis of every pattern there. :func:`detector_center` is the only place that defines it.
* **Centre / origin**: ``(qx0, qy0)``, the optical axis (zero scattering angle) in the measured pattern,
  in pixels.
* **Ellipse**: py4DSTEM's form ``(a, b, theta)``: ``a`` semi-major, ``b`` semi-minor (pixels),
  ``theta`` the angle of the a-axis from the qx axis towards the qy axis, radians. Only the ratio
  ``a / b`` and ``theta`` describe the distortion. An ellipse is unchanged by a half turn, so networks
  and metrics use the doubled angle ``(cos 2 theta, sin 2 theta)``.
* **Correction** follows py4DSTEM's Bragg-vector correction exactly
  (``BraggVectors.calibrate()`` -> ``cal.get_ellipse``): the a-axis is compressed by ``b / a`` and the
  b-axis is left alone, so a ring of semi-axes ``(a, b)`` becomes a circle of radius ``b``. Corrected
  cubes and py4DSTEM's calibrated Bragg vectors therefore agree point for point.

The forward model maps *ideal* coordinates ``u`` (optical axis at the detector centre, circular rings)
to *measured* coordinates ``q``::

    q = o + E (u - c),   E = R(theta) diag(a / b, 1) R(theta)^T

with ``o = (qx0, qy0)``, ``c`` the detector centre and ``R`` the rotation by ``theta``. Simulation draws a
measured pattern by sampling an ideal one at ``u = F^-1 q``; correction samples a measured one at
``q = F u``. Both use :func:`warp` with the matrix that maps *output* pixel coordinates to *input* pixel
coordinates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

ArrayLike = float | Sequence[float] | np.ndarray


def detector_center(shape: Sequence[int]) -> tuple[float, float]:
    """The detector centre ``(Qx / 2, Qy / 2)`` in pixels for a pattern of shape ``(..., Qx, Qy)``."""
    qx, qy = int(shape[-2]), int(shape[-1])
    return qx / 2.0, qy / 2.0


def _as_batch(*values: ArrayLike) -> list[np.ndarray]:
    arrays = [np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in values]
    n = max(a.size for a in arrays)
    out = []
    for a in arrays:
        if a.size not in (1, n):
            raise ValueError(f"parameter arrays must have length 1 or {n}, got {a.size}")
        out.append(np.broadcast_to(a.reshape(-1), (n,)).copy())
    return out


def ellipse_matrix(ratio: ArrayLike, theta: ArrayLike) -> np.ndarray:
    """The 2x2 matrices ``E = R(theta) diag(ratio, 1) R(theta)^T``, shape ``(N, 2, 2)``.

    ``ratio`` is ``a / b`` (>= 1 for the usual labelling, any positive value is accepted) and ``theta``
    the a-axis angle from qx towards qy in radians. ``E`` stretches the a-axis by ``ratio`` and leaves
    the b-axis alone: it maps a circle of radius ``b`` to the ellipse ``(a, b, theta)``.
    """
    ratio, theta = _as_batch(ratio, theta)
    if np.any(~np.isfinite(ratio)) or np.any(ratio <= 0):
        raise ValueError("axis ratio a/b must be finite and positive")
    c, s = np.cos(theta), np.sin(theta)
    e = ratio - 1.0
    m = np.empty((ratio.size, 2, 2))
    m[:, 0, 0] = 1.0 + e * c * c
    m[:, 1, 1] = 1.0 + e * s * s
    m[:, 0, 1] = m[:, 1, 0] = e * c * s
    return m


def distortion_matrix(
    shape: Sequence[int],
    qx0: ArrayLike | None = None,
    qy0: ArrayLike | None = None,
    ratio: ArrayLike = 1.0,
    theta: ArrayLike = 0.0,
    rotation: ArrayLike = 0.0,
    scale: ArrayLike = 1.0,
) -> np.ndarray:
    """Homogeneous 3x3 maps ``F`` from ideal to measured pixel coordinates, shape ``(N, 3, 3)``.

    ``q = F @ (u_x, u_y, 1)``. ``qx0, qy0`` (pixels) is where the optical axis lands (default: the
    detector centre); ``ratio`` and ``theta`` describe the ellipse (see module docstring);
    ``rotation`` (radians, qx towards qy) and ``scale`` (dimensionless, > 1 enlarges the pattern) are an
    optional in-plane rotation and camera-length change of the ideal pattern about the optical axis,
    used by augmentation so a pattern is resampled only once.
    """
    cx, cy = detector_center(shape)
    qx0 = cx if qx0 is None else qx0
    qy0 = cy if qy0 is None else qy0
    qx0, qy0, ratio, theta, rotation, scale = _as_batch(qx0, qy0, ratio, theta, rotation, scale)
    e = ellipse_matrix(ratio, theta)
    cr, sr = np.cos(rotation), np.sin(rotation)
    rot = np.stack([np.stack([cr, -sr], -1), np.stack([sr, cr], -1)], -2) * scale[:, None, None]
    lin = e @ rot
    m = np.zeros((qx0.size, 3, 3))
    m[:, :2, :2] = lin
    m[:, 0, 2] = qx0 - (lin[:, 0, 0] * cx + lin[:, 0, 1] * cy)
    m[:, 1, 2] = qy0 - (lin[:, 1, 0] * cx + lin[:, 1, 1] * cy)
    m[:, 2, 2] = 1.0
    return m


def invert(matrices: np.ndarray) -> np.ndarray:
    """Inverse of a batch of homogeneous affine maps, shape ``(N, 3, 3)``."""
    return np.linalg.inv(np.asarray(matrices, dtype=np.float64))


def apply(matrices: np.ndarray, qx: np.ndarray, qy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apply maps ``(N, 3, 3)`` (or one ``(3, 3)``) to points ``(N,)``; returns the mapped ``(qx, qy)``, pixels."""
    m = np.asarray(matrices, dtype=np.float64)
    qx, qy = np.asarray(qx, dtype=np.float64), np.asarray(qy, dtype=np.float64)
    return (m[..., 0, 0] * qx + m[..., 0, 1] * qy + m[..., 0, 2],
            m[..., 1, 0] * qx + m[..., 1, 1] * qy + m[..., 1, 2])


def _keys_weights(t: torch.Tensor) -> list[torch.Tensor]:
    """Keys cubic convolution weights (a = -0.5) of the 4 taps at offsets -1, 0, 1, 2 from ``floor``.

    a = -0.5 is the only Keys kernel that reproduces linear and quadratic functions exactly, so a
    sub-pixel shift moves a pattern's centre of mass by exactly the shift. (torch's own bicubic
    ``grid_sample`` uses a = -0.75, which biases centres of mass by up to ~0.04 px.)
    """
    t2, t3 = t * t, t * t * t
    return [
        0.5 * (-t3 + 2 * t2 - t),
        0.5 * (3 * t3 - 5 * t2 + 2),
        0.5 * (-3 * t3 + 4 * t2 + t),
        0.5 * (t3 - t2),
    ]


_PAD = 4  # zero border for bicubic sampling; positions further out are clamped into it


def _sample_bicubic(x: torch.Tensor, px: torch.Tensor, py: torch.Tensor,
                    clamp: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sample ``x (N, C, H, W)`` at pixel positions ``px, py (N, H', W')`` (rows, columns); zeros outside.
    Returns the samples and, with ``clamp``, the samples raised to at least ``min(0, lowest of the 2 x 2
    input pixels around each position)`` (else ``None``)."""
    n, c, h, w = x.shape
    xp = F.pad(x, (_PAD, _PAD, _PAD, _PAD))
    wp = w + 2 * _PAD
    # clamping keeps all 4 taps inside the zero border whenever the position is off the detector
    px = px.clamp(-_PAD + 1, h + _PAD - 3)
    py = py.clamp(-_PAD + 1, w + _PAD - 3)
    fx, fy = torch.floor(px), torch.floor(py)
    wx, wy = _keys_weights(px - fx), _keys_weights(py - fy)
    base = ((fx.long() + _PAD - 1) * wp + (fy.long() + _PAD - 1)).reshape(n, 1, -1).expand(n, c, -1)
    flat = xp.reshape(n, c, -1)
    out = torch.zeros((n, c) + tuple(px.shape[1:]), dtype=x.dtype, device=x.device)
    lo = None
    for i in range(4):
        row = torch.zeros_like(out)
        for j in range(4):
            tap = torch.gather(flat, 2, base + (i * wp + j)).view_as(out)
            row += tap * wy[j].unsqueeze(1)
            if clamp and i in (1, 2) and j in (1, 2):
                lo = tap if lo is None else torch.minimum(lo, tap)
        out += row * wx[i].unsqueeze(1)
    return out, (torch.maximum(out, lo.clamp_max(0)) if clamp else None)


def sample_bilinear(images: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of ``images (N, C, Qx, Qy)`` at pixel positions ``px`` (rows) and ``py`` (columns),
    each ``(N, H', W')`` or broadcastable to it; zeros outside the detector. Returns ``(N, C, H', W')``.

    The one conversion of this package from pixel positions (py4DSTEM axes, pixel centres at integers)
    to ``grid_sample``'s normalised ``(column, row)`` grid with ``align_corners=True``.
    """
    n, _, h, w = images.shape
    px, py = torch.broadcast_tensors(torch.as_tensor(px, dtype=images.dtype, device=images.device),
                                     torch.as_tensor(py, dtype=images.dtype, device=images.device))
    grid = torch.stack([py * (2.0 / max(w - 1, 1)) - 1.0, px * (2.0 / max(h - 1, 1)) - 1.0], dim=-1)
    grid = grid.expand(n, *grid.shape[1:]) if grid.shape[0] == 1 else grid
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def polar_positions(cx: float, cy: float, radii: torch.Tensor, angles: torch.Tensor) -> tuple[torch.Tensor,
                                                                                              torch.Tensor]:
    """Pixel positions ``(qx, qy)``, each ``(len(radii), len(angles))``, of a polar grid about ``(cx, cy)``:
    ``angles`` in radians from qx towards qy, ``radii`` in pixels (1D tensors)."""
    r, phi = radii.reshape(-1, 1), angles.reshape(1, -1)
    return cx + r * torch.cos(phi), cy + r * torch.sin(phi)


def warp(
    images: torch.Tensor,
    matrices: np.ndarray | torch.Tensor,
    mode: str = "bicubic",
    preserve_counts: bool = False,
    clamp: bool = False,
) -> torch.Tensor:
    """Resample a batch of patterns through affine maps, on the patterns' device and dtype.

    Parameters
    ----------
    images : tensor ``(N, Qx, Qy)`` or ``(N, C, Qx, Qy)``, float32 or float64, CPU or CUDA.
    matrices : ``(N, 3, 3)``, ``(1, 3, 3)`` or ``(3, 3)`` maps from *output* pixel coordinates to *input*
        pixel coordinates (pixels, py4DSTEM axes). To correct a measured pattern pass ``F``; to distort
        an ideal one pass ``F^-1`` (see :func:`distortion_matrix`).
    mode : ``"bicubic"`` (default: Keys cubic convolution, a = -0.5, which keeps sharp disks sharp and
        moves centres of mass exactly) or ``"bilinear"`` (faster, blurs by up to half a pixel).
    preserve_counts : multiply by ``|det|`` of the linear part so that the summed counts of the pattern
        are conserved (away from the detector edge); sampling alone conserves counts per pixel.

    clamp : no negative ringing: an output value below zero is raised to zero, or to the lowest of the
        2 x 2 input pixels around its sampling position when that is negative (read noise in the input is
        kept, the interpolation adds none), and each pattern is then rescaled to the total of the exact
        resampling, so with ``preserve_counts`` the total counts are still conserved. Non-negative input
        gives non-negative output. The cost: the removed lobes move centres of mass by ~0.01 px on the
        example's patterns (0.02-0.05 px for a binary disk with a hard pixel edge). The pipeline's
        outputs use it.

    Samples outside the detector read as zero. Without ``clamp``, bicubic interpolation rings next to
    sharp edges: non-negative input gives negative values (about 7 % of a hard edge's height, -1.6
    counts next to the example's direct beam, thousands next to a hot pixel) while the total is exact.
    """
    if images.ndim not in (3, 4):
        raise ValueError(f"images must be (N, Qx, Qy) or (N, C, Qx, Qy), got shape {tuple(images.shape)}")
    if mode not in ("bicubic", "bilinear"):
        raise ValueError(f"mode must be 'bicubic' or 'bilinear', got {mode!r}")
    squeeze = images.ndim == 3
    x = images.unsqueeze(1) if squeeze else images
    n, _, h, w = x.shape
    m = torch.as_tensor(matrices, dtype=x.dtype, device=x.device)
    m = m.expand(n, 3, 3) if m.shape in ((3, 3), (1, 3, 3)) else m
    if m.shape != (n, 3, 3):
        raise ValueError(f"need {n} matrices of shape (3, 3), got {tuple(m.shape)}")
    qx = torch.arange(h, dtype=x.dtype, device=x.device).view(1, h, 1)
    qy = torch.arange(w, dtype=x.dtype, device=x.device).view(1, 1, w)
    lin, t = m[:, :2, :2].reshape(n, 2, 2, 1, 1), m[:, :2, 2].reshape(n, 2, 1, 1)
    px = lin[:, 0, 0] * qx + lin[:, 0, 1] * qy + t[:, 0]
    py = lin[:, 1, 0] * qx + lin[:, 1, 1] * qy + t[:, 1]
    if mode == "bicubic":
        out, clamped = _sample_bicubic(x, px, py, clamp)
        if clamped is not None:
            scale = out.sum((-2, -1), keepdim=True) / clamped.sum((-2, -1), keepdim=True)
            out = clamped * torch.where(torch.isfinite(scale) & (scale > 0), scale, 1)
    else:
        out = sample_bilinear(x, px, py)
    if preserve_counts:
        det = (m[:, 0, 0] * m[:, 1, 1] - m[:, 0, 1] * m[:, 1, 0]).abs()
        out = out * det.view(n, 1, 1, 1)
    return out[:, 0] if squeeze else out


def weighted_com(
    heatmaps: torch.Tensor, window: int = 6, floor: float = 0.0, prior: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sub-pixel peak position of each heatmap by an intensity-weighted centre of mass.

    The centre of mass is taken inside a ``(2 window + 1)`` square around the arg-max pixel, over
    ``max(h - floor * max(h), 0)``; pixels outside the window never pull the estimate. With ``floor=0``
    a Gaussian peak of width sigma is found without bias when ``window >= 4 sigma``; a floor suppresses a
    weak background inside the window at the cost of a small grid-dependent bias (about 0.006 px for
    ``floor=0.1``, sigma 2 px). Differentiable with respect to ``heatmaps`` (used in training).

    Parameters
    ----------
    heatmaps : ``(N, Qx, Qy)`` non-negative maps (torch tensor, any float dtype and device).
    window : half-width of the window, pixels.
    floor : fraction (0..1) of each map's maximum subtracted before weighting.
    prior : optional ``(N, Qx, Qy)`` weights that only choose the peak: the window is centred on the
        maximum of ``heatmaps * prior``, and the centre of mass is then taken over ``heatmaps`` alone.

    Returns
    -------
    qx, qy : ``(N,)`` positions in pixels (py4DSTEM axes), same dtype and device as ``heatmaps``.
    mass : ``(N,)`` the sum of each map inside the window (for a probability map: the probability that
        the peak is the one found, a confidence in [0, 1]).
    """
    h = torch.as_tensor(heatmaps)
    if h.ndim != 3:
        raise ValueError(f"heatmaps must be (N, Qx, Qy), got shape {tuple(h.shape)}")
    n, nx, ny = h.shape
    idx = (h if prior is None else h * prior).reshape(n, -1).argmax(dim=1)
    ix, iy = idx // ny, idx % ny
    peak = h.reshape(n, -1).gather(1, idx[:, None])[:, 0]
    offs = torch.arange(-window, window + 1, device=h.device)
    rows, cols = ix[:, None] + offs, iy[:, None] + offs  # (N, k)
    valid = ((rows >= 0) & (rows < nx))[:, :, None] & ((cols >= 0) & (cols < ny))[:, None, :]
    patch = h[torch.arange(n, device=h.device)[:, None, None], rows.clamp(0, nx - 1)[:, :, None],
              cols.clamp(0, ny - 1)[:, None, :]]
    wts = (patch - floor * peak[:, None, None]).clamp_min(0) * valid
    total = wts.sum(dim=(1, 2)).clamp_min(torch.finfo(h.dtype).tiny)
    qx = (wts.sum(dim=2) * rows.to(h.dtype)).sum(dim=1) / total
    qy = (wts.sum(dim=1) * cols.to(h.dtype)).sum(dim=1) / total
    return qx, qy, (patch * valid).sum(dim=(1, 2))


def normalize_ellipse(ratio: ArrayLike, theta: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Canonical ``(ratio >= 1, theta in [-pi/2, pi/2))``: swaps the axes when ``ratio < 1``."""
    ratio, theta = _as_batch(ratio, theta)
    swap = ratio < 1.0
    ratio = np.where(swap, 1.0 / ratio, ratio)
    theta = np.where(swap, theta + math.pi / 2, theta)
    theta = (theta + math.pi / 2) % math.pi - math.pi / 2
    return ratio, theta


def ellipse_to_py4dstem(ratio: ArrayLike, theta: ArrayLike, b: ArrayLike = 1.0) -> tuple[float, float, float]:
    """py4DSTEM's ``(a, b, theta)`` for an axis ratio ``a/b`` and a-axis angle (radians).

    ``b`` (pixels) sets the absolute size; py4DSTEM's Bragg-vector and polar corrections use only
    ``b / a`` and ``theta``, so any positive ``b`` gives the same correction.
    """
    r, t = normalize_ellipse(ratio, theta)
    (bb,) = _as_batch(b)
    return float(r[0] * bb[0]), float(bb[0]), float(t[0])


def ellipse_from_py4dstem(a: float, b: float, theta: float) -> tuple[float, float]:
    """Axis ratio ``a / b`` (>= 1) and canonical a-axis angle (radians) from py4DSTEM's ``(a, b, theta)``."""
    if not (a > 0 and b > 0):
        raise ValueError(f"ellipse semi-axes must be positive, got a={a}, b={b}")
    r, t = normalize_ellipse(a / b, theta)
    return float(r[0]), float(t[0])


def encode_angle(theta: ArrayLike) -> np.ndarray:
    """``(cos 2 theta, sin 2 theta)``, shape ``(N, 2)``: the continuous encoding of an ellipse angle."""
    (t,) = _as_batch(theta)
    return np.stack([np.cos(2 * t), np.sin(2 * t)], -1)


def decode_angle(cos2: ArrayLike, sin2: ArrayLike) -> np.ndarray:
    """Inverse of :func:`encode_angle`: the a-axis angle in ``[-pi/2, pi/2)`` radians."""
    c, s = _as_batch(cos2, sin2)
    t = 0.5 * np.arctan2(s, c)
    return (t + math.pi / 2) % math.pi - math.pi / 2


def angle_difference(theta1: ArrayLike, theta2: ArrayLike) -> np.ndarray:
    """Absolute difference of two ellipse angles modulo pi, in ``[0, pi/2]`` radians."""
    a, b = _as_batch(theta1, theta2)
    d = (a - b) % math.pi
    return np.minimum(d, math.pi - d)


def correct_points(
    qx: np.ndarray, qy: np.ndarray, qx0: float, qy0: float, ratio: float, theta: float
) -> tuple[np.ndarray, np.ndarray]:
    """Corrected coordinates of measured points, relative to the optical axis (pixels).

    The same map as the image correction: ``u - c = E^-1 (q - o)``; this is what py4DSTEM's
    ``BraggVectors.calibrate()`` computes for ``(a, b, theta)`` with ``a / b = ratio``.
    """
    e_inv = np.linalg.inv(ellipse_matrix(ratio, theta)[0])
    dx, dy = np.asarray(qx, float) - qx0, np.asarray(qy, float) - qy0
    return e_inv[0, 0] * dx + e_inv[0, 1] * dy, e_inv[1, 0] * dx + e_inv[1, 1] * dy
