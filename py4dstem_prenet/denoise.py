"""Denoising: the U-Net + CBAM network applied pattern by pattern, counts in, counts out (the pass over a
cube is :func:`pipeline.transform`)."""

from __future__ import annotations

import torch

from .normalization import from_network, to_network
from .runner import apply_network
from .weights import LoadedModel


def denoise_input(counts: torch.Tensor, inp: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Network input and per-pattern scales for counts ``(n, Qx, Qy)``, or ``(n, 5, Qx, Qy)`` holding each
    pattern and its four scan neighbours (up, down, left, right) for a model with ``inp["neighbours"]``.

    Channels: the pattern normalised as in :func:`normalization.to_network`; the neighbours in the same
    units (square root, divided by the pattern's scale); with ``inp["noise_map"]`` a constant map of the
    shot-noise level in those units, ``0.5 / scale`` (the standard deviation of the square root of
    Poisson counts is 1/2), so the network knows how much noise there is to remove.
    """
    centre = counts[:, 0] if counts.ndim == 4 else counts
    x, scale = to_network(centre)
    parts = [x]
    if inp.get("neighbours", 0):
        if counts.ndim != 4:
            raise ValueError("this denoise model needs each pattern's scan neighbours (input (n, 5, Qx, Qy))")
        parts.append(counts[:, 1:].clamp_min(0).sqrt() / scale.view(-1, 1, 1, 1))
    if inp.get("noise_map", False):
        parts.append((0.5 / scale).view(-1, 1, 1, 1).expand_as(x))
    return torch.cat(parts, dim=1), scale


def denoise_block(loaded: LoadedModel, counts: torch.Tensor) -> torch.Tensor:
    """Denoised counts ``(n, Qx, Qy)`` for noisy counts ``(n, Qx, Qy)`` (or ``(n, 5, Qx, Qy)`` with the scan
    neighbours, see :func:`denoise_input`), float32 on the network's device."""
    x, scale = denoise_input(counts, loaded.entry.input)
    return from_network(apply_network(loaded, x), scale)
