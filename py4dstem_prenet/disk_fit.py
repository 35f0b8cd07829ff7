"""Measurement stage of the beam centre: a sub-pixel geometric fit of a disk's edge (or a ring's ridge).

Rays leave a start point in ``n_rays`` directions; along each, the pattern (smoothed, with masked and
impulse pixels filled from their neighbours) is sampled every ``step`` px. The edge of a disk is where
the profile falls most steeply inside a window around the disk radius (the radius is measured from the
data: the steepest fall of the ray-averaged profile); a ring's ridge is where it peaks. Sub-pixel by a
parabola through the three samples around the extreme. Rays whose feature is weak against the others,
or that leave the detector or cross masked pixels near the feature, are dropped. A circle is fitted to
the feature points by iteratively reweighted Gauss-Newton least squares with Tukey's biweight, and the
rays are cast again from the fitted centre (``iterations`` times), so the fit converges from several
pixels away and is not pulled by what lies inside the disk (saturated plateaus, dynamical contrast) or
outside it (halos, neighbouring disks).

Only gradients and ratios of pedestal-subtracted intensities enter: a constant pedestal or any positive
scale of the intensities gives the same fit. Positions are pixels, py4DSTEM axes (qx = row, qy = column,
pixel centres at integers). Everything is batched on the patterns' device.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class FitSettings:
    """Numbers of the geometric fit (px unless stated). They live in the centre model's manifest entry
    (``postprocess["fit"]``), chosen by ``benchmarks/center_tune.py`` on validation data."""

    n_rays: int                 #: rays per fit
    iterations: int              #: casts of the rays (each from the last fitted centre)
    step: float                #: radial sample spacing
    blur: float                #: Gaussian pre-smoothing (standard deviation)
    max_radius: float          #: largest radius considered, fraction of the detector's short side
    min_radius: float          #: smallest radius considered
    first_window: float        #: first cast: search within +-(3 + first_window R) of the radius
    window: float             #: later casts: +-(max(1.5, window R) + the last move)
    min_strength: float        #: a ray's feature must reach this fraction of the median ray's
    tukey: float             #: Tukey biweight constant, in robust standard deviations
    min_scale: float           #: floor of the robust residual scale
    min_rays: float           #: a fit needs this fraction of the rays (and at least 6)
    min_contrast: float       #: and this signal-to-noise ratio of its edge (:func:`_contrast`)
    snap: float                #: mean-shift kernel (standard deviation) that first moves the start
    #: onto the nearby disk (times the caller's start uncertainty scale)
    correlation: float         #: length along the edge over which ray errors are correlated
    sigma_floor: float        #: systematic floor added in quadrature to the standard error

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> FitSettings:
        """Settings from a manifest dict (every field, nothing else)."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        if set(values) != known:
            raise ValueError(f"disk-fit settings: missing {sorted(known - set(values))}, "
                             f"unknown {sorted(set(values) - known)}")
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DiskFit:
    """Result of :func:`fit_disk` for ``n`` patterns (NumPy arrays of shape ``(n,)``).

    ``qx, qy``: fitted centre (px); ``radius`` (px); ``sigma``: standard error of the centre per axis
    (px, from the fit's covariance scaled by its residuals); ``rays``: fraction of the rays used;
    ``rms``: robust scale of the radial residuals (px); ``contrast``: the feature's signal-to-noise ratio
    on the fitted circle (:func:`_contrast`); ``ok``: the fit succeeded (enough rays, a finite radius
    inside the search range, converged, ``contrast >= min_contrast``)."""

    qx: np.ndarray
    qy: np.ndarray
    radius: np.ndarray
    sigma: np.ndarray
    rays: np.ndarray
    rms: np.ndarray
    contrast: np.ndarray
    ok: np.ndarray


