"""How work runs, as one validated object: device, batch size, progress bars, Dask client.

Every public entry point builds an :class:`Options` from its keyword arguments before it touches the
data, so a bad value is refused at once with a message that says what to pass instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .validation import InputError

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def check_device(device: str | torch.device) -> str:
    """``device`` as a string, if it is ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` and can be used
    here; a clear :class:`InputError` otherwise."""
    name = str(device)
    if not _DEVICE.match(name):
        raise InputError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"device={name!r} was asked for but PyTorch sees no CUDA GPU (is a CUDA build of "
                             "PyTorch installed?); use device='cpu' or 'auto'")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise InputError(f"device={name!r}: PyTorch sees only {torch.cuda.device_count()} GPU(s)")
    return name


def check_batch_size(batch_size: Any) -> int:
    """``batch_size`` if it is a positive integer (not a bool, float or string)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
        raise InputError(f"batch_size must be a positive integer (patterns per network call), got {batch_size!r}")
    if batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size}")
    return int(batch_size)


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
