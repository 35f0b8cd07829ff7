"""Ring fit: the elliptical distortion, the ring centre and their uncertainties from the rings of a mean pattern.

Conventions are :mod:`geometry`'s: positions ``(qx, qy)`` in pixels (qx the row), azimuths ``phi`` in
radians from qx towards qy, the ellipse ``ratio = a/b >= 1`` with its a-axis at ``theta``. A trial geometry
``(x0, y0, E)`` (``E = geometry.ellipse_matrix(ratio, theta)``) maps ideal coordinates ``u`` (circular
rings) to measured ones ``q = (x0, y0) + E u``; :func:`fit_rings` finds the geometry that makes every
ring circular.

Method (:func:`fit_rings`)
--------------------------
1. **Masks** (:func:`bad_pixel_mask`, :func:`dark_region_mask`): non-finite pixels; dead and hot pixels
   (far from the median of their 3 x 3 neighbourhood in units of the noise); saturated plateaus (many
   pixels at exactly the maximum); beam stops (regions far darker than the azimuthal median at their
   radius, found on a smoothed image, kept when large); the direct-beam disk (radii inside the disk's
   half-maximum radius times ``1 + disk_margin``).
2. **Noise model** (:func:`noise_model`): ``var = gain * mean + var0`` (Poisson + read noise, in the
   pattern's own units), measured from the pixel-to-neighbourhood differences of the pattern itself.
3. **Polar binning** of every unmasked pixel, at the trial geometry, into ``n_sectors`` azimuthal sectors
   by radial bins of ``radial_step`` px (linear splitting between bins). The template ``T(r)`` is the
   azimuthal average.
4. **Rings** (:func:`find_rings`): peaks of the band-passed template beyond the disk, significant in
   units of its noise, each with a window reaching to the neighbouring minima.
5. **Per sector and ring**, the radial shift ``d`` of the sector's profile against the template: a coarse
   search (least squares ``alpha T(r - s) + c`` over a grid of shifts ``s``), then a Gauss-Newton step
   ``alpha T + beta T' + c`` (``d = s - beta / alpha``), weighted by ``n_pixels / var`` (Poisson + read
   noise). Its error is the fit covariance scaled by the ring's residual. Rings whose intensity sits in a
   few sectors (a single crystal: its distortion cannot be told from strain) are not used.
6. **Joint fit** over all rings of ``d_k(phi) = c_k + R_k (e_c cos 2 phi + e_s sin 2 phi) + dx cos phi +
   dy sin phi`` (weighted least squares, residual-scaled covariance, outliers beyond ``clip`` sigma
   dropped); the geometry is updated (``x0 += E (dx, dy)``, ``E <- E (1 + S(e))``, reduced to
   ``(ratio, theta)`` by its singular vectors) and steps 3-6 repeat until the update is below tolerance.
7. **Uncertainty**: the covariance of ``(e_c, e_s, dx, dy)`` at convergence, scaled by the residual
   (each ring's sector-to-sector scatter beyond the photon noise is a fitted variance, a random-effects
   fit), and a bootstrap over sectors; the larger of the two is reported, propagated to ``ratio`` and
   ``theta``. Texture (ring radii that wander with azimuth, as in the mean of a finite scan) puts power
   into every low harmonic, the second one too; the power of harmonics 3..6 of the ring radius is a
   floor on the error of the second.

:func:`ring_harmonic` measures, at a fixed geometry, the residual second harmonic of the ring radius
versus azimuth (pixels at the reference ring radius) with its sigma: the check applied to a corrected
pattern.

All tunable numbers are :class:`RingSettings` fields; the shipped values are chosen by
``benchmarks/ellipse_eval.py --tune`` on validation cases and live in the ellipse manifest entry
(``postprocess.ring_fit``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
from scipy import ndimage

from . import geometry

_DEBUG = False


@dataclass(frozen=True)
class RingSettings:
    """Tunable numbers of the ring fit (see the module docstring). Lengths in pixels."""

    n_sectors: int = 36  # azimuthal sectors over a full turn
    radial_step: float = 0.5  # radial bin width
    disk_margin: float = 0.5  # inner radius = disk half-maximum radius * (1 + margin) + 2 px
    background_sigma: float = 6.0  # Gaussian width of the template's smooth background (band-pass)
    peak_sigma: float = 1.0  # smoothing of the band-passed template before peak finding
    ring_z: float = 5.0  # minimum significance of a ring peak (band-passed height / its noise)
    max_rings: int = 8  # strongest rings kept
    window_min: float = 3.0  # half-width limits of a ring window
    window_max: float = 12.0
    max_shift: float = 4.0  # coarse shift search range, +- px
    shift_step: float = 0.25
    amp_z: float = 2.0  # a sector is used for a ring when its ring amplitude is this many sigma above 0
    min_coverage: float = 0.35  # fraction of sectors a ring's intensity must spread over
    clip: float = 4.0  # outlier rejection in the joint fit, sigma
    max_iter: int = 8
    tol_ratio: float = 2e-5
    tol_center: float = 2e-3
    bootstrap: int = 100  # bootstrap resamples of the sectors (0: covariance only)
    max_ratio_sigma: float = 0.02  # above: "not measurable"
    bad_z: float = 8.0  # dead/hot pixel threshold, noise sigma from the 3 x 3 median
    dark_fraction: float = 0.35  # beam stop: smoothed intensity below this fraction of the ring median
    dark_min_pixels: int = 40  # smallest beam-stop region kept
    center_search: float = 0.0  # coarse search for the ring centre, +- px around the start (0: none)
    harmonic_z: float = 3.0  # a residual second harmonic above this many sigma fails the check
    texture_harmonics: int = 6  # harmonics 3..this of the ring radius set a floor on the e error (0: off)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> RingSettings:
        """Settings from a manifest ``ring_fit`` dict; unknown keys are refused (a typo would be silent)."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown ring-fit settings {sorted(unknown)}; known: {sorted(known)}")
        return cls(**values)

    def with_(self, **changes: Any) -> RingSettings:
        """A copy with ``changes`` (used by the tuning script)."""
        return replace(self, **changes)


