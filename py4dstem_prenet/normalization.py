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

import torch


def to_network(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Counts ``(N, Qx, Qy)`` -> network input ``(N, 1, Qx, Qy)`` in [0, 1] and scales ``(N,)``."""
    root = counts.clamp_min(0).sqrt()
    scale = root.flatten(1).amax(dim=1).clamp_min(1e-12)
    return (root / scale.view(-1, 1, 1)).unsqueeze(1), scale


def from_network(y: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Network output ``(N, 1, Qx, Qy)`` in normalised square-root space -> counts ``(N, Qx, Qy)``."""
    return (y[:, 0] * scale.view(-1, 1, 1)).square()
