"""Denoising: the U-Net + CBAM network applied pattern by pattern, counts in, counts out."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .normalization import from_network, to_network
from .runner import apply_network, iter_batches, resolve_device, write_block
from .weights import LoadedModel, load_model


def denoise_block(loaded: LoadedModel, counts: torch.Tensor) -> torch.Tensor:
    """Denoised counts ``(n, Qx, Qy)`` for noisy counts ``(n, Qx, Qy)`` (float32, on the net's device)."""
    x, scale = to_network(counts)
    y = apply_network(loaded, x)
    return from_network(y, scale)


def denoise(
    data: Any, model: str = "default", device: str = "auto", batch_size: int = 64,
    progress: bool = True, out: Any = None,
) -> tuple[Any, LoadedModel]:
    """Denoise every pattern of a cube ``(Rx, Ry, Qx, Qy)`` (counts) into ``out`` (float32 counts).

    ``out`` defaults to a new NumPy array; pass an ``h5py.Dataset`` to stream to disk. Returns ``out``
    and the loaded model (for provenance).
    """
    dev = resolve_device(device)
    loaded = load_model("denoise", model)
    loaded.module.to(dev)
    out = np.empty(data.shape, dtype=np.float32) if out is None else out
    for start, block in iter_batches(data, batch_size, progress, "denoise"):
        res = denoise_block(loaded, torch.from_numpy(block).to(dev))
        write_block(out, start, res.cpu().numpy())
    return out, loaded