@dataclass
class RingFit:
    """Result of :func:`fit_rings`.

    ``ratio``, ``theta``: the ellipse (a/b >= 1; a-axis angle, radians); ``ratio_sigma``, ``theta_sigma``
    their 1-sigma errors; ``x0, y0`` the ring centre (pixels) and ``center_sigma`` its error per axis;
    ``measurable`` False (with ``reason``) when the pattern has no ring contrast to measure, the ratio and
    angle are then 1 and 0. ``residual``: weighted rms (px) of the ring radii about the fitted model;
    ``chi2``: reduced chi-square of the joint fit; ``radii``: the rings used (px, ideal frame);
    ``azimuth`` (sector centres, radians) and ``shift`` ``(n_rings, n_sectors)``: ring radius minus its
    mean, px, NaN where a sector was not used, at the start geometry (``shift_start``) and at the fit
    (``shift``); ``mask``: pixels used (True) or masked; ``iterations``; ``coverage``: the azimuthal
    coverage (0..1, the fraction of the sectors the ring intensity spreads over) of every ring found.
    """

    ratio: float
    theta: float
    ratio_sigma: float
    theta_sigma: float
    x0: float
    y0: float
    center_sigma: tuple[float, float]
    measurable: bool
    reason: str
    residual: float
    chi2: float
    radii: np.ndarray
    azimuth: np.ndarray
    shift: np.ndarray
    shift_start: np.ndarray
    mask: np.ndarray = field(repr=False)
    iterations: int = 0
    coverage: np.ndarray = field(default_factory=lambda: np.zeros(0))


@dataclass
class Harmonic:
    """Second harmonic of the ring radius versus azimuth at a fixed geometry (:func:`ring_harmonic`).

    ``amplitude`` (px, at ``radius``, the weighted mean ring radius) and ``sigma``; ``angle`` of its
    maximum (radians); ``ratio`` the a/b that amplitude corresponds to; ``ok`` whether it is within
    ``harmonic_z`` sigma of zero; ``azimuth``/``shift`` as in :class:`RingFit`; ``measurable`` False when
    no ring could be measured.
    """

    amplitude: float
    sigma: float
    angle: float
    ratio: float
    radius: float
    ok: bool
    measurable: bool
    azimuth: np.ndarray
    shift: np.ndarray


# ----------------------------------------------------------------------------------------------- masks


def noise_model(image: np.ndarray, valid: np.ndarray) -> tuple[float, float]:
    """``(gain, var0)`` of ``var(pixel) = gain * mean + var0``, in the image's units, from the differences
    between each pixel and the mean of its valid 8 neighbours (binned by that mean, trimmed)."""
    x = np.where(valid, image, 0.0)
    v = valid.astype(np.float64)
    k = np.ones((3, 3))
    k[1, 1] = 0
    n8 = ndimage.convolve(v, k, mode="constant")
    m8 = ndimage.convolve(x, k, mode="constant") / np.maximum(n8, 1)
    use = valid & (n8 >= 6)
    d2 = ((x - m8) ** 2 / (1 + 1 / np.maximum(n8, 1)))[use]
    m = m8[use]
    if m.size < 50:
        return 1.0, 0.0
    order = np.argsort(m)
    means, vars_ = [], []
    for part in np.array_split(order, 20):
        means.append(m[part].mean())
        # the median of a chi-square(1) variable is 0.455 times its mean; a median is not pulled up by hot
        # pixels, spots and ring edges (zero-inflated low counts make it a lower bound: the floor below)
        vars_.append(max(np.median(d2[part]) / 0.455, 1e-3 * d2[part].mean()))
    means, vars_ = np.array(means), np.array(vars_)
    pos = vars_ > 0
    if pos.sum() < 3:
        return 1.0, max(float(d2.mean()), 1e-30)
    means, vars_ = means[pos], vars_[pos]
    a = np.stack([means, np.ones_like(means)], 1)
    gain, var0 = np.linalg.lstsq(a / vars_[:, None], np.ones_like(vars_), rcond=None)[0]
    if gain <= 0:  # read noise only (or constant variance)
        gain, var0 = 0.0, float(np.median(vars_))
    elif var0 < 0:
        gain, var0 = float(np.sum(means * vars_) / np.sum(means**2)), 0.0
    floor = 1e-6 * max(float(np.median(vars_)), 1e-30)
    return float(gain), float(max(var0, floor))


def bad_pixel_mask(image: np.ndarray, gain: float, var0: float, z: float) -> np.ndarray:
    """True where a pixel is usable: finite; not hot (above the brightest of its 8 neighbours by more than
    ``z`` noise sigma and by more than that neighbour's value) nor dead (below the darkest neighbour by
    ``z`` sigma and by half of it) -- real spots and rings are wider than a pixel, so their neighbours
    follow them; not in a saturated plateau (at least 4 pixels at exactly the maximum; dilated by one)."""
    finite = np.isfinite(image)
    x = np.where(finite, image, 0.0)
    ring8 = np.ones((3, 3), bool)
    ring8[1, 1] = False
    hi = ndimage.maximum_filter(x, footprint=ring8, mode="nearest")
    lo = ndimage.minimum_filter(x, footprint=ring8, mode="nearest")
    sig_hi = np.sqrt(np.clip(gain * np.clip(hi, 0, None) + var0, 1e-30, None))
    sig_lo = np.sqrt(np.clip(gain * np.clip(lo, 0, None) + var0, 1e-30, None))
    hot = (x - hi > z * sig_hi) & (x - hi > np.abs(hi))
    dead = (lo - x > z * sig_lo) & (lo - x > 0.5 * np.abs(lo))
    bad = hot | dead | ~finite
    top = x.max() if x.size else 0.0
    plateau = x == top
    if top > 0 and plateau.sum() >= 4:
        bad |= ndimage.binary_dilation(plateau)
    return ~bad


