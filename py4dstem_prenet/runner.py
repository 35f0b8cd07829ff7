"""Running the networks: the device to run on, batches moved to it, a U-Net applied to any pattern size.

(The passes over a cube are :mod:`engine` steps; reading batches is :mod:`batches`.)
"""

from __future__ import annotations

import numpy as np
import torch

from .validation import check_device
from .weights import LoadedModel


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cpu"``, ``"cuda"``, ``"cuda:1"`` as given.

    Anything else (``"gpu"``, ``"meta"``, ...), CUDA when PyTorch sees no GPU, or a GPU index beyond the
    ones present is an :class:`~validation.InputError` naming the choices (:func:`validation.check_device`).
    """
    name = check_device(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def to_device(block: np.ndarray, device: torch.device) -> torch.Tensor:
    """A batch as a tensor on ``device``; on CUDA through pinned memory with an asynchronous copy, so the
    transfer overlaps work already queued on the GPU."""
    x = torch.from_numpy(block)
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Zero-pad the last two axes of ``x`` at the high end up to a multiple; returns the original size."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    return (torch.nn.functional.pad(x, (0, pw, 0, ph)) if ph or pw else x), (h, w)


@torch.inference_mode()
def apply_network(loaded: LoadedModel, x: torch.Tensor) -> torch.Tensor:
    """Run a loaded fully convolutional U-Net on ``x (N, C, H, W)`` of any
    size: padded to a multiple of ``2**depth``, then cropped back."""
    xp, (h, w) = pad_to_multiple(x, 2 ** loaded.entry.architecture.get("depth", 4))
    return loaded.module(xp)[..., :h, :w]