def background_level(counts: torch.Tensor) -> torch.Tensor:
    """Robust pedestal ``(n,)`` of patterns ``(n, Qx, Qy)``: the lowest mean over blocks of 4 x 4 pixels
    (one dead or hot pixel cannot set it; a constant offset is recovered exactly)."""
    k = max(1, min(4, min(counts.shape[-2:]) // 8))
    return F.avg_pool2d(counts.unsqueeze(1).float(), k).flatten(1).amin(1)


def _shifts(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 neighbours of every pixel of ``x (n, H, W)`` (edge pixels replicated), as 8 tensors."""
    p = F.pad(x.unsqueeze(1), (1, 1, 1, 1), mode="replicate")[:, 0]
    h, w = x.shape[-2:]
    return [p[:, 1 + a:1 + a + h, 1 + b:1 + b + w] for a in (-1, 0, 1) for b in (-1, 0, 1) if a or b]


def impulse_mask(counts: torch.Tensor, bg: torch.Tensor) -> torch.Tensor:
    """Good-pixel mask ``(n, Qx, Qy)``: False for isolated impulses of one pattern, judged against the
    8 neighbours after subtracting the pedestal ``bg (n,)``: a hot pixel exceeds 4 times its brightest
    neighbour and twice the pattern's brightest 4 x 4 block mean; a dead pixel lies below a tenth of its
    darkest neighbour, all of them bright (above a tenth of that block level). Ratios only: independent
    of the intensity scale."""
    x = counts.float() - bg.view(-1, 1, 1)
    nb = _shifts(x)
    hi, lo = nb[0], nb[0]
    for v in nb[1:]:
        hi, lo = torch.maximum(hi, v), torch.minimum(lo, v)
    k = max(1, min(4, min(x.shape[-2:]) // 8))
    level = F.avg_pool2d(x.unsqueeze(1), k).flatten(1).amax(1).clamp_min(1e-30).view(-1, 1, 1)
    hot = (x > 4 * hi.clamp_min(0)) & (x > 2 * level)
    dead = (x < 0.1 * lo) & (lo > 0.1 * level)
    return ~(hot | dead)


def _blur1d(x: torch.Tensor, k: list[float], dim: int) -> torch.Tensor:
    """Zero-padded convolution of ``x (n, 1, H, W)`` with the symmetric kernel ``k`` along ``dim`` (2: rows,
    3: columns), as shifted sums."""
    r = (len(k) - 1) // 2
    p = F.pad(x, (r, r, 0, 0) if dim == 3 else (0, 0, r, r))
    n = x.shape[dim]
    out = p.narrow(dim, 0, n) * k[0]
    for i in range(1, len(k)):
        out = out + p.narrow(dim, i, n) * k[i]
    return out


def smoothed(counts: torch.Tensor, good: torch.Tensor, blur: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked, normalised Gaussian smoothing: ``(value, support)``, each ``(n, 1, Qx, Qy)``; ``value`` is
    the smoothed pattern from the good pixels only, ``support`` the smoothed mask (0 outside the
    detector, about 1 where every pixel nearby is good)."""
    w = good.float().unsqueeze(1)
    x = counts.float().unsqueeze(1) * w
    if blur > 0:
        r = max(1, int(math.ceil(3 * blur)))
        t = torch.arange(-r, r + 1, dtype=torch.float32, device=x.device)
        k = torch.exp(-0.5 * (t / blur) ** 2)
        k = (k / k.sum()).tolist()
        x, w = (_blur1d(_blur1d(v, k, 2), k, 3) for v in (x, w))
    return x / w.clamp_min(1e-6), w


def _masked_median(v: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Median over the last axis of ``v`` where ``keep`` (NaN where nothing is kept)."""
    return torch.nanmedian(torch.where(keep, v, torch.full_like(v, float("nan"))), dim=-1).values


def _parabola(g: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """Sub-sample offset in ``[-0.5, 0.5]`` of the extreme of ``g (n, K, J)`` at index ``j (n, K)``."""
    jm, jp = (j - 1).clamp(0, g.shape[-1] - 1), (j + 1).clamp(0, g.shape[-1] - 1)
    a, b, c = (g.gather(-1, i.unsqueeze(-1))[..., 0] for i in (jm, j, jp))
    den = a - 2 * b + c
    return torch.where(den.abs() > 1e-12, 0.5 * (a - c) / den, torch.zeros_like(den)).clamp(-0.5, 0.5)


def _circle_fit(px: torch.Tensor, py: torch.Tensor, keep: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor,
                r: torch.Tensor, s: FitSettings, steps: int = 6):
    """Robust geometric circle fit to points ``(n, K)`` (``keep`` marks usable ones), from ``(cx, cy, r)``.
    Returns ``(cx, cy, r, weights, residuals, scale, normal matrix)`` (float64)."""
    px, py, kf = px.double(), py.double(), keep.double()
    cx, cy, r = cx.double(), cy.double(), r.double()
    eye = torch.eye(3, dtype=torch.float64, device=px.device)
    for _ in range(steps):
        dx, dy = px - cx[:, None], py - cy[:, None]
        d = torch.hypot(dx, dy).clamp_min(1e-9)
        e = d - r[:, None]
        scale = (1.4826 * _masked_median(e.abs(), keep)).nan_to_num(s.min_scale).clamp_min(s.min_scale)
        u = e / (s.tukey * scale[:, None])
        w = kf * (1 - u**2).clamp_min(0) ** 2
        jac = torch.stack([-dx / d, -dy / d, -torch.ones_like(d)], -1)  # d e / d (cx, cy, r)
        jw = jac * w[..., None]
        a = jw.transpose(1, 2) @ jac
        b = -(jw * e[..., None]).sum(1)
        a = a + eye * (1e-9 * a.diagonal(dim1=1, dim2=2).sum(-1).clamp_min(1e-12))[:, None, None]
        delta = torch.linalg.solve(a, b.unsqueeze(-1))[..., 0].nan_to_num(0.0)
        cx, cy, r = cx + delta[:, 0], cy + delta[:, 1], r + delta[:, 2]
    dx, dy = px - cx[:, None], py - cy[:, None]
    e = torch.hypot(dx, dy) - r[:, None]
    return cx, cy, r, w, e, scale, a


def _mean_shift(sample: Any, cx: torch.Tensor, cy: torch.Tensor, width: float, dev: torch.device,
                steps: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """A few mean-shift steps of starts ``(cx, cy)`` over the smoothed pattern (``sample`` reads it),
    Gaussian kernel of standard deviation ``width`` px, out to 2.5 ``width``."""
    half = int(math.ceil(2.5 * width))
    off = torch.arange(-half, half + 1, dtype=torch.float32, device=dev)
    ox, oy = off.view(1, -1, 1), off.view(1, 1, -1)
    kern = torch.exp(-0.5 * (ox**2 + oy**2) / width**2)
    for _ in range(steps):
        px, py = cx.float().view(-1, 1, 1) + ox, cy.float().view(-1, 1, 1) + oy
        vs = sample(px.expand(-1, -1, oy.shape[-1]), py.expand(-1, ox.shape[1], -1))
        wt = vs[:, 0].clamp_min(0) * (vs[:, 1] >= 0.5) * kern
        tot = wt.sum((1, 2))
        has = tot > 0
        cx = torch.where(has, (wt * px).sum((1, 2)) / tot.clamp_min(1e-30), cx.float()).double()
        cy = torch.where(has, (wt * py).sum((1, 2)) / tot.clamp_min(1e-30), cy.float()).double()
    return cx, cy


def _contrast(sample: Any, cx: torch.Tensor, cy: torch.Tensor, r: torch.Tensor, ux: torch.Tensor,
              uy: torch.Tensor, d: float, feature: str, h: int, w: int, correlation: float) -> torch.Tensor:
    """Signal-to-noise ratio of the feature on the fitted circle, from every ray (not only those the fit
    kept): the mean step ``v(R - d) - v(R + d)`` (a ridge: ``v(R) - (v(R - d) + v(R + d)) / 2``) over its
    standard error across the rays (independent rays: one per ``correlation`` px of arc). A pure ratio:
    independent of the intensity scale. Low for a circle fitted to noise."""
    radii = torch.stack([r - d, r, r + d], -1).float().view(-1, 1, 3)
    px, py = cx.float().view(-1, 1, 1) + radii * ux.unsqueeze(-1), cy.float().view(-1, 1, 1) + radii * uy.unsqueeze(-1)
    inside = ((px >= 0) & (px <= h - 1) & (py >= 0) & (py <= w - 1)).all(-1)
    vs = sample(px, py)
    v, ok = vs[:, 0], inside & (vs[:, 1] >= 0.5).all(-1)
    step = v[..., 0] - v[..., 2] if feature == "edge" else v[..., 1] - 0.5 * (v[..., 0] + v[..., 2])
    okf = ok.float()
    cnt = okf.sum(1).clamp_min(1)
    mean = (step * okf).sum(1) / cnt
    var = (((step - mean[:, None]) ** 2) * okf).sum(1) / (cnt - 1).clamp_min(1)
    n_eff = torch.minimum(cnt, (2 * math.pi * r.float().abs() / correlation).clamp_min(1)).double()
    return (mean.double() / (var.double().sqrt() / n_eff.sqrt()).clamp_min(1e-30)).nan_to_num(0.0)


def fit_disk(counts: torch.Tensor, qx: np.ndarray, qy: np.ndarray, *, mask: torch.Tensor | None = None,
             feature: str = "edge", radius: np.ndarray | None = None, spread: float = 1.0,
             settings: FitSettings) -> DiskFit:
    """Fit the disk edge (``feature="edge"``: the steepest fall) or ring ridge (``"ridge"``: the peak)
    around starts ``(qx, qy)`` (px, ``(n,)``) in patterns ``counts (n, Qx, Qy)``.

    ``mask``: good pixels, ``(Qx, Qy)`` or ``(n, Qx, Qy)`` bool (True = usable); isolated impulses are
    found per pattern too (:func:`impulse_mask`). ``radius``: a known radius per start (px), else it is
    read off the data. ``spread``: how uncertain the starts are, in units of ``settings.snap`` px (the
    work-pixel size of the network that proposed them); before the edge search each start is moved by
    a few mean-shift steps (Gaussian kernel of ``snap * spread`` px, pedestal-subtracted intensity)
    onto the disk it is near (skipped for a ridge). See the module docstring for the method and
    :class:`DiskFit` for the result.
    """
    if feature not in ("edge", "ridge"):
        raise ValueError(f"feature must be 'edge' or 'ridge', got {feature!r}")
    n_img, h, w = counts.shape
    shape = np.shape(qx)
    k = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    n = n_img * k  # one fit per start
    dev = counts.device
    s = settings
    bg = background_level(counts)
    good = impulse_mask(counts, bg)
    if mask is not None:
        good = good & torch.as_tensor(mask, dtype=torch.bool, device=dev).expand(n_img, h, w)
    val, sup = smoothed(counts.float() - bg.view(-1, 1, 1), good, s.blur)
    rmax = s.max_radius * min(h, w)
    ang = torch.arange(s.n_rays, dtype=torch.float32, device=dev) * (2 * math.pi / s.n_rays)
    ux, uy = torch.cos(ang).view(1, -1, 1), torch.sin(ang).view(1, -1, 1)
    cx = torch.as_tensor(np.asarray(qx, np.float64), device=dev).reshape(n).double()
    cy = torch.as_tensor(np.asarray(qy, np.float64), device=dev).reshape(n).double()

    def sample(px: torch.Tensor, py: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
        """``(value, support)`` samples ``(n, 2, ...)`` at positions ``(n, ...)`` (the k fits of a pattern
        read the same image)."""
        rest = px.shape[1:]
        grid = torch.stack([py * (2.0 / max(w - 1, 1)) - 1.0, px * (2.0 / max(h - 1, 1)) - 1.0], dim=-1)
        grid = grid.reshape(n_img, k, -1, 2).reshape(n_img, k * int(np.prod(rest)), 1, 2)
        vs = F.grid_sample(both, grid, mode=mode, padding_mode="zeros", align_corners=True)
        return vs.view(n_img, 2, k, -1).transpose(1, 2).reshape(n, 2, *rest)
    both = torch.cat([val, sup], 1)
    margin = int(math.ceil(1.5 / s.step))

    def cast(cx: torch.Tensor, cy: torch.Tensor, r_lo: torch.Tensor, m: int, mode: str = "bilinear",
             every: int = 1):
        """Samples along every ``every``-th ray at radii ``r_lo + step * (0..m-1)`` (bicubic or bilinear
        interpolation): radii ``(n, 1, m)``, derivative (or minus the profile for a ridge) ``(n, K, m)``
        and usability ``(n, K, m)``."""
        rj = r_lo.float().view(-1, 1, 1) + torch.arange(m, dtype=torch.float32, device=dev) * s.step
        px, py = cx.float().view(-1, 1, 1) + rj * ux[:, ::every], cy.float().view(-1, 1, 1) + rj * uy[:, ::every]
        inside = (px >= 0) & (px <= h - 1) & (py >= 0) & (py <= w - 1)
        vs = sample(px, py, mode)
        v, ok = vs[:, 0], inside & (vs[:, 1] >= 0.5)
        if feature == "ridge":
            g = -v
        else:
            g = torch.zeros_like(v)
            g[..., 1:-1] = (v[..., 2:] - v[..., :-2]) / (2 * s.step)
            ok[..., 0] = ok[..., -1] = False
        return rj, v, g, ok

    if feature == "edge" and s.snap > 0:
        cx, cy = _mean_shift(sample, cx, cy, s.snap * spread, dev)
    zero = torch.zeros(n, dtype=torch.float64, device=dev)
    m_full = int(math.ceil(rmax / s.step)) + 4
    if radius is None:
        rj, v, g, ok = cast(cx, cy, zero, m_full, every=4)
        okf = ok.float()
        prof = (g * okf).sum(1) / okf.sum(1).clamp_min(1)  # ray-averaged derivative (or -profile)
        rr = rj[:, 0]
        allowed = (rr >= s.min_radius) & (okf.sum(1) > 0)
        allowed[:, -2:] = False
        if feature == "edge":  # near the radius where the mean profile falls to half its central level
            mean = (v * okf).sum(1) / okf.sum(1).clamp_min(1)
            centre = mean[:, :max(int(math.ceil(max(s.min_radius, 2.0) / s.step)), 1) + 1].mean(1, keepdim=True)
            below = (mean < 0.5 * centre) & (rr >= s.min_radius)
            below[:, -1] = True
            r_half = rr.gather(1, below.float().argmax(1, keepdim=True))
            allowed &= (rr >= 0.6 * r_half) & (rr <= 1.4 * r_half + 2.0)
        prof = torch.where(allowed, prof, torch.full_like(prof, float("inf")))
        jr = prof.argmin(1)
        r = (jr.double() + _parabola(prof.unsqueeze(1).clamp(max=1e30), jr.unsqueeze(1))[:, 0].double()) * s.step
    else:
        r = torch.as_tensor(np.asarray(radius, np.float64), device=dev).reshape(n)
    moved = torch.zeros(n, dtype=torch.float64, device=dev)
    for it in range(s.iterations):
        r = r.nan_to_num(s.min_radius).clamp(s.min_radius, rmax)
        half = (s.first_window * r + 3.0 if it == 0 else torch.clamp(s.window * r, min=1.5) + moved).float()
        lo, hi = (r.float() - half).clamp_min(s.min_radius), (r.float() + half).clamp_max(rmax)
        r_lo = (lo - (margin + 1) * s.step).clamp_min(0)
        m = int(math.ceil(float((hi - r_lo).max()) / s.step)) + margin + 3
        rj, _, g, ok = cast(cx, cy, r_lo, m, "bicubic" if it >= s.iterations - 2 else "bilinear")
        inwin = (rj >= lo.view(-1, 1, 1)) & (rj <= hi.view(-1, 1, 1))
        okp = F.max_pool1d((~ok).float().view(n * s.n_rays, 1, m), 2 * margin + 1, 1, margin).view(n, s.n_rays, m)
        cand = inwin & (okp == 0)
        gm = torch.where(cand, g, torch.full_like(g, float("inf")))
        j = gm.argmin(-1)
        best = gm.gather(-1, j.unsqueeze(-1))[..., 0]
        strength = torch.where(torch.isfinite(best), -best, torch.zeros_like(best))
        has = torch.isfinite(best) & (strength > 0)
        med = _masked_median(strength, has)
        keep = has & (strength >= s.min_strength * med.nan_to_num(0.0).view(-1, 1))
        re = r_lo.float().view(-1, 1) + (j.float() + _parabola(g, j)) * s.step
        ex, ey = cx.view(-1, 1).float() + re * ux[..., 0], cy.view(-1, 1).float() + re * uy[..., 0]
        rstart = torch.where(keep, re, torch.zeros_like(re)).sum(1) / keep.sum(1).clamp_min(1)
        ncx, ncy, nr, wts, e, scale, a = _circle_fit(ex, ey, keep, cx, cy, rstart.double(), s)
        good_fit = torch.isfinite(ncx) & torch.isfinite(ncy) & (keep.sum(1) >= 3)
        moved = torch.where(good_fit, torch.hypot(ncx - cx, ncy - cy), moved).clamp_max(rmax)
        cx, cy = torch.where(good_fit, ncx, cx), torch.where(good_fit, ncy, cy)
        r = torch.where(good_fit, nr, r)
    used = (wts > 0).sum(1).double()
    dof = (wts.sum(1) - 3).clamp_min(1.0)
    s2 = (wts * e**2).sum(1) / dof
    cov = torch.linalg.pinv(a) * s2.view(-1, 1, 1)
    se = (0.5 * (cov[:, 0, 0] + cov[:, 1, 1])).clamp_min(0).sqrt()
    spacing = 2 * math.pi * r.abs().clamp_min(1e-6) / s.n_rays
    inflate = (s.correlation / spacing).clamp_min(1.0).sqrt()
    sigma = torch.hypot(se * inflate, torch.full_like(se, s.sigma_floor))
    contrast = _contrast(sample, cx, cy, r, ux[..., 0], uy[..., 0], max(1.5, 2 * s.blur), feature, h, w,
                         s.correlation)
    ok_fit = ((used >= max(6.0, s.min_rays * s.n_rays)) & torch.isfinite(sigma) & (r >= s.min_radius)
              & (r <= rmax) & (moved < torch.clamp(0.5 * r, min=1.0)) & (contrast >= s.min_contrast))
    sigma = torch.where(ok_fit, sigma, torch.full_like(sigma, float("inf")))
    out = [t.detach().double().cpu().numpy().reshape(shape)
           for t in (cx, cy, r, sigma, used / s.n_rays, scale, contrast)]
    return DiskFit(*out, ok=ok_fit.cpu().numpy().reshape(shape))
