"""Scan-consensus stage of the beam centre: the direct beam is the candidate that follows the smooth
descan across the whole scan.

Every pattern brings ``K`` measured candidates (positions in px, a per-pattern preference score and
whether its geometric fit succeeded). A robust smooth surface per axis (a plane, or a parabola in the
scan coordinates for scans of at least ``parabola_min`` positions a side) is found RANSAC-like: minimal
sets of positions, each with one of its candidates (the preferred one most often), propose a surface;
the surface that the most positions have a candidate near (within ``tolerance`` px) wins, and is refitted
on those candidates. Each position then takes its candidate nearest the surface when one is within
``tolerance``; otherwise its own preferred candidate, marked as disagreeing. Pure arithmetic on the
candidates: no pattern is read again. Deterministic (fixed random seed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Consensus:
    """Result of :func:`choose`: ``pick (Rx, Ry)`` the index of the chosen candidate; ``fx, fy (Rx, Ry)``
    the smooth surface (px; NaN when the scan is too small for one); ``agrees (Rx, Ry)`` the chosen
    candidate lies within the tolerance of the surface; ``changed (Rx, Ry)`` the choice differs from
    the pattern's own preferred candidate."""

    pick: np.ndarray
    fx: np.ndarray
    fy: np.ndarray
    agrees: np.ndarray
    changed: np.ndarray


def _design(shape: tuple[int, int], parabola: bool) -> np.ndarray:
    u, v = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    u, v = u.ravel(), v.ravel()
    cols = [np.ones_like(u), u, v] + ([u * u, u * v, v * v] if parabola else [])
    return np.stack(cols, 1)


def choose(qx: np.ndarray, qy: np.ndarray, valid: np.ndarray, score: np.ndarray, *, tolerance: float,
           trials: int, min_positions: int, parabola_min: int, seed: int = 0) -> Consensus:
    """Choose one of ``K`` candidates per scan position (see the module docstring).

    ``qx, qy, valid, score``: ``(Rx, Ry, K)``; ``valid`` marks candidates that may be chosen, ``score``
    the per-pattern preference (higher is better; the preferred candidate is the valid one of highest
    score). Scans of fewer than ``min_positions`` positions keep every preferred candidate.
    """
    rx, ry, k = qx.shape
    n = rx * ry
    cx, cy = qx.reshape(n, k), qy.reshape(n, k)
    ok = valid.reshape(n, k) & np.isfinite(cx) & np.isfinite(cy)
    s = np.where(ok, score.reshape(n, k), -np.inf)
    own = np.argmax(s, 1)
    nan = np.full((rx, ry), np.nan)
    if n < min_positions or not ok.any():
        return Consensus(own.reshape(rx, ry), nan, nan, np.zeros((rx, ry), bool), np.zeros((rx, ry), bool))
    a = _design((rx, ry), min(rx, ry) >= parabola_min)
    m = a.shape[1]
    rng = np.random.default_rng(seed)
    rows = np.arange(n)
    has = np.nonzero(ok.any(1))[0]

    def assign(fx: np.ndarray, fy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = np.where(ok, np.hypot(cx - fx[:, None], cy - fy[:, None]), np.inf)
        near = np.argmin(d, 1)
        return near, d[rows, near]

    def fit(idx: np.ndarray, pick: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sol, *_ = np.linalg.lstsq(a[idx], np.stack([cx[idx, pick], cy[idx, pick]], 1), rcond=None)
        return a @ sol[:, 0], a @ sol[:, 1]

    best = (-1, -np.inf, None)
    if len(has) >= m:
        for _ in range(trials):
            idx = rng.choice(has, size=m, replace=False)
            pick = own[idx].copy()
            swap = rng.random(m) < 0.3
            for i in np.nonzero(swap)[0]:
                choices = np.nonzero(ok[idx[i]])[0]
                pick[i] = rng.choice(choices)
            fx, fy = fit(idx, pick)
            near, dist = assign(fx, fy)
            inl = dist <= tolerance
            key = (int(inl.sum()), float(np.where(inl, s[rows, near], 0).sum()))
            if key > best[:2]:
                best = (*key, (fx, fy))
    if best[2] is None:
        return Consensus(own.reshape(rx, ry), nan, nan, np.zeros((rx, ry), bool), np.zeros((rx, ry), bool))
    fx, fy = best[2]
    for _ in range(3):  # refit on every agreeing position
        near, dist = assign(fx, fy)
        inl = dist <= tolerance
        if inl.sum() < m:
            break
        fx, fy = fit(np.nonzero(inl)[0], near[inl])
    near, dist = assign(fx, fy)
    agrees = dist <= tolerance
    pick = np.where(agrees, near, own)
    return Consensus(pick.reshape(rx, ry), fx.reshape(rx, ry), fy.reshape(rx, ry), agrees.reshape(rx, ry),
                     (pick != own).reshape(rx, ry))
