"""The detector noise model: dose -> Poisson counts, Gaussian read noise, optional detector effects.

Every noisy pattern used for training, evaluation and the example cube comes from :func:`add_noise`.
Units: ``dose`` is the number of incident electrons per pattern; a clean pattern holds the fraction of
those electrons landing in each pixel, so ``dose * clean`` is the expected count per pixel. Read noise,
background and hot-pixel levels are in counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class DetectorEffects:
    """Optional detector imperfections, all off by default.

    read_noise : standard deviation of additive Gaussian noise, counts.
    background : constant dark level added to every pixel, counts (e.g. an unsubtracted offset).
    gain_sigma : relative standard deviation of a fixed per-pixel gain (flat-field error).
    hot_fraction, dead_fraction : fraction of pixels stuck high / reading zero.
    hot_level : value of a hot pixel, counts.
    saturation : clip each pattern's counts at this fraction of its largest count (a counter of limited
        depth, a saturated direct beam); 0 = off.
    """

    read_noise: float = 0.0
    background: float = 0.0
    gain_sigma: float = 0.0
    hot_fraction: float = 0.0
    dead_fraction: float = 0.0
    hot_level: float = 1000.0
    saturation: float = 0.0


def log_uniform(rng: np.random.Generator, low: float, high: float, size: int) -> np.ndarray:
    """``size`` values log-uniformly distributed between ``low`` and ``high``."""
    return np.exp(rng.uniform(np.log(low), np.log(high), size))


def add_noise(
    clean: torch.Tensor,
    dose: np.ndarray | float,
    generator: torch.Generator,
    effects: DetectorEffects = DetectorEffects(),
) -> torch.Tensor:
    """Noisy counts ``(N, Qx, Qy)`` float32 from clean patterns (fractions per pixel) and doses.

    counts = gain * Poisson(dose * clean), clipped at the saturation level, + background + Normal(0,
    read_noise), with hot and dead pixels set last. Deterministic for a given ``generator`` state.
    """
    if clean.ndim != 3:
        raise ValueError(f"clean patterns must be (N, Qx, Qy), got shape {tuple(clean.shape)}")
    n = clean.shape[0]
    d = torch.as_tensor(np.broadcast_to(np.asarray(dose, dtype=np.float64), (n,)).copy(), dtype=clean.dtype)
    lam = clean.clamp_min(0) * d.view(n, 1, 1).to(clean.device)
    counts = torch.poisson(lam, generator=generator)
    e = effects
    if e.gain_sigma:
        counts = counts * (1 + e.gain_sigma * torch.randn(clean.shape[1:], generator=generator))
    if e.saturation:
        counts = torch.minimum(counts, e.saturation * counts.flatten(1).amax(1).view(n, 1, 1))
    if e.background:
        counts = counts + e.background
    if e.read_noise:
        counts = counts + e.read_noise * torch.randn(counts.shape, generator=generator)
    if e.hot_fraction or e.dead_fraction:
        u = torch.rand(counts.shape, generator=generator)
        counts = torch.where(u < e.dead_fraction, torch.zeros_like(counts), counts)
        counts = torch.where(u > 1 - e.hot_fraction, torch.full_like(counts, e.hot_level), counts)
    return counts.to(torch.float32)
