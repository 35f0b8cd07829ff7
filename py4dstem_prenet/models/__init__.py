"""Network architectures, each a plain ``nn.Module`` built from a JSON-serialisable config."""

from __future__ import annotations

from typing import Any

from torch import nn

from .resnet import ResNetRegressor
from .unet import UNet

ARCHITECTURES: dict[str, type[nn.Module]] = {"unet": UNet, "resnet": ResNetRegressor}


def build_model(config: dict[str, Any]) -> nn.Module:
    """Build a network from ``{"name": "unet" | "resnet", ...keyword arguments...}``."""
    cfg = dict(config)
    name = cfg.pop("name", None)
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; known: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name](**cfg)


__all__ = ["ARCHITECTURES", "ResNetRegressor", "UNet", "build_model"]
