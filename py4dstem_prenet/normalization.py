"""Per-pattern intensity normalisation shared by training and inference.

Networks see ``sqrt(max(counts, 0)) / s`` with ``s`` the per-pattern maximum of the square root: the
square root stabilises the Poisson variance (shot noise becomes roughly unit-variance Gaussian at every
intensity) and compresses the bright direct beam against the weak diffuse scattering; dividing by ``s``
puts every pattern in ``[0, 1]`` whatever the dose. The scale ``s`` is recorded so that a network output
``y`` in the same space maps back to counts as ``(y * s)**2``.

Negative values (dark-subtracted data from integrating detectors such as the EMPAD) are clipped to 0
before the square root; :func:`py4dstem_prenet.validation.check_patterns` rejects data that is mostly
negative.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


def to_network(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Counts ``(N, Qx, Qy)`` -> network input ``(N, 1, Qx, Qy)`` in [0, 1] and scales ``(N,)``."""
    root = counts.clamp_min(0).sqrt()
    scale = root.flatten(1).amax(dim=1).clamp_min(1e-12)
    return (root / scale.view(-1, 1, 1)).unsqueeze(1), scale


def from_network(y: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Network output ``(N, 1, Qx, Qy)`` in normalised square-root space -> counts ``(N, Qx, Qy)``."""
    return (y[:, 0] * scale.view(-1, 1, 1)).square()


def to_work_grid(counts: torch.Tensor, size: int | None) -> tuple[torch.Tensor, tuple[float, float]]:
    """Counts ``(N, Qx, Qy)`` averaged over blocks down to ``(N, size, size)`` (the grid a coarse network
    works on), and the size of one work pixel in detector pixels ``(Qx / size, Qy / size)``.

    ``size=None`` or a detector no larger than ``size`` returns the counts unchanged (factor 1). When
    ``Qx`` is a multiple of ``size`` the blocks tile the detector exactly; otherwise they are PyTorch's
    adaptive-average blocks, whose centres are within half a detector pixel of
    :func:`work_to_detector`'s mapping.
    """
    qx, qy = counts.shape[-2:]
    if size is None or (qx <= size and qy <= size):
        return counts, (1.0, 1.0)
    out = torch.nn.functional.adaptive_avg_pool2d(counts.unsqueeze(1), (min(size, qx), min(size, qy)))[:, 0]
    return out, (qx / out.shape[-2], qy / out.shape[-1])


def work_to_detector(q: torch.Tensor | np.ndarray, factor: float) -> torch.Tensor | np.ndarray:
    """Position on the work grid (pixel centres at integers) -> detector pixels, one axis."""
    return (q + 0.5) * factor - 0.5


def detector_to_work(q: torch.Tensor | np.ndarray, factor: float) -> torch.Tensor | np.ndarray:
    """Detector pixels -> position on the work grid, one axis (inverse of :func:`work_to_detector`)."""
    return (q + 0.5) / factor - 0.5


@dataclass(frozen=True)
class WorkGrid:
    """The fixed grid a network sees for a detector of any size, with the exact coordinate map back.

    A ``(Qx, Qy)`` pattern is zero-padded (centred) to a square of side ``L = max(Qx, Qy)``; a side
    larger than ``size`` is then reduced to ``size``: by block means when ``L`` is a multiple of ``size``
    (exactly what :func:`to_work_grid` does in training), else by antialiased bilinear resampling; a
    smaller side is zero-padded (centred) up to ``size``, unscaled. Work pixel ``u`` (centres at integers)
    covers detector pixels around ``q = (u + 0.5) * factor - 0.5 - offset`` (per axis), exactly: both
    resamplings are centred on that map.
    """

    shape: tuple[int, int]
    size: int
    factor: float
    offset: tuple[float, float]

    @classmethod
    def for_shape(cls, shape: tuple[int, ...], size: int | None) -> WorkGrid:
        """The work grid of detector ``shape[-2:]`` for a network working on ``size x size`` (``None``:
        the detector itself, unpadded)."""
        qx, qy = int(shape[-2]), int(shape[-1])
        if size is None:
            return cls((qx, qy), max(qx, qy), 1.0, (0.0, 0.0)) if qx == qy else cls.for_shape(shape, max(qx, qy))
        side = max(qx, qy)
        if side > size:
            factor = side / size
            return cls((qx, qy), int(size), factor, ((side - qx) // 2, (side - qy) // 2))
        return cls((qx, qy), int(size), 1.0, ((size - qx) // 2, (size - qy) // 2))

    def apply(self, counts: torch.Tensor) -> torch.Tensor:
        """Patterns ``(N, Qx, Qy)`` -> ``(N, size, size)`` on the work grid."""
        qx, qy = self.shape
        if self.factor == 1.0:
            side = self.size
        else:
            side = max(qx, qy)
        ox, oy = int(self.offset[0]), int(self.offset[1])
        x = counts
        if (side, side) != (qx, qy):
            x = torch.nn.functional.pad(x, (oy, side - qy - oy, ox, side - qx - ox))
        if side == self.size:
            return x
        if side % self.size == 0:
            return torch.nn.functional.avg_pool2d(x.unsqueeze(1), side // self.size)[:, 0]
        return torch.nn.functional.interpolate(x.unsqueeze(1), size=(self.size, self.size), mode="bilinear",
                                               align_corners=False, antialias=True)[:, 0]

    def to_detector(self, ux: Any, uy: Any) -> tuple[Any, Any]:
        """Work-grid positions -> detector pixels ``(qx, qy)``."""
        return (ux + 0.5) * self.factor - 0.5 - self.offset[0], (uy + 0.5) * self.factor - 0.5 - self.offset[1]

    def to_work(self, qx: Any, qy: Any) -> tuple[Any, Any]:
        """Detector pixels -> work-grid positions (inverse of :meth:`to_detector`)."""
        return (qx + 0.5 + self.offset[0]) / self.factor - 0.5, (qy + 0.5 + self.offset[1]) / self.factor - 0.5
