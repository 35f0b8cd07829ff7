"""How work runs, as one validated object: device, batch size, progress bars, Dask client.

Every public entry point builds an :class:`Options` from its keyword arguments before it touches the
data, so a bad value is refused at once with a message that says what to pass instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .validation import check_batch_size, check_device


@dataclass(frozen=True)
class Options:
    """``device``: ``"auto"`` (CUDA when PyTorch sees a GPU, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``;
    ``batch_size``: patterns per network call (memory is bounded by it); ``progress``: tqdm bars;
    ``client``: a ``dask.distributed.Client`` to spread the batches over (same result as in process)."""

    device: str = "auto"
    batch_size: int = 64
    progress: bool = True
    client: Any = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "device", check_device(self.device))
        object.__setattr__(self, "batch_size", check_batch_size(self.batch_size))
        object.__setattr__(self, "progress", bool(self.progress))

    @property
    def torch_device(self) -> torch.device:
        """The resolved device (``"auto"`` -> CUDA or CPU)."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)
