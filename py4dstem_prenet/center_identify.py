"""Identification stage of the beam centre: which disk is the direct beam.

The centre network maps a normalised pattern on its work grid (:class:`normalization.WorkGrid`: any
detector size, an exact map back to detector pixels) to logits whose softmax is a probability map of the
optical-axis position. Its strongest local maxima are the candidate direct beams. The point (Friedel)
symmetry of the pattern about a point (:func:`symmetry_scores`) helps choose among them: the optical axis
is the centre of symmetry of a kinematical pattern, a diffracted disk is not.

Both work on pedestal-subtracted intensities (:func:`disk_fit.background_level`) and are unchanged by any
positive scale of the intensities. Positions are detector pixels, py4DSTEM axes.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F

from . import geometry
from .disk_fit import background_level, impulse_mask
from .normalization import WorkGrid, to_network
from .runner import apply_network
from .weights import LoadedModel


def heatmap(logits: torch.Tensor) -> torch.Tensor:
    """Probability map ``(N, Qx, Qy)``: the softmax of the centre network's logits over each pattern."""
    n = logits.shape[0]
    return torch.softmax(logits.reshape(n, -1).float(), dim=1).reshape(logits.shape)


def network_input(counts: torch.Tensor, grid: WorkGrid, floor: float, cap: float,
                  mask: torch.Tensor | None = None) -> torch.Tensor:
    """The centre network's input ``(n, 1, size, size)``: the pattern (hot and dead pixels, those
    outside ``mask`` (``(n, Qx, Qy)``, True = good; default :func:`disk_fit.impulse_mask`), set to the
    pedestal) on its work grid, less its
    ``floor`` quantile (a fraction, 0..1; at most ``cap`` times the way from the minimum to the maximum,
    so that a large flat-topped (saturated) disk survives) and clipped at 0, normalised
    (:func:`normalization.to_network`). Subtracting it removes any pedestal and the diffuse floor that
    pulls the network off the disks; the input is unchanged by any positive scale of the intensities."""
    bg = background_level(counts).view(-1, 1, 1)
    good = impulse_mask(counts, bg.view(-1)) if mask is None else mask
    work = grid.apply(torch.where(good, counts.float(), bg))
    flat = work.flatten(1)
    lo, hi = flat.amin(1), flat.amax(1)
    level = torch.minimum(torch.quantile(flat, floor, dim=1), lo + cap * (hi - lo))
    return to_network((work - level.view(-1, 1, 1)).clamp_min(0))[0]


