"""Elliptical distortion: the ResNet regressor on the mean of the centred patterns.

The network sees the mean pattern, normalised like every other input (:mod:`normalization`) and
resampled to ``input_size`` pixels per side (ratio and angle do not depend on the scale), and predicts
``(cos 2 theta, sin 2 theta, (a/b - 1) * ratio_scale)``. The angle is decoded with
:func:`geometry.decode_angle`; the length of the ``(cos, sin)`` vector is reported as a confidence
(close to 1 when the network is sure of the direction; meaningless when a/b is close to 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from . import geometry
from .normalization import to_network
from .runner import iter_batches, resolve_device
from .weights import LoadedModel, load_model


@dataclass
class EllipseFit:
    """Measured distortion: ``ratio = a/b >= 1``, ``theta`` a-axis angle (radians, qx towards qy)."""

    ratio: float
    theta: float
    confidence: float


def mean_centered_pattern(
    data: Any, qx0: np.ndarray | None = None, qy0: np.ndarray | None = None, device: str = "auto",
    batch_size: int = 64, progress: bool = True,
) -> np.ndarray:
    """Mean pattern ``(Qx, Qy)`` of a cube after moving every optical axis to the detector centre.

    Accumulated batch by batch (float64), so the cube is never held whole. Without origins the patterns
    are averaged as they are (the cube is taken to be centred already).
    """
    dev = resolve_device(device)
    total = torch.zeros(tuple(data.shape[2:]), dtype=torch.float64, device=dev)
    for start, block in iter_batches(data, batch_size, progress, "mean"):
        x = torch.from_numpy(block).to(dev)
        if qx0 is not None:
            sl = slice(start, start + len(block))
            f = geometry.distortion_matrix(block.shape[-2:], np.ravel(qx0)[sl], np.ravel(qy0)[sl])
            x = geometry.warp(x, f)
        total += x.sum(0, dtype=torch.float64)
    return (total / (data.shape[0] * data.shape[1])).cpu().numpy()


@torch.no_grad()
def ellipse_input(mean_pattern: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """Network input ``(1, 1, size, size)`` from a centred mean pattern (area-averaged resampling)."""
    x, _ = to_network(torch.as_tensor(mean_pattern, dtype=torch.float32).reshape(1, *mean_pattern.shape[-2:]))
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


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
    loaded = load_model("ellipse", model)
    loaded.module.to(dev)
    inp = loaded.entry.input
    with torch.inference_mode():
        y = loaded.module(ellipse_input(mean_pattern, int(inp.get("input_size", 128))).to(dev))
    ratio, theta, conf = decode_output(y, float(inp.get("ratio_scale", 10.0)))
    return EllipseFit(float(ratio[0]), float(theta[0]), float(conf[0])), loaded
