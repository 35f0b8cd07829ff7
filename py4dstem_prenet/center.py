"""Beam centre: the U-Net heatmap network + weighted centre of mass, and the alignment warp.

The centre network maps a normalised pattern (see :mod:`normalization`) to logits whose softmax over
the detector is a probability map of the optical-axis position; during training it is pulled towards a
Gaussian of standard deviation ``heatmap_sigma`` pixels at the true ``(qx0, qy0)`` (cross-entropy) and
its weighted centre of mass towards the true position. The sub-pixel centre is the weighted centre of
mass of the map around its maximum (:func:`geometry.weighted_com`); the probability inside that window
is the per-pattern confidence in [0, 1] (close to 1: one unambiguous peak).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import geometry
from .normalization import to_network
from .runner import apply_network, iter_batches, resolve_device, write_block
from .weights import LoadedModel, load_model


@dataclass
class Origins:
    """Measured optical-axis positions over the scan, pixels (py4DSTEM axes), and confidences in [0, 1]."""

    qx0: np.ndarray
    qy0: np.ndarray
    confidence: np.ndarray


def center_block(loaded: LoadedModel, counts: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(qx0, qy0, confidence)`` for counts ``(n, Qx, Qy)`` on the network's device."""
    x, _ = to_network(counts)
    arch, inp = loaded.entry.architecture, loaded.entry.input
    logits = apply_network(loaded.module, x, 2 ** arch.get("depth", 4))[:, 0]
    qx, qy, mass = geometry.weighted_com(heatmap(logits).double(), int(inp["com_window"]), float(inp["com_floor"]))
    return qx.cpu().numpy(), qy.cpu().numpy(), mass.clamp(0, 1).cpu().numpy()


def heatmap(logits: torch.Tensor) -> torch.Tensor:
    """Probability map ``(N, Qx, Qy)``: the softmax of the centre network's logits over each pattern."""
    n = logits.shape[0]
    return torch.softmax(logits.reshape(n, -1).float(), dim=1).reshape(logits.shape)


def measure_origins(
    data: Any, model: str = "default", device: str = "auto", batch_size: int = 64, progress: bool = True,
) -> tuple[Origins, LoadedModel]:
    """Optical axis ``(qx0, qy0)`` of every pattern of a cube ``(Rx, Ry, Qx, Qy)``, pixels."""
    dev = resolve_device(device)
    loaded = load_model("center", model)
    loaded.module.to(dev)
    n = int(data.shape[0]) * int(data.shape[1])
    res = np.empty((3, n))
    for start, block in iter_batches(data, batch_size, progress, "centre"):
        qx, qy, conf = center_block(loaded, torch.from_numpy(block).to(dev))
        res[:, start:start + len(block)] = qx, qy, conf
    qx0, qy0, conf = (r.reshape(data.shape[:2]) for r in res)
    return Origins(qx0, qy0, conf), loaded


def warp_cube(
    data: Any, qx0: np.ndarray, qy0: np.ndarray, ratio: float = 1.0, theta: float = 0.0,
    device: str = "auto", batch_size: int = 64, progress: bool = True, out: Any = None,
) -> Any:
    """Move each pattern's optical axis to the detector centre and, if ``ratio != 1``, make rings
    circular, in one bicubic resampling (see :mod:`geometry` for the conventions).

    Counts are conserved (the ellipse correction compresses the a-axis by b/a, so intensities are scaled
    by a/b); values are not clipped, so interpolation next to sharp disks may leave small negative values.
    """
    dev = resolve_device(device)
    out = np.empty(data.shape, dtype=np.float32) if out is None else out
    qx0, qy0 = np.asarray(qx0, np.float64).ravel(), np.asarray(qy0, np.float64).ravel()
    for start, block in iter_batches(data, batch_size, progress, "warp"):
        sl = slice(start, start + len(block))
        f = geometry.distortion_matrix(block.shape[-2:], qx0[sl], qy0[sl], ratio, theta)
        res = geometry.warp(torch.from_numpy(block).to(dev), f, preserve_counts=True)
        write_block(out, start, res.cpu().numpy())
    return out
