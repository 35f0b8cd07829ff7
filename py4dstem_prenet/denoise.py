"""Denoising: the U-Net + CBAM network applied pattern by pattern, counts in, counts out (the pass over a
cube is :func:`pipeline.transform`)."""

from __future__ import annotations

import torch

from .normalization import from_network, to_network
from .runner import apply_network
from .weights import LoadedModel


def denoise_block(loaded: LoadedModel, counts: torch.Tensor) -> torch.Tensor:
    """Denoised counts ``(n, Qx, Qy)`` for noisy counts ``(n, Qx, Qy)`` (float32, on the net's device)."""
    x, scale = to_network(counts)
    y = apply_network(loaded, x)
    return from_network(y, scale)