def network_candidates(loaded: LoadedModel, counts: torch.Tensor, candidates: int, floor: float, cap: float,
                       work_size: int | None = None, mask: torch.Tensor | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate centres ``(qx, qy, probability)``, each ``(n, candidates)`` (detector pixels), strongest
    first, for patterns ``counts (n, Qx, Qy)`` on the network's device.

    The network sees :func:`network_input` (``floor``, ``cap``) on its work grid (``work_size``, default the
    entry's ``input["work_size"]``). Each candidate is a local maximum of the probability map, placed by
    the weighted centre of mass of the map around it (:func:`geometry.weighted_com`); its probability is
    the map's mass in that window.
    """
    inp = loaded.entry.input
    grid = WorkGrid.for_shape(tuple(counts.shape), work_size or inp.get("work_size"))
    prob = heatmap(apply_network(loaded, network_input(counts, grid, floor, cap, mask))[:, 0]).double()
    n, h, w = prob.shape
    gx = torch.arange(h, dtype=prob.dtype, device=prob.device).view(1, -1, 1)
    gy = torch.arange(w, dtype=prob.dtype, device=prob.device).view(1, 1, -1)
    peaks = prob * (prob == F.max_pool2d(prob[:, None], 3, 1, 1)[:, 0])
    idx = peaks.reshape(n, -1).topk(min(candidates, h * w), dim=1).indices
    px, py = (idx // w).to(prob.dtype), (idx % w).to(prob.dtype)
    out = []
    for j in range(px.shape[1]):
        prior = (((gx - px[:, j].view(-1, 1, 1)) ** 2 + (gy - py[:, j].view(-1, 1, 1)) ** 2) <= 1.5**2)
        ux, uy, mass = geometry.weighted_com(prob, int(inp["com_window"]), float(inp["com_floor"]),
                                             prior.to(prob.dtype) + 1e-300)
        qx, qy = grid.to_detector(ux.cpu().numpy(), uy.cpu().numpy())
        out.append((qx, qy, mass.clamp(0, 1).cpu().numpy()))
    return tuple(np.stack(v, axis=1) for v in zip(*out, strict=True))


def symmetry_scores(counts: torch.Tensor, qx: np.ndarray, qy: np.ndarray, n_r: int = 24, n_angles: int = 32,
                    reach: float = 0.3, mask: torch.Tensor | None = None) -> np.ndarray:
    """Point (Friedel) symmetry of each pattern about ``(qx, qy)`` (pixels; ``(n,)`` or ``(n, k)`` for k
    points per pattern): the correlation coefficient between the square root of the pedestal-subtracted
    pattern at ``c + u`` and at ``c - u`` for ``n_r x n_angles`` offsets ``u`` out to ``reach`` times the
    detector's short side (bilinear sampling). Pairs with either end off the detector, or on a pixel that
    ``mask`` (``(n, Qx, Qy)`` bool, True = good) excludes, are left out. Close to 1 about the optical axis
    of a kinematical pattern, low about a diffracted disk. Returns the scores, shaped like ``qx``."""
    n, h, w = counts.shape
    cx = torch.as_tensor(np.asarray(qx, np.float32), device=counts.device).reshape(n, -1)
    cy = torch.as_tensor(np.asarray(qy, np.float32), device=counts.device).reshape(n, -1)
    r = torch.linspace(2.0, reach * min(h, w), n_r, device=counts.device)[:, None]
    a = torch.arange(n_angles, device=counts.device)[None] * (math.pi / n_angles)
    ux, uy = (r * torch.cos(a)).reshape(1, 1, -1), (r * torch.sin(a)).reshape(1, 1, -1)
    root = (counts.float() - background_level(counts).view(-1, 1, 1)).clamp_min(0).sqrt()
    good = torch.ones_like(root) if mask is None else mask.to(root.dtype).expand_as(root)
    img = torch.stack([root * good, good], 1)

    def sample(px: torch.Tensor, py: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        grid = torch.stack([py * (2.0 / (w - 1)) - 1.0, px * (2.0 / (h - 1)) - 1.0], dim=-1)
        s = F.grid_sample(img, grid, align_corners=True, padding_mode="zeros")  # (n, 2, k, m)
        inside = (px >= 0) & (px <= h - 1) & (py >= 0) & (py <= w - 1)
        return s[:, 0], inside & (s[:, 1] > 0.99)

    p, okp = sample(cx[..., None] + ux, cy[..., None] + uy)
    q, okq = sample(cx[..., None] - ux, cy[..., None] - uy)
    wts = (okp & okq).float()
    cnt = wts.sum(-1, keepdim=True).clamp_min(1)
    p = (p - (p * wts).sum(-1, keepdim=True) / cnt) * wts
    q = (q - (q * wts).sum(-1, keepdim=True) / cnt) * wts
    score = (p * q).sum(-1) / (p.norm(dim=-1) * q.norm(dim=-1)).clamp_min(1e-12)
    score = torch.where(cnt[..., 0] >= 8, score, torch.zeros_like(score))
    return score.cpu().numpy().reshape(np.shape(qx))


def symmetry_centre(counts: torch.Tensor, qx: np.ndarray, qy: np.ndarray, reach: float, step: float,
                    mask: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The most point-symmetric point of each pattern on a square grid of spacing ``max(step, reach / 8)``
    px within ``reach`` px of ``(qx, qy)`` (``(n,)``), then on a grid four times finer around it. Returns
    ``(qx, qy, symmetry score)``."""
    n = counts.shape[0]
    for spacing, extent in ((max(step, reach / 8), reach), (max(step, reach / 8) / 4, max(step, reach / 8))):
        k = int(round(extent / spacing))
        off = np.arange(-k, k + 1) * spacing
        gx = (np.asarray(qx)[:, None, None] + off[None, :, None] + 0 * off[None, None, :]).reshape(n, -1)
        gy = (np.asarray(qy)[:, None, None] + 0 * off[None, :, None] + off[None, None, :]).reshape(n, -1)
        score = np.concatenate([symmetry_scores(counts, gx[:, a:a + 64], gy[:, a:a + 64], mask=mask)
                                for a in range(0, gx.shape[1], 64)], 1)
        best = score.argmax(1)
        rows = np.arange(n)
        qx, qy, top = gx[rows, best], gy[rows, best], score[rows, best]
    return qx, qy, top
