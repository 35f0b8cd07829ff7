"""Low-rank denoising over the scan: neighbouring (and all same-phase) patterns of a scan look alike, so
the ``(n, Qx * Qy)`` matrix of a batch of patterns is close to low rank, and its truncated singular value
decomposition keeps the signal and drops most of the noise.

The rank is not a user setting: :func:`py4dstem_prenet.denoise.plan_denoise` picks it per dataset with
the self-check's risk estimate (:mod:`selfcheck`), never with the truth.
"""

from __future__ import annotations

import torch

RANKS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32)


def _svd(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    flat = y.reshape(len(y), -1).double()
    return torch.linalg.svd(flat, full_matrices=False)


def project(y: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """The patterns ``y (n, Qx, Qy)`` projected onto the orthonormal ``basis (k, Qx * Qy)``; same shape and
    dtype (computed in float64)."""
    flat = y.reshape(len(y), -1).double()
    b = basis.double().to(y.device)
    return ((flat @ b.T) @ b).reshape(y.shape).to(y.dtype)


def lowrank_ladder(y: torch.Tensor, ranks: tuple[int, ...] = RANKS) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """The reconstructions of every rank in ``ranks`` below ``n`` from one decomposition (float64), and
    the right singular vectors ``(min(n, Qx * Qy), Qx * Qy)``."""
    u, s, vt = _svd(y)
    us = u * s
    return {k: (us[:, :k] @ vt[:k]).reshape(y.shape) for k in ranks if k < len(y)}, vt
