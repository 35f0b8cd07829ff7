"""Beam centre, coarse to fine: the U-Net heatmap network + weighted centre of mass proposes candidate
direct beams, the pattern's point symmetry helps choose among them, a refinement on the disk itself
measures the chosen one, and the scan context catches the wrong disks left.

The centre network maps a normalised pattern (see :mod:`normalization`) to logits whose softmax over
the detector is a probability map of the optical-axis position; during training it is pulled towards a
Gaussian of standard deviation ``heatmap_sigma`` pixels at the true ``(qx0, qy0)`` (cross-entropy) and
its weighted centre of mass towards the true position. The sub-pixel centre is the weighted centre of
mass of the map around its maximum (:func:`geometry.weighted_com`); the probability inside that window
is the per-pattern confidence in [0, 1] (close to 1: one unambiguous peak).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from . import geometry
from .ellipse import centred_sum
from .normalization import detector_to_work, to_network, to_work_grid, work_to_detector
from .runner import apply_network, map_batches, resolve_device, to_device
from .weights import LoadedModel, load_model


@dataclass
class Origins:
    """Measured optical-axis positions over the scan, pixels (py4DSTEM axes), and confidences in [0, 1]."""

    qx0: np.ndarray
    qy0: np.ndarray
    confidence: np.ndarray


def center_block(loaded: LoadedModel, counts: torch.Tensor, near: tuple[np.ndarray, np.ndarray] | None = None,
                 spread: float = 4.0, candidates: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate centres ``(qx0, qy0, confidence)``, each ``(n, candidates)`` (detector pixels), for
    counts ``(n, Qx, Qy)`` on the network's device, strongest first.

    The network sees the pattern averaged down to its work grid (``input["work_size"]``, see
    :func:`normalization.to_work_grid`; the full pattern when there is none). Each candidate is a local
    maximum of the probability map, placed by the weighted centre of mass of the map around it; its
    confidence is the probability inside that window.

    With ``near = (qx, qy)`` (detector pixels) there is one candidate: the peak of the map within
    ``spread`` detector pixels of that point, however weak it is there.
    """
    inp = loaded.entry.input
    work, (fx, fy) = to_work_grid(counts, inp.get("work_size"))
    x, _ = to_network(work)
    prob = heatmap(apply_network(loaded, x)[:, 0]).double()
    n, h, w = prob.shape
    gx = torch.arange(h, dtype=prob.dtype, device=prob.device).view(1, -1, 1)
    gy = torch.arange(w, dtype=prob.dtype, device=prob.device).view(1, 1, -1)
    if near is not None:
        px, py = (torch.as_tensor(detector_to_work(np.asarray(v, np.float64), f), dtype=prob.dtype,
                                  device=prob.device).view(-1, 1) for v, f in zip(near, (fx, fy), strict=True))
        radius = max(spread / min(fx, fy), 1.0)
    else:
        peaks = prob * (prob == F.max_pool2d(prob[:, None], 3, 1, 1)[:, 0])
        idx = peaks.reshape(n, -1).topk(min(candidates, h * w), dim=1).indices
        px, py = (idx // w).to(prob.dtype), (idx % w).to(prob.dtype)
        radius = 1.5
    out = []
    for j in range(px.shape[1]):
        prior = (((gx - px[:, j].view(-1, 1, 1)) ** 2 + (gy - py[:, j].view(-1, 1, 1)) ** 2) <= radius**2)
        qx, qy, mass = geometry.weighted_com(prob, int(inp["com_window"]), float(inp["com_floor"]),
                                             prior.to(prob.dtype) + 1e-300)
        out.append((work_to_detector(qx.cpu().numpy(), fx), work_to_detector(qy.cpu().numpy(), fy),
                    mass.clamp(0, 1).cpu().numpy()))
    return tuple(np.stack(v, axis=1) for v in zip(*out, strict=True))


def symmetry_scores(counts: torch.Tensor, qx: np.ndarray, qy: np.ndarray, n_r: int = 24, n_angles: int = 32,
                    reach: float = 0.3) -> np.ndarray:
    """Point (Friedel) symmetry of each pattern about ``(qx, qy)`` (pixels; ``(n,)`` or ``(n, k)`` for k
    points per pattern): the correlation coefficient between the square-rooted pattern at ``c + u`` and at
    ``c - u`` for ``n_r x n_angles`` offsets ``u`` out to ``reach`` times the detector side (bilinear
    sampling, zero outside). Close to 1 about the optical axis of a kinematical pattern, low about a
    diffracted disk. Returns the scores, shaped like ``qx``."""
    n, h, w = counts.shape
    cx = torch.as_tensor(np.asarray(qx, np.float32), device=counts.device).reshape(n, -1)
    cy = torch.as_tensor(np.asarray(qy, np.float32), device=counts.device).reshape(n, -1)
    r = torch.linspace(2.0, reach * min(h, w), n_r, device=counts.device)[:, None]
    a = torch.arange(n_angles, device=counts.device)[None] * (math.pi / n_angles)
    ux, uy = (r * torch.cos(a)).reshape(1, 1, -1), (r * torch.sin(a)).reshape(1, 1, -1)
    img = counts.clamp_min(0).sqrt().unsqueeze(1).float()

    def sample(px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
        grid = torch.stack([py * (2.0 / (w - 1)) - 1.0, px * (2.0 / (h - 1)) - 1.0], dim=-1)
        return F.grid_sample(img, grid, align_corners=True, padding_mode="zeros")[:, 0]  # (n, k, m)

    p = sample(cx[..., None] + ux, cy[..., None] + uy)
    q = sample(cx[..., None] - ux, cy[..., None] - uy)
    p, q = p - p.mean(-1, keepdim=True), q - q.mean(-1, keepdim=True)
    score = (p * q).sum(-1) / (p.norm(dim=-1) * q.norm(dim=-1)).clamp_min(1e-12)
    return score.cpu().numpy().reshape(np.shape(qx))


def scan_outliers(qx0: np.ndarray, qy0: np.ndarray, threshold: float = 2.0) -> tuple[np.ndarray, np.ndarray,
                                                                                      np.ndarray]:
    """Origins that disagree with the smooth descan drift: a robust parabolic fit of ``(qx0, qy0)``
    across the scan (py4DSTEM's ``fit_origin``), and the positions further than ``threshold`` pixels
    (or 4 robust standard deviations, whichever is larger) from it. Returns (outlier mask, fit x, fit y)."""
    from py4DSTEM.process.calibration.origin import fit_origin

    fx, fy, _, _ = fit_origin((qx0, qy0), fitfunction="parabola", robust=True, robust_steps=3, robust_thresh=2)
    dev = np.hypot(qx0 - fx, qy0 - fy)
    sigma = 1.4826 * np.median(np.abs(dev - np.median(dev)))
    return dev > max(threshold, 4 * sigma), np.asarray(fx), np.asarray(fy)


def heatmap(logits: torch.Tensor) -> torch.Tensor:
    """Probability map ``(N, Qx, Qy)``: the softmax of the centre network's logits over each pattern."""
    n = logits.shape[0]
    return torch.softmax(logits.reshape(n, -1).float(), dim=1).reshape(logits.shape)


#: Choosing among the network's candidates: symmetry score + SYMMETRY_PRIOR * ln(network probability),
#: for patterns of at least SYMMETRY_MIN_COUNTS counts (below, the score is too noisy and the network's
#: ranking is kept). Chosen on held-out patterns, the example cube and on-zone Si (see the evaluation).
SYMMETRY_PRIOR = 0.3
SYMMETRY_MIN_COUNTS = 1500.0


def locate(loaded: LoadedModel, counts: torch.Tensor, near: tuple[np.ndarray, np.ndarray] | None = None,
           refine: bool = True, max_move: float = 3.0, candidates: int = 5
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coarse-to-fine centres of counts ``(n, Qx, Qy)``: the network proposes the ``candidates``
    strongest peaks of its probability map (:func:`center_block`); the point symmetry of the pattern
    about each (:func:`symmetry_scores`) weighs in (:data:`SYMMETRY_PRIOR`): the network alone picks a
    bright diffracted disk in some thick crystals, while the optical axis is the centre of symmetry of a
    pattern near a zone axis. Then :func:`refine_on_disk` measures the chosen disk. A refinement that
    moves further than ``max_move`` pixels has left the disk (overlapping CBED disks, a brighter
    neighbour) and is discarded for that pattern. Returns ``(qx0, qy0, confidence)``, the confidence
    being the network's probability of the chosen peak.
    """
    qx, qy, conf = center_block(loaded, counts, near, candidates=1 if near is not None else candidates)
    pick = np.zeros(len(qx), dtype=int)
    if qx.shape[1] > 1:
        score = symmetry_scores(counts, qx, qy) + SYMMETRY_PRIOR * np.log(conf + 1e-6)
        enough = counts.clamp_min(0).sum((1, 2)).cpu().numpy() >= SYMMETRY_MIN_COUNTS
        pick = np.where(enough, score.argmax(axis=1), 0)
    rows = np.arange(len(qx))
    qx, qy, conf = qx[rows, pick], qy[rows, pick], conf[rows, pick]
    if refine:
        rx, ry = refine_on_disk(counts, qx, qy)
        keep = np.hypot(rx - qx, ry - qy) <= max_move
        qx, qy = np.where(keep, rx, qx), np.where(keep, ry, qy)
    return qx, qy, conf


def _measure_batch(start: int, block: np.ndarray, model: str, device: str, refine: bool,
                   with_sum: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """``(qx0, qy0, confidence, centred sum or None)`` of one batch (the per-batch work of the centre pass)."""
    dev = resolve_device(device)
    loaded = load_model("center", model, dev)
    loaded.module.to(dev)
    x = to_device(block, dev)
    qx, qy, conf = locate(loaded, x, refine=refine)
    return qx, qy, conf, centred_sum(x, qx, qy) if with_sum else None


def measure_origins(
    data: Any, model: str = "default", device: str = "auto", batch_size: int = 64, progress: bool = True,
    scan_context: bool = True, refine: bool = True, mean: bool = False, client: Any = None,
) -> tuple[Origins, LoadedModel, np.ndarray | None]:
    """Optical axis ``(qx0, qy0)`` of every pattern of a cube ``(Rx, Ry, Qx, Qy)``, pixels.

    Coarse to fine (:func:`locate`): the network's probability map picks the direct beam and places it
    to within a work pixel; with ``refine`` the centre of the disk itself is then measured around that
    point (the evaluation gives the figures).

    With ``scan_context`` (scans of at least 4 x 4 positions), patterns whose centre disagrees with the
    smooth descan drift of the rest (:func:`scan_outliers`) are measured again with the peak chosen near
    the drift's prediction: in thick or tilted crystals another disk can outshine the direct beam, but
    only the direct beam follows the drift. Each position is still measured on its own pattern.

    With ``mean`` the same pass also accumulates the mean pattern with every optical axis moved to the
    detector centre (at the final measured origins), returned third (else ``None``). ``client``: a
    ``dask.distributed.Client`` to spread the batches over (:func:`runner.map_batches`).
    """
    fn = partial(_measure_batch, model=model, device=str(device), refine=refine, with_sum=mean)
    n = int(data.shape[0]) * int(data.shape[1])
    res = np.empty((3, n))
    total = np.zeros(tuple(data.shape[2:]), dtype=np.float64) if mean else None
    for start, (qx, qy, conf, part) in map_batches(fn, data, batch_size, progress, "centre", client):
        res[:, start:start + len(qx)] = qx, qy, conf
        if mean:
            total += part
    qx0, qy0, conf = (r.reshape(data.shape[:2]) for r in res)
    dev = resolve_device(device)
    loaded = load_model("center", model, dev)
    loaded.module.to(dev)
    if scan_context and min(data.shape[:2]) >= 4:
        bad, fx, fy = scan_outliers(qx0, qy0)
        for start in range(0, int(bad.sum()), batch_size):
            rx, ry = (i[start:start + batch_size] for i in np.nonzero(bad))
            block = np.stack([np.asarray(data[a, b], dtype=np.float32) for a, b in zip(rx, ry, strict=True)])
            x = torch.from_numpy(block).to(dev)
            old = qx0[rx, ry], qy0[rx, ry]
            qx0[rx, ry], qy0[rx, ry], conf[rx, ry] = locate(loaded, x, (fx[rx, ry], fy[rx, ry]), refine)
            if mean:
                total += centred_sum(x, qx0[rx, ry], qy0[rx, ry]) - centred_sum(x, *old)
    return Origins(qx0, qy0, conf), loaded, None if total is None else total / n


def refine_on_disk(counts: torch.Tensor, qx: np.ndarray, qy: np.ndarray, iterations: int = 4,
                   max_radius: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Refine centres ``(qx, qy)`` (pixels) on the direct-beam disk itself, batched.

    Each iteration reads the disk radius ``R`` (at most ``max_radius``, default a fifth of the
    detector) off the radial profile around the current estimate (where it falls to half its central
    value) and moves the estimate to the intensity centre of mass inside a soft-edged circle of radius
    ``R + 3`` px on the first iteration (so a start up to ~3 px off still sees the whole disk),
    ``R + 1.5`` px after. Only a window of ``R_max + 8`` px around the start is read. A disk of uniform
    intensity is found without bias when the start lies inside it; the network supplies that start (it
    finds the right disk, the refinement measures it).
    """
    n, h, w = counts.shape
    max_radius = 0.2 * min(h, w) if max_radius is None else max_radius
    half = int(math.ceil(max_radius)) + 8
    dev = counts.device
    off = torch.arange(-half, half + 1, device=dev)
    rows = torch.as_tensor(np.round(qx), dtype=torch.long, device=dev)[:, None] + off  # (n, k)
    cols = torch.as_tensor(np.round(qy), dtype=torch.long, device=dev)[:, None] + off
    valid = (((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]).to(torch.float64)
    c = counts[torch.arange(n, device=dev)[:, None, None], rows.clamp(0, h - 1)[:, :, None],
               cols.clamp(0, w - 1)[:, None, :]].to(torch.float64).clamp_min(0) * valid
    flat, ones = c.view(n, -1), valid.view(n, -1)
    gx, gy = rows.to(torch.float64)[:, :, None], cols.to(torch.float64)[:, None, :]
    px = torch.as_tensor(qx, dtype=torch.float64, device=dev).view(n, 1, 1)
    py = torch.as_tensor(qy, dtype=torch.float64, device=dev).view(n, 1, 1)
    nbins = int(max_radius) + 2
    for it in range(iterations):
        r = torch.hypot(gx - px, gy - py)
        idx = r.round().long().clamp(max=nbins - 1).view(n, -1)
        total = torch.zeros(n, nbins, dtype=torch.float64, device=dev).scatter_add_(1, idx, flat)
        prof = total / torch.zeros_like(total).scatter_add_(1, idx, ones).clamp_min(1)
        below = prof < 0.5 * prof[:, :2].mean(1, keepdim=True)
        below[:, -1] = True
        radius = below.float().argmax(1).to(torch.float64).clamp(1.5, max_radius).view(n, 1, 1)
        wts = c * torch.sigmoid((radius + (3.0 if it == 0 else 1.5) - r) / 0.5)
        norm = wts.sum((1, 2), keepdim=True).clamp_min(1e-12)
        px, py = (wts * gx).sum((1, 2), keepdim=True) / norm, (wts * gy).sum((1, 2), keepdim=True) / norm
    return px.view(n).cpu().numpy(), py.view(n).cpu().numpy()