def dark_region_mask(image: np.ndarray, valid: np.ndarray, rho: np.ndarray, gain: float, var0: float,
                     settings: RingSettings) -> np.ndarray:
    """True where a pixel is not under a beam stop: large regions whose smoothed intensity (above the
    detector pedestal, the 0.5th percentile) is below ``dark_fraction`` of the lowest azimuthal median
    within +-3 px of their radius, significantly (5 sigma of the smoothed noise), grown by 2 px."""
    s = 2.0
    w = ndimage.gaussian_filter(valid.astype(np.float64), s)
    sm = ndimage.gaussian_filter(np.where(valid, image, 0.0), s) / np.maximum(w, 1e-9)
    rbin = np.clip(rho.astype(int), 0, None)
    nb = int(rbin.max()) + 1
    med = np.zeros(nb)
    sel = valid & (w > 0.5)
    order = np.argsort(rbin[sel], kind="stable")
    rs, vs = rbin[sel][order], sm[sel][order]
    bounds = np.searchsorted(rs, np.arange(nb + 1))
    for i in range(nb):
        seg = vs[bounds[i]:bounds[i + 1]]
        if seg.size:
            med[i] = np.median(seg)
    ref = ndimage.minimum_filter1d(med, 7)[rbin]  # darker than every azimuthal median within +-3 px
    n_eff = 4 * math.pi * s * s
    noise = np.sqrt(np.clip(gain * np.clip(ref, 0, None) + var0, 0, None) / n_eff)
    base = float(np.percentile(image[valid], 0.5)) if valid.any() else 0.0  # a detector pedestal
    dark = (sm - base < settings.dark_fraction * (ref - base)) & (ref - sm > 5 * noise) & valid
    lab, n = ndimage.label(dark)
    if n == 0:
        return np.ones_like(valid)
    sizes = ndimage.sum(dark, lab, np.arange(1, n + 1))
    keep = np.isin(lab, 1 + np.flatnonzero(sizes >= settings.dark_min_pixels))
    return ~ndimage.binary_dilation(keep, iterations=2)


# ----------------------------------------------------------------------------------------- polar binning


@dataclass
class _Polar:
    """Sector x radius sums of a pattern at one trial geometry."""

    mean: np.ndarray  # (K, J) sector profiles
    neff: np.ndarray  # (K, J) effective number of pixels per bin
    template: np.ndarray  # (J,)
    tneff: np.ndarray  # (J,)
    radius: np.ndarray  # (J,) bin centres, px
    phi: np.ndarray  # (K,) sector centres, radians
    rbar: np.ndarray  # (K, J) mean radius of the pixels in each bin (the pixel grid samples unevenly)
    trbar: np.ndarray  # (J,) the same for the template


def _ideal_coords(shape, x0, y0, ratio, theta):
    qx, qy = np.indices(shape, dtype=np.float64)
    e_inv = np.linalg.inv(geometry.ellipse_matrix(ratio, theta)[0])
    dx, dy = qx - x0, qy - y0
    ux = e_inv[0, 0] * dx + e_inv[0, 1] * dy
    uy = e_inv[1, 0] * dx + e_inv[1, 1] * dy
    return np.hypot(ux, uy), np.arctan2(uy, ux)


def _polar(image, use, x0, y0, ratio, theta, settings: RingSettings, r_max: float) -> _Polar:
    rho, phi = _ideal_coords(image.shape, x0, y0, ratio, theta)
    k_n, dr = settings.n_sectors, settings.radial_step
    n_r = int(r_max / dr) + 1
    sel = use & (rho < r_max - dr)
    t = rho[sel] / dr
    j = np.floor(t).astype(int)
    f = t - j
    k = (np.floor((phi[sel] + math.pi) / (2 * math.pi) * k_n).astype(int)) % k_n
    v = image[sel]
    size = k_n * n_r
    s = np.zeros(size)
    w = np.zeros(size)
    w2 = np.zeros(size)
    sr = np.zeros(size)
    for jj, ff in ((j, 1 - f), (j + 1, f)):
        idx = k * n_r + np.clip(jj, 0, n_r - 1)
        s += np.bincount(idx, v * ff, size)
        w += np.bincount(idx, ff, size)
        w2 += np.bincount(idx, ff * ff, size)
        sr += np.bincount(idx, rho[sel] * ff, size)
    s, w, w2, sr = s.reshape(k_n, n_r), w.reshape(k_n, n_r), w2.reshape(k_n, n_r), sr.reshape(k_n, n_r)
    nominal = np.arange(n_r) * dr
    rbar = np.where(w > 0, sr / np.where(w > 0, w, 1), nominal[None])
    tw_ = w.sum(0)
    trbar = np.where(tw_ > 0, sr.sum(0) / np.where(tw_ > 0, tw_, 1), nominal)
    mean = s / np.where(w > 0, w, 1)
    neff = np.where(w2 > 0, w * w / np.where(w2 > 0, w2, 1), 0.0)
    tw = w.sum(0)
    template = s.sum(0) / np.where(tw > 0, tw, 1)
    tneff = np.where(w2.sum(0) > 0, tw * tw / np.where(w2.sum(0) > 0, w2.sum(0), 1), 0.0)
    phi_c = -math.pi + (np.arange(k_n) + 0.5) * (2 * math.pi / k_n)
    return _Polar(mean, neff, template, tneff, nominal, phi_c, rbar, np.maximum.accumulate(trbar))


