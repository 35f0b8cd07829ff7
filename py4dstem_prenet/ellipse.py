"""Elliptical distortion: the ResNet regressor on the mean of the centred patterns.

The network sees the mean pattern normalised like every other input (:mod:`normalization`) and
resampled onto a log-polar grid (:func:`ellipse_input`): ``n_theta`` angles over a full turn (columns)
by ``n_r`` logarithmically spaced radii (rows). In log-polar coordinates an elliptical distortion
``a/b = 1 + e`` moves every ring by the same ``~ (e/2) cos 2(phi - theta)`` along the log-radius axis,
whatever its radius, so one convolutional filter bank detects it on all rings at once. It predicts
``(cos 2 theta, sin 2 theta, (a/b - 1) * ratio_scale)``. The angle is decoded with
:func:`geometry.decode_angle`; the length of the ``(cos, sin)`` vector is reported as a confidence
(close to 1 when the network is sure of the direction; meaningless when a/b is close to 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from . import geometry
from .normalization import to_network
from .runner import map_batches, resolve_device, to_device
from .weights import LoadedModel, load_model


@dataclass
class EllipseFit:
    """Measured distortion: ``ratio = a/b >= 1``, ``theta`` a-axis angle (radians, qx towards qy)."""

    ratio: float
    theta: float
    confidence: float


def centred_sum(counts: torch.Tensor, qx0: np.ndarray, qy0: np.ndarray) -> np.ndarray:
    """Sum ``(Qx, Qy)`` (float64) of patterns ``(n, Qx, Qy)`` after moving each optical axis
    ``(qx0, qy0)`` (pixels) to the detector centre (bicubic, see :func:`geometry.warp`)."""
    f = geometry.distortion_matrix(tuple(counts.shape[-2:]), np.asarray(qx0), np.asarray(qy0))
    return geometry.warp(counts, f).sum(0, dtype=torch.float64).cpu().numpy()


def _centred_sum_batch(start: int, block: np.ndarray, qx0: np.ndarray | None, qy0: np.ndarray | None,
                       device: str) -> np.ndarray:
    x = to_device(block, resolve_device(device))
    if qx0 is None:
        return x.sum(0, dtype=torch.float64).cpu().numpy()
    sl = slice(start, start + len(block))
    return centred_sum(x, qx0[sl], qy0[sl])


def mean_centered_pattern(
    data: Any, qx0: np.ndarray | None = None, qy0: np.ndarray | None = None, device: str = "auto",
    batch_size: int = 64, progress: bool = True, client: Any = None,
) -> np.ndarray:
    """Mean pattern ``(Qx, Qy)`` of a cube after moving every optical axis to the detector centre.

    Accumulated batch by batch (float64, :func:`centred_sum`), so the cube is never held whole.
    Without origins the patterns are averaged as they are (the cube is taken to be centred already).
    ``client``: a ``dask.distributed.Client`` to spread the batches over (:func:`runner.map_batches`).
    """
    flat = (None, None) if qx0 is None else (np.ravel(qx0).astype(np.float64), np.ravel(qy0).astype(np.float64))
    fn = partial(_centred_sum_batch, qx0=flat[0], qy0=flat[1], device=str(device))
    total = np.zeros(tuple(data.shape[2:]), dtype=np.float64)
    for _, part in map_batches(fn, data, batch_size, progress, "mean", client):
        total += part
    return total / (data.shape[0] * data.shape[1])


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


def measure_ellipse(mean_pattern: np.ndarray, model: str = "default", device: str = "auto") -> tuple[EllipseFit,
                                                                                                     LoadedModel]:
    """Axis ratio and angle of the elliptical distortion from a centred mean pattern ``(Qx, Qy)``."""
    if np.ndim(mean_pattern) != 2:
        raise ValueError(f"mean pattern must be 2D (Qx, Qy), got shape {np.shape(mean_pattern)}")
    dev = resolve_device(device)
    loaded = load_model("ellipse", model, dev)
    loaded.module.to(dev)
    inp = loaded.entry.input
    with torch.inference_mode():
        y = loaded.module(ellipse_input(mean_pattern, int(inp["n_r"]), int(inp["n_theta"])).to(dev))
    ratio, theta, conf = decode_output(y, float(inp.get("ratio_scale", 10.0)))
    return EllipseFit(float(ratio[0]), float(theta[0]), float(conf[0])), loaded
