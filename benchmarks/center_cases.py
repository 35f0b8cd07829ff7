"""Validation and evaluation cases for the beam centre, built cheaply without abTEM.

* ``analytic``: CBED-like single patterns: a direct disk (radius 2-25 px) with six weaker diffracted disks
  at 2.6 radii, optionally saturated, textured inside (dynamical-like contrast), in a broad halo, cut by
  the detector edge, overlapping its neighbours, at low dose, with read noise; Poisson counts.
* ``example``: the example cube's patterns (``py4dstem_prenet.example``), and the same scan cropped,
  padded, made non-square, with a pedestal and a scale, or with a hot pixel per pattern.

``seed`` separates the validation draw (tuning, seed 1) from the evaluation draw (seed 2). Every case is
``(name, patterns (N, Qx, Qy) float32 or a scan (Rx, Ry, Qx, Qy), truth qx, truth qy)``.
"""

from __future__ import annotations

import numpy as np

CONDITIONS = {
    "plain": {}, "saturated": {"sat": True}, "halo": {"halo": 0.5}, "texture": {"tex": 0.6},
    "edge-cut": {"cut": True}, "overlap": {"spacing": 1.6}, "low dose 1e3": {"dose": 1e3},
    "small disk": {"radius": (2.0, 5.0)}, "read noise 2": {"read": 2.0},
    "pedestal+scale": {"ped": 100.0, "scale": 1e-3},
}


def analytic(n: int, rng: np.random.Generator, q: int = 128, radius=(5.0, 25.0), dose: float = 1e4, sat=False,
             halo=0.0, tex=0.0, cut=False, spacing=2.6, read=0.0, ped=0.0, scale=1.0):
    """``n`` patterns ``(n, q, q)`` and their true direct-beam centres (px)."""
    g = np.arange(q)
    out, tx, ty = [], [], []
    for _ in range(n):
        r0 = rng.uniform(*radius)
        cx, cy = rng.uniform(q * 0.4, q * 0.6, 2)
        if cut:
            cy = rng.uniform(0.75 * r0, 0.95 * r0)
        d = np.hypot(g[:, None] - cx, g[None] - cy)
        disk = 1 / (1 + np.exp((d - r0) / 0.5))
        if tex:
            k = rng.normal(size=4) * 0.3
            wave = np.sin(k[0] * g[:, None] + k[1] * g[None]) * np.cos(k[2] * g[:, None] + k[3] * g[None])
            disk = disk * (1 + tex * wave)
        img = disk + halo * np.exp(-d**2 / (2 * (2.5 * r0) ** 2))
        phase = rng.uniform(0, np.pi)
        for a in range(6):
            th = a * np.pi / 3 + phase
            bx, by = cx + spacing * r0 * np.cos(th), cy + spacing * r0 * np.sin(th)
            img = img + rng.uniform(0.05, 0.3) / (1 + np.exp((np.hypot(g[:, None] - bx, g[None] - by) - r0) / 0.5))
        img = img / img.sum() * dose
        x = rng.poisson(img).astype(np.float64)
        if sat:
            x = np.minimum(x, np.percentile(x[d < r0], 30))
        x = x + read * rng.normal(size=x.shape)
        out.append(x * scale + ped)
        tx.append(cx)
        ty.append(cy)
    return np.asarray(out, np.float32), np.asarray(tx), np.asarray(ty)


def analytic_cases(seed: int, n: int = 32) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(name, *analytic(n, rng, **kw)) for name, kw in CONDITIONS.items()]


def example_cases(rng_seed: int = 0) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """The example scan (16 x 16, 128 px) and variants; truth shifted with the crops."""
    from py4dstem_prenet.example import load_example

    cube, truth = load_example()
    d = np.asarray(cube.data)
    tx, ty = truth["qx0"], truth["qy0"]
    hot = d.copy()
    rng = np.random.default_rng(rng_seed)
    for i in np.ndindex(d.shape[:2]):
        hot[i][tuple(rng.integers(0, 128, 2))] = 65535.0
    return [("example 128", d, tx, ty), ("example x1e-3 + 100", d * 1e-3 + 100, tx, ty),
            ("example crop 96", d[:, :, 16:112, 16:112], tx - 16, ty - 16),
            ("example crop 64", d[:, :, 32:96, 32:96], tx - 32, ty - 32),
            ("example 128 x 96", d[:, :, :, 16:112], tx, ty - 16),
            ("example pad 256", np.pad(d, ((0, 0), (0, 0), (64, 64), (64, 64))), tx + 64, ty + 64),
            ("example hot pixel", hot, tx, ty)]