# ----------------------------------------------------------------------------------------------- rings


def _disk_radius(polar: _Polar) -> float:
    """Half-maximum radius of the direct-beam disk (0 when the centre is not the brightest region);
    radial bins without pixels (near the centre some hold none) are skipped."""
    ok = polar.tneff > 0
    template, radius = polar.template[ok], polar.radius[ok]
    if radius.size < 4:
        return 0.0
    inner = radius < 0.35 * radius[-1]
    if not np.any(inner):
        return 0.0
    t = template[inner]
    head = t[radius[inner] <= 2.0].mean() if np.any(radius[inner] <= 2.0) else t[:2].mean()
    if head < 3 * max(np.median(template[template > 0]) if np.any(template > 0) else 0, 1e-30):
        return 0.0
    below = np.flatnonzero(t < 0.5 * head)
    return float(radius[below[0]]) if below.size else float(radius[inner][-1])


def find_rings(polar: _Polar, gain: float, var0: float, r_inner: float, settings: RingSettings
               ) -> list[tuple[int, int, int]]:
    """Ring windows ``(start, peak, stop)`` (radial bin indices) from the band-passed template: local
    maxima beyond ``r_inner`` at least ``ring_z`` noise sigma high, strongest first."""
    t, dr = polar.template, settings.radial_step
    ok = polar.tneff > 0
    if ok.sum() < 10:
        return []
    tt = np.interp(np.arange(t.size), np.flatnonzero(ok), t[ok])
    lo = int(math.ceil(r_inner / dr))
    # the direct beam (inside r_inner) must not leak into the smooth background: it is held at its edge value
    flat = np.where(np.arange(t.size) < lo, tt[min(lo, t.size - 1)], tt)
    band = tt - ndimage.gaussian_filter1d(flat, settings.background_sigma / dr, mode="nearest")
    band = ndimage.gaussian_filter1d(band, settings.peak_sigma / dr, mode="nearest")
    # the noise of the azimuthal average, from the scatter of the sector profiles about it (photon noise,
    # speckle and texture alike), averaged over the peak smoothing width
    has = polar.neff > 0
    n_k = np.maximum(has.sum(0), 1)
    scatter = np.sqrt(np.sum(np.where(has, (polar.mean - tt[None]) ** 2, 0.0), 0) / np.maximum(n_k - 1, 1) / n_k)
    poisson = np.sqrt(np.clip(gain * np.clip(tt, 0, None) + var0, 1e-30, None) / np.maximum(polar.tneff, 1))
    noise = np.maximum(ndimage.median_filter(scatter, 5, mode="nearest"), 0.1 * poisson)
    noise = noise / np.sqrt(max(1.0, 2 * math.sqrt(math.pi) * settings.peak_sigma / dr))
    last = int(np.flatnonzero(ok)[-1]) if ok.any() else 0
    peaks = [i for i in range(max(lo, 1), last - 1)
             if band[i] > band[i - 1] and band[i] >= band[i + 1] and band[i] > settings.ring_z * noise[i]]
    peaks.sort(key=lambda i: -band[i] / noise[i])
    windows = []
    wmin, wmax = int(round(settings.window_min / dr)), int(round(settings.window_max / dr))
    for p in peaks[: settings.max_rings]:
        a = p
        while a > lo and p - a < wmax and band[a - 1] < band[a]:
            a -= 1
        b = p
        while b < last and b - p < wmax and band[b + 1] < band[b]:
            b += 1
        a, b = min(a, p - wmin), max(b, p + wmin)
        a, b = max(a, lo), min(b, last)
        if b - a >= 2 * wmin:
            windows.append((a, p, b))
    windows.sort()
    merged = []  # neighbouring windows share a minimum: keep them disjoint
    for w in windows:
        if merged and w[0] < merged[-1][2]:
            prev = merged[-1]
            cut = (prev[2] + w[0]) // 2
            merged[-1] = (prev[0], prev[1], max(prev[1] + 1, cut))
            w = (min(cut, w[1] - 1), w[1], w[2])
        merged.append(w)
    return merged


@dataclass
class _Shifts:
    """Radial shift per sector and ring: value, sigma (inf where unused), ring amplitude significance."""

    shift: np.ndarray  # (W, K)
    sigma: np.ndarray  # (W, K)
    radius: np.ndarray  # (W,)
    coverage: np.ndarray  # (W,)


def _sector_shifts(polar: _Polar, windows, gain: float, var0: float, settings: RingSettings) -> _Shifts:
    k_n = polar.mean.shape[0]
    n_w = len(windows)
    shift = np.full((n_w, k_n), np.nan)
    sigma = np.full((n_w, k_n), np.inf)
    radius = np.zeros(n_w)
    coverage = np.zeros(n_w)
    t = polar.template
    grid = np.arange(-settings.max_shift, settings.max_shift + 1e-9, settings.shift_step)
    jall = np.arange(t.size)
    for wi, (a, p, b) in enumerate(windows):
        j = np.arange(a, b + 1)
        r = polar.rbar[:, j]  # (K, n)
        radius[wi] = polar.radius[p]
        y = polar.mean[:, j]
        var = np.clip(gain * np.clip(t[j], 0, None) + var0, 1e-30, None)
        wt = polar.neff[:, j] / var[None]  # (K, n)
        has = (polar.neff[:, j] > 0).sum(1) >= max(4, j.size // 2)
        # coarse search: alpha T(r - s) + c for every shift s
        ts = np.stack([np.interp(r - s, polar.trbar, t) for s in grid])  # (S, K, n)
        sw = wt.sum(1)  # (K,)
        swt = np.einsum("kn,skn->ks", wt, ts)  # (K, S)
        swtt = np.einsum("kn,skn->ks", wt, ts**2)
        swy = (wt * y).sum(1)
        swyt = np.einsum("kn,skn->ks", wt * y, ts)
        det = swtt * sw[:, None] - swt**2
        alpha = (swyt * sw[:, None] - swy[:, None] * swt) / np.where(det > 0, det, np.inf)
        c = (swy[:, None] - alpha * swt) / np.where(sw[:, None] > 0, sw[:, None], 1)
        gain_fit = alpha * swyt + c * swy[:, None]  # reduction of the chi-square by the fit
        gain_fit = np.where(alpha > 0, gain_fit, -np.inf)
        s0 = grid[np.argmax(gain_fit, axis=1)]  # (K,)
        # Gauss-Newton step around each sector's best shift: y = alpha T(r - s0) + beta T'(r - s0) + c
        tgrad = np.gradient(t, polar.trbar + 1e-9 * jall)
        tk = np.stack([np.interp(rk - sk, polar.trbar, t) for rk, sk in zip(r, s0, strict=True)])  # (K, n)
        gk = np.stack([np.interp(rk - sk, polar.trbar, tgrad) for rk, sk in zip(r, s0, strict=True)])
        x = np.stack([tk, gk, np.ones_like(tk)], -1)  # (K, n, 3)
        xtw = x * wt[..., None]
        normal = np.einsum("knp,knq->kpq", xtw, x) + 1e-12 * np.eye(3)
        rhs = np.einsum("knp,kn->kp", xtw, y)
        good = has & np.all(np.isfinite(normal), axis=(1, 2)) & (np.linalg.det(normal) > 0)
        normal[~good] = np.eye(3)
        rhs[~good] = 0
        coef = np.linalg.solve(normal, rhs[..., None])[..., 0]
        cov = np.linalg.inv(normal)
        res = y - np.einsum("knp,kp->kn", x, coef)
        chi2 = (wt * res**2).sum(1)
        dof = np.maximum(has * (polar.neff[:, j] > 0).sum(1) - 3, 1)
        scale2 = max(float(chi2[good].sum() / dof[good].sum()) if good.any() else 1.0, 1e-12)
        al, be = coef[:, 0], coef[:, 1]
        var_al, var_be, cov_ab = cov[:, 0, 0] * scale2, cov[:, 1, 1] * scale2, cov[:, 0, 1] * scale2
        d = s0 - be / np.where(al != 0, al, np.inf)
        var_d = (var_be + (be / np.where(al != 0, al, np.inf)) ** 2 * var_al
                 - 2 * (be / np.where(al != 0, al, np.inf)) * cov_ab) / np.where(al != 0, al, np.inf) ** 2
        z = al / np.sqrt(np.maximum(var_al, 1e-300))
        use = good & (z > settings.amp_z) & np.isfinite(d) & (np.abs(d) < settings.max_shift + 1)
        shift[wi, use] = d[use]
        sigma[wi, use] = np.sqrt(np.maximum(var_d[use], 1e-12))
        # azimuthal spread of the ring intensity: (sum alpha)^2 / (K sum (alpha^2 - var)), noise-corrected
        alg = np.where(good, al, 0.0)
        denom = good.sum() * np.sum(np.where(good, al**2 - var_al, 0.0))
        coverage[wi] = float(np.clip(alg.sum() ** 2 / denom, 0, 1)) if denom > 0 and alg.sum() > 0 else 0.0
    return _Shifts(shift, sigma, radius, coverage)


# ------------------------------------------------------------------------------------------- joint fit


def _design(phi: np.ndarray, radius: np.ndarray, ring: np.ndarray, n_rings: int) -> np.ndarray:
    """Columns: ring offsets c_k, then R (cos 2phi, sin 2phi), cos phi, sin phi."""
    x = np.zeros((phi.size, n_rings + 4))
    x[np.arange(phi.size), ring] = 1.0
    x[:, n_rings] = radius * np.cos(2 * phi)
    x[:, n_rings + 1] = radius * np.sin(2 * phi)
    x[:, n_rings + 2] = np.cos(phi)
    x[:, n_rings + 3] = np.sin(phi)
    return x


def _wls(x, y, w):
    a = x.T @ (x * w[:, None])
    cov = np.linalg.pinv(a)
    coef = cov @ (x.T @ (w * y))
    return coef, cov


@dataclass
class _Joint:
    coef: np.ndarray  # (e_c, e_s, dx, dy)
    cov: np.ndarray  # 4 x 4, residual-scaled
    boot: np.ndarray | None  # 4 x 4 bootstrap covariance
    chi2: float
    residual: float
    n_used: int
    resid_shift: np.ndarray  # (W, K) shift minus ring offset, NaN unused


def _joint_fit(shifts: _Shifts, phi: np.ndarray, settings: RingSettings, rng: np.random.Generator | None,
               center: bool = True) -> _Joint | None:
    n_w, k_n = shifts.shift.shape
    ring, sector = np.nonzero(np.isfinite(shifts.sigma))
    if ring.size < 6:
        return None
    y = shifts.shift[ring, sector]
    s2 = shifts.sigma[ring, sector] ** 2
    x = _design(phi[sector], shifts.radius[ring], ring, n_w)
    if not center:
        x = x[:, : n_w + 2]
    # each ring's radius also scatters from sector to sector beyond the photon noise (spots, texture,
    # speckle): a variance tau_k^2 per ring, estimated from the residuals, is added to every sector's own
    # (a random-effects fit), so no sector dominates and the error bar includes that scatter
    coef, _ = _wls(x, y, np.ones_like(y))  # equal weights: a start no single sector can pull
    res = y - x @ coef
    tau2 = np.zeros(n_w)
    keep = np.ones(y.size, bool)
    for _ in range(6):
        for k in range(n_w):
            sel = keep & (ring == k)
            if sel.sum() >= 3:
                mad2 = (1.4826 * np.median(np.abs(res[sel]))) ** 2
                tau2[k] = max(0.0, mad2 - float(np.median(s2[sel])))
        w = 1 / (s2 + tau2[ring])
        z = np.abs(res) * np.sqrt(w)
        scale = max(1.4826 * float(np.median(z[keep])), 1e-12)
        new = z < settings.clip * max(scale, 1.0)
        if new.sum() < x.shape[1] + 2:
            break
        keep = new
        coef, cov = _wls(x[keep], y[keep], w[keep])
        res = y - x @ coef
    w = 1 / (s2 + tau2[ring])
    dof = max(int(keep.sum()) - x.shape[1], 1)
    chi2 = float(np.sum(w[keep] * res[keep] ** 2) / dof)
    nf = 4 if center else 2
    cov = cov * chi2
    coef4, cov4 = np.zeros(4), np.zeros((4, 4))
    coef4[:nf] = coef[n_w:]
    cov4[:nf, :nf] = cov[n_w:, n_w:]
    # structured scatter: ring radii that wander with azimuth (texture of a finite scan, spotty rings)
    # put power in every low harmonic, the second included, where it looks like an ellipse. The power
    # of harmonics 3..texture_harmonics (same units as e_c, e_s) bounds the e error from below.
    n_max = settings.texture_harmonics
    if n_max >= 3 and keep.sum() > x.shape[1] + 2 * (n_max - 2) + 2:
        cols = [shifts.radius[ring] * f(n * phi[sector]) for n in range(3, n_max + 1) for f in (np.cos, np.sin)]
        xt = np.concatenate([x, np.stack(cols, 1)], 1)
        ct, _ = _wls(xt[keep], y[keep], w[keep])
        tex2 = float(np.mean(ct[x.shape[1]:] ** 2))
        stat2 = 0.5 * (cov4[0, 0] + cov4[1, 1])
        if stat2 > 0 and tex2 > stat2:
            cov4[:2, :2] *= tex2 / stat2
    boot = None
    if rng is not None and settings.bootstrap > 0:
        used = np.unique(sector[keep])
        samples = []
        for _ in range(settings.bootstrap):
            pick = rng.choice(used, used.size)
            counts = np.bincount(pick, minlength=k_n)
            wb = w * counts[sector] * keep
            if np.count_nonzero(wb) < x.shape[1] + 2:
                continue
            cb, _ = _wls(x, y, wb)
            samples.append(cb[n_w:])
        if len(samples) > 10:
            b = np.zeros((4, 4))
            b[:nf, :nf] = np.atleast_2d(np.cov(np.array(samples).T))
            boot = b
    resid = np.full((n_w, k_n), np.nan)
    resid[ring[keep], sector[keep]] = y[keep] - coef[ring[keep]]
    rms = float(np.sqrt(np.sum(w[keep] * res[keep] ** 2) / np.sum(w[keep])))
    return _Joint(coef4, cov4, boot, chi2, rms, int(keep.sum()), resid)


def _compose(x0, y0, ratio, theta, p):
    """Geometry after the update ``p = (e_c, e_s, dx, dy)`` (see the module docstring)."""
    e = geometry.ellipse_matrix(ratio, theta)[0]
    s = np.array([[p[0], p[1]], [p[1], -p[0]]])
    m = e @ (np.eye(2) + s)
    u, sv, _ = np.linalg.svd(m)
    new_ratio = float(sv[0] / sv[1])
    new_theta = math.atan2(u[1, 0], u[0, 0])
    r, t = geometry.normalize_ellipse(new_ratio, new_theta)
    dq = e @ np.array([p[2], p[3]])
    return x0 + dq[0], y0 + dq[1], float(r[0]), float(t[0])


def _errors(x0, y0, ratio, theta, cov):
    """1-sigma errors of (ratio, theta, x0, y0) from the covariance of an update, by linear propagation
    (numerical Jacobian of :func:`_compose` at a zero update); the angle error is capped at that of a
    uniform angle (pi / sqrt(12)) when the ratio is too close to 1 for the angle to mean anything."""
    eps = 1e-6
    base = np.array([ratio, 0.0, x0, y0])
    jac = np.zeros((4, 4))
    for i in range(4):
        p = np.zeros(4)
        p[i] = eps
        nx, ny, nr, nt = _compose(x0, y0, ratio, theta, p)
        dt = (nt - theta + math.pi / 2) % math.pi - math.pi / 2
        jac[:, i] = (np.array([nr, dt, nx, ny]) - base) / eps
    c = jac @ cov @ jac.T
    sig = np.sqrt(np.clip(np.diag(c), 0, None))
    # near ratio 1 the linearisation breaks down: the angle is set by sqrt(e_c^2 + e_s^2)
    e = (ratio - 1) / (ratio + 1)
    se = math.sqrt(max(0.5 * (cov[0, 0] + cov[1, 1]), 0))
    theta_sigma = math.pi / math.sqrt(12) if e < se else min(float(sig[1]), math.pi / math.sqrt(12))
    return float(sig[0]), theta_sigma, (float(sig[2]), float(sig[3]))


# ---------------------------------------------------------------------------------------------- public


def _prepare(image: np.ndarray, mask: np.ndarray | None, settings: RingSettings):
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise ValueError(f"pattern must be 2D (Qx, Qy), got shape {img.shape}")
    valid = np.isfinite(img)
    if mask is not None:
        mask = np.asarray(mask, bool)
        if mask.shape != img.shape:
            raise ValueError(f"mask shape {mask.shape} differs from the pattern's {img.shape}")
        valid &= mask
    gain, var0 = noise_model(img, valid)
    valid &= bad_pixel_mask(np.where(valid, img, np.nan), gain, var0, settings.bad_z)
    gain, var0 = noise_model(img, valid)
    return np.where(valid, img, 0.0), valid, gain, var0


def _r_max(shape, x0, y0) -> float:
    """Largest radius about ``(x0, y0)`` used: the distance to the farthest detector edge (rings cut by
    the edges are used on the sectors that hold them)."""
    return float(max(x0, shape[0] - 1 - x0, y0, shape[1] - 1 - y0, 8.0))


def _search_center(img, use, x0, y0, settings: RingSettings) -> tuple[float, float]:
    """Coarse ring centre: the centre whose azimuthal average has the most band-passed power, on grids
    of decreasing step within ``center_search`` px of the start; at each step the pattern is blurred by
    half the step, so that rings still overlap at the grid's resolution."""
    r_max = _r_max(img.shape, x0, y0)
    w = use.astype(np.float64)

    def score(im, cx, cy, bg):
        p = _polar(im, use, cx, cy, 1.0, 0.0, settings.with_(n_sectors=1), r_max)
        ok = p.tneff > 0
        t = p.template[ok]
        band = t - ndimage.gaussian_filter1d(t, bg / settings.radial_step, mode="nearest")
        return float(np.sum(band**2 * p.tneff[ok]))

    best = (x0, y0)
    coarse = max(2.0, settings.center_search / 5)
    for step, span in ((coarse, settings.center_search), (coarse / 4, coarse), (0.5, coarse / 4)):
        blur = step / 2
        im = ndimage.gaussian_filter(img * w, blur) / np.maximum(ndimage.gaussian_filter(w, blur), 1e-9)
        cands = np.arange(-span, span + 1e-9, step)
        bx, by = best
        bg = max(settings.background_sigma, 3 * step)
        scores = {(bx + a, by + b): score(im, bx + a, by + b, bg) for a in cands for b in cands}
        best = max(scores, key=scores.get)
    return best


def _not_measurable(reason, x0, y0, valid, phi, coverage=None) -> RingFit:
    empty = np.zeros((0, phi.size))
    return RingFit(1.0, 0.0, math.nan, math.nan, float(x0), float(y0), (math.nan, math.nan), False, reason,
                   math.nan, math.nan, np.zeros(0), phi, empty, empty, valid, 0,
                   np.zeros(0) if coverage is None else coverage)


def fit_rings(
    image: np.ndarray, *, x0: float | None = None, y0: float | None = None, ratio: float = 1.0,
    theta: float = 0.0, mask: np.ndarray | None = None, settings: RingSettings | None = None, seed: int = 0,
) -> RingFit:
    """Fit ring centre, a/b and angle jointly to every usable ring of ``image`` (a mean pattern ``(Qx, Qy)``,
    counts or any linear intensity unit); see the module docstring for the method.

    ``x0, y0``: start of the ring centre (pixels; default the detector centre), ``ratio, theta``: start of
    the ellipse (a network may propose it); ``mask``: pixels to use (True), combined with the automatic
    masks; ``seed``: for the bootstrap. Returns a :class:`RingFit`; "not measurable" (with the reason) is a
    result, not an error.
    """
    s = settings or RingSettings()
    cx, cy = geometry.detector_center(np.shape(image))
    x0 = cx if x0 is None else float(x0)
    y0 = cy if y0 is None else float(y0)
    img, valid, gain, var0 = _prepare(image, mask, s)
    phi = -math.pi + (np.arange(s.n_sectors) + 0.5) * (2 * math.pi / s.n_sectors)
    if valid.sum() < 100 or not np.any(img[valid] != img[valid][0]):
        return _not_measurable("the pattern is empty or constant", x0, y0, valid, phi)
    rho, _ = _ideal_coords(img.shape, x0, y0, ratio, theta)
    use = valid & dark_region_mask(img, valid, rho, gain, var0, s)
    if s.center_search > 0:
        x0, y0 = _search_center(img, use, x0, y0, s)
        rho, _ = _ideal_coords(img.shape, x0, y0, ratio, theta)
        use = valid & dark_region_mask(img, valid, rho, gain, var0, s)
    rng = np.random.default_rng(seed)
    shift_start = None
    it = 0
    windows = None
    r_inner = 0.0
    r_max = _r_max(img.shape, x0, y0)  # fixed, so that the ring windows keep their bins
    for it in range(1, s.max_iter + 1):
        polar = _polar(img, use, x0, y0, ratio, theta, s, r_max)
        if windows is None:
            r_inner = _disk_radius(polar) * (1 + s.disk_margin) + 2.0
            windows = find_rings(polar, gain, var0, r_inner, s)
            if not windows:
                return _not_measurable("no ring beyond the direct beam stands out of the noise (a featureless "
                                       "mean pattern)", x0, y0, use, phi)
        shifts = _sector_shifts(polar, windows, gain, var0, s)
        ring_ok = shifts.coverage >= s.min_coverage
        if not ring_ok.any():
            best = float(shifts.coverage.max())
            return _not_measurable(f"the ring intensity sits in isolated spots (azimuthal coverage {best:.2f} < "
                                   f"{s.min_coverage}): a single-crystal pattern, whose distortion cannot be told "
                                   "from strain", x0, y0, use, phi, shifts.coverage)
        shifts.sigma[~ring_ok] = np.inf
        joint = _joint_fit(shifts, polar.phi, s, None)
        if joint is None:
            return _not_measurable("too few sectors of the rings could be measured", x0, y0, use, phi)
        if shift_start is None:
            shift_start = joint.resid_shift
        step = joint.coef.copy()  # damped: at most 0.02 in e and 2 px of centre per iteration
        step[:2] *= min(1.0, 0.02 / max(math.hypot(*step[:2]), 1e-12))
        step[2:] *= min(1.0, 2.0 / max(math.hypot(*step[2:]), 1e-12))
        nx, ny, nr, nt = _compose(x0, y0, ratio, theta, step)
        step_c = math.hypot(nx - x0, ny - y0)
        step_r = abs(nr - ratio)
        x0, y0, ratio, theta = nx, ny, nr, nt
        if _DEBUG:
            print(it, x0, y0, ratio, theta, joint.coef, joint.chi2)
        if nr > 1.5 or step_c > 0.25 * min(img.shape):
            return _not_measurable(f"the ring fit diverged (a/b {nr:.3f})", x0, y0, use, phi)
        if step_r < s.tol_ratio and step_c < s.tol_center:
            break
    # errors at the converged geometry
    polar = _polar(img, use, x0, y0, ratio, theta, s, r_max)
    shifts = _sector_shifts(polar, windows, gain, var0, s)
    shifts.sigma[shifts.coverage < s.min_coverage] = np.inf
    joint = _joint_fit(shifts, polar.phi, s, rng)
    if joint is None:
        return _not_measurable("too few sectors of the rings could be measured", x0, y0, use, phi)
    cov = joint.cov
    if joint.boot is not None:  # the larger of the two error estimates, per parameter
        scale = np.sqrt(np.maximum(np.diag(joint.boot), np.diag(joint.cov)) / np.maximum(np.diag(joint.cov), 1e-300))
        cov = joint.cov * np.outer(scale, scale)
    ratio_sigma, theta_sigma, center_sigma = _errors(x0, y0, ratio, theta, cov)
    measurable = ratio_sigma <= s.max_ratio_sigma
    reason = "" if measurable else (f"the rings constrain a/b only to +-{ratio_sigma:.3f} (> {s.max_ratio_sigma})")
    return RingFit(ratio if measurable else 1.0, theta if measurable else 0.0, ratio_sigma, theta_sigma, x0, y0,
                   center_sigma, measurable, reason, joint.residual, joint.chi2, shifts.radius[shifts.coverage
                   >= s.min_coverage], polar.phi, joint.resid_shift, shift_start, use, it, shifts.coverage)


def ring_harmonic(
    image: np.ndarray, *, x0: float | None = None, y0: float | None = None, mask: np.ndarray | None = None,
    settings: RingSettings | None = None,
) -> Harmonic:
    """Residual second harmonic of the ring radius versus azimuth of ``image`` taken as it is (round
    geometry about the ring centre ``x0, y0``, default the detector centre; the centre offset is fitted
    out as the first harmonic). The check on a corrected pattern: ``ok`` when the amplitude is within
    ``harmonic_z`` sigma of zero."""
    s = settings or RingSettings()
    cx, cy = geometry.detector_center(np.shape(image))
    x0 = cx if x0 is None else float(x0)
    y0 = cy if y0 is None else float(y0)
    img, valid, gain, var0 = _prepare(image, mask, s)
    phi = -math.pi + (np.arange(s.n_sectors) + 0.5) * (2 * math.pi / s.n_sectors)
    empty = np.zeros((0, s.n_sectors))
    none = Harmonic(math.nan, math.nan, math.nan, math.nan, math.nan, False, False, phi, empty)
    if valid.sum() < 100:
        return none
    rho, _ = _ideal_coords(img.shape, x0, y0, 1.0, 0.0)
    use = valid & dark_region_mask(img, valid, rho, gain, var0, s)
    polar = _polar(img, use, x0, y0, 1.0, 0.0, s, _r_max(img.shape, x0, y0))
    r_inner = _disk_radius(polar) * (1 + s.disk_margin) + 2.0
    windows = find_rings(polar, gain, var0, r_inner, s)
    if not windows:
        return none
    shifts = _sector_shifts(polar, windows, gain, var0, s)
    ok = shifts.coverage >= s.min_coverage
    shifts.sigma[~ok] = np.inf
    joint = _joint_fit(shifts, polar.phi, s, np.random.default_rng(0))
    if joint is None:
        return none
    w = np.isfinite(shifts.sigma).sum(1).astype(float)
    radius = float(np.sum(w * shifts.radius) / max(w.sum(), 1))
    ec, es = joint.coef[:2]
    cov = joint.cov[:2, :2]
    if joint.boot is not None:
        cov = np.maximum(cov, joint.boot[:2, :2])
    e = math.hypot(ec, es)
    sig_e = math.sqrt(max(0.5 * (cov[0, 0] + cov[1, 1]), 0))
    amp, sig = radius * e, radius * sig_e
    return Harmonic(amp, sig, 0.5 * math.atan2(es, ec), (1 + e) / (1 - e), radius,
                    bool(e <= s.harmonic_z * sig_e), True, polar.phi, joint.resid_shift)
