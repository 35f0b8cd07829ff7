"""The detector's noise model estimated from the data itself (Poisson-Gaussian, :mod:`simulate.noise`).

A detector reading ``x`` (detector units) of a pixel that receives on average ``mu`` electrons is
``x = gain * Poisson(mu) + offset + Normal(0, gain * read_noise)``: its variance is linear in its mean,

    var(x) = gain * (mean(x) - offset) + (gain * read_noise)^2,

with ``gain`` in detector units per electron, ``offset`` (the dark level) in detector units and
``read_noise`` in electrons rms. A counting detector (Medipix, Merlin, most direct-electron counters) has
gain 1, offset 0 and no read noise; an integrating one (CCD, CMOS, EMPAD) any gain, 0-2 electrons of read
noise and an offset, which dark subtraction can leave at 0 with negative readings.

:func:`estimate_noise` measures the variance-mean relation with differences that cancel the signal:
each pattern minus the mean of its two scan neighbours (along ``Ry``), and each pixel minus the mean of
its four detector neighbours. Both are free of signal where the signal is smooth in that direction, and
both only over-estimate the variance where it is not (the scan difference at moving disk edges, the
detector difference at sharp features), so per bin of mean intensity the smaller of the two is kept. The
mean each pixel is binned by comes from the scan neighbours only, so it is independent of the pixel's own
noise. A straight line through the binned variances (weighted, bins far above the line dropped as
structure) gives gain and intercept; the offset is 0 unless the intercept is negative (a pedestal), then
the darkest region's level.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from scipy.ndimage import uniform_filter


@dataclass(frozen=True)
class NoiseModel:
    """Poisson-Gaussian detector noise (see module docstring).

    gain : detector units per electron (1 for a counting detector).
    read_noise : Gaussian read noise, electrons rms.
    offset : dark level, detector units.
    gain_err, read_noise_err : standard errors of the estimates (0 when given).
    counting : the data are consistent with a counting detector (gain 1, no read noise, no offset).
    source : "estimated", "given" or "counting" (a counting detector assumed or detected).
    """

    gain: float = 1.0
    read_noise: float = 0.0
    offset: float = 0.0
    gain_err: float = 0.0
    read_noise_err: float = 0.0
    counting: bool = True
    source: str = "counting"

    def to_electrons(self, x: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """Detector units -> electrons, ``(x - offset) / gain`` (negative readings are kept)."""
        return (x - self.offset) / self.gain

    def from_electrons(self, e: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """Electrons -> detector units (inverse of :meth:`to_electrons`)."""
        return e * self.gain + self.offset

    def as_dict(self) -> dict[str, Any]:
        """Plain values for the metadata, with the units."""
        d = asdict(self)
        d["units"] = "gain: detector units per electron; read_noise: electrons rms; offset: detector units"
        return d


def _residuals(block: np.ndarray) -> tuple[np.ndarray, ...]:
    """For ``block (Rx, Ry, Qx, Qy)`` float64 with ``Ry >= 3``, over the interior patterns and pixels
    (flattened): the binning key, the 3x3 box of the two scan neighbours without their centre pixels
    (independent of every reading in the residuals); the scan residual ``x - (left + right) / 2`` and the
    detector residual ``x - mean(4 neighbours)``, each scaled to the variance of one reading; and for each
    the same combination of the readings' means (``(x + (left + right) / 4) / 1.5`` and
    ``(x + sum(4 neighbours) / 16) / 1.25``), whose average over a bin estimates the bin's mean exactly as
    the residual's mean square estimates its variance."""
    box = uniform_filter(block, size=(1, 1, 3, 3), mode="nearest") * 9 - block
    c = block[:, 1:-1, 1:-1, 1:-1]
    left, right = block[:, :-2, 1:-1, 1:-1], block[:, 2:, 1:-1, 1:-1]
    key = (box[:, :-2, 1:-1, 1:-1] + box[:, 2:, 1:-1, 1:-1]) / 16
    scan = (c - 0.5 * (left + right)) / np.sqrt(1.5)
    m_scan = (c + 0.25 * (left + right)) / 1.5
    mid = block[:, 1:-1]
    nb = mid[..., :-2, 1:-1] + mid[..., 2:, 1:-1] + mid[..., 1:-1, :-2] + mid[..., 1:-1, 2:]
    det = (c - nb / 4) / np.sqrt(1.25)
    m_det = (c + nb / 16) / 1.25
    return tuple(a.ravel() for a in (key, scan, m_scan, det, m_det))


def _binned_variance(key, scan, m_scan, det, m_det, bins: int, min_pixels: int):
    """Per bin of ``key`` (half the edges quantiles, half log-spaced over the bright pixels, so the few
    bright pixels get bins too), sorted by mean: the mean and variance of the residual (scan or detector)
    with the smaller variance (both combined when they agree within 3 standard errors + 2 %), its
    standard error, and whether the two agreed."""
    q = np.quantile(key, np.linspace(0, 1, bins // 2 + 1))
    top = np.geomspace(max(q[-2], 1e-3), max(q[-1], 2e-3), bins // 2 + 1)
    edges = np.unique(np.concatenate([q[:-1], top]))
    idx = np.clip(np.searchsorted(edges, key, side="right") - 1, 0, len(edges) - 2)
    n = np.bincount(idx, minlength=len(edges) - 1)
    ok = n >= min_pixels

    def per_bin(w):
        return np.bincount(idx, w, len(n))[ok] / n[ok]

    v_scan, v_det = per_bin(scan**2), per_bin(det**2)
    e_scan = np.sqrt(np.maximum(per_bin(scan**4) - v_scan**2, 1e-24) / n[ok])
    e_det = np.sqrt(np.maximum(per_bin(det**4) - v_det**2, 1e-24) / n[ok])
    m_s, m_d = per_bin(m_scan), per_bin(m_det)
    agree = np.abs(v_scan - v_det) < 3 * np.hypot(e_scan, e_det) + 0.02 * np.minimum(v_scan, v_det)
    use_scan = v_scan <= v_det
    w_s, w_d = 1 / e_scan**2, 1 / e_det**2
    both = (w_s * v_scan + w_d * v_det) / (w_s + w_d), (w_s * m_s + w_d * m_d) / (w_s + w_d)
    v = np.where(agree, both[0], np.where(use_scan, v_scan, v_det))
    m = np.where(agree, both[1], np.where(use_scan, m_s, m_d))
    err = np.where(agree, 1 / np.sqrt(w_s + w_d), np.where(use_scan, e_scan, e_det))
    order = np.argsort(m)
    return m[order], v[order], err[order], agree[order]


def _fit_line(m: np.ndarray, v: np.ndarray, err: np.ndarray, agree: np.ndarray, slope: float | None = None):
    """Weighted straight line ``v = a m + b`` through the binned variances (sorted by mean): fitted on
    the darkest bins whose two residuals agree (at most half of them, at least 3), then extended bin by
    bin towards brighter ones while the next bin's scan and detector residuals agree and it agrees with
    the line, each within 3 standard errors + 2 %
    (structure only ever adds variance, differently to the two residuals, and more of it the brighter
    the pixel); ``slope`` fixes ``a``. Returns ``a, b`` and their covariance."""
    def fit(k):
        w = 1 / err[:k] ** 2
        if slope is not None:
            b = float(np.sum(w * (v[:k] - slope * m[:k])) / np.sum(w))
            return slope, b, np.diag([0.0, 1 / np.sum(w)])
        a_mat = np.stack([m[:k], np.ones(k)], 1)
        cov = np.linalg.pinv(a_mat.T @ (a_mat * w[:, None]))
        a, b = cov @ (a_mat.T @ (w * v[:k]))
        chi2 = float(np.sum(w * (v[:k] - (a * m[:k] + b)) ** 2) / max(k - 2, 1))
        return float(a), float(b), cov * max(chi2, 1.0)

    run = int(np.argmin(agree)) if not agree.all() else len(m)  # the darkest bins free of structure
    k = min(len(m), max(3, min(run, len(m) // 2)))
    a, b, cov = fit(k)
    while k < len(m) and agree[k]:
        pred = a * m[k] + b
        if abs(v[k] - pred) > 3 * err[k] + 0.02 * abs(pred):
            break
        k += 1
        a, b, cov = fit(k)
    return a, b, cov


def estimate_noise(data: Any, *, max_patterns: int = 256, bins: int = 40, gain: float | None = None,
                   read_noise: float | None = None, offset: float | None = None) -> NoiseModel:
    """The detector's :class:`NoiseModel` from the scan ``data (Rx, Ry, Qx, Qy)`` itself (see the module
    docstring for the method).

    ``max_patterns``: at most this many patterns (whole scan rows, evenly spread) are read. ``gain``,
    ``read_noise`` (electrons rms), ``offset``: known values are used as given and not estimated. A scan
    needs at least 3 positions along ``Ry`` (or ``Rx``) to be estimated; otherwise, and for data that are
    non-negative integers with no read noise and a gain within 15 % of 1 (signal structure biases the
    slope up by a few % on strongly structured scans), a counting detector is returned.
    """
    if gain is not None and read_noise is not None and offset is not None:
        return NoiseModel(float(gain), float(read_noise), float(offset), counting=False, source="given")
    shape = tuple(data.shape)
    if len(shape) != 4:
        raise ValueError(f"estimate_noise needs a scan (Rx, Ry, Qx, Qy), got shape {shape}")
    rx, ry = shape[:2]
    if ry < 3 and rx >= 3:
        data, (rx, ry) = np.swapaxes(np.asarray(data), 0, 1), (ry, rx)
    if ry < 3 or min(shape[2:]) < 8:
        return NoiseModel(1.0 if gain is None else float(gain), read_noise or 0.0, offset or 0.0,
                          source="counting" if gain is None else "given")
    rows = np.unique(np.linspace(0, rx - 1, max(1, min(rx, max_patterns // ry))).round().astype(int))
    block = np.stack([np.asarray(data[r], dtype=np.float64) for r in rows])
    integer = bool(np.all(block >= 0) and np.all(block == np.round(block)))
    res = _residuals(block)
    key = res[0]
    m, v, err, agree = _binned_variance(*res, bins, min_pixels=max(50, key.size // (20 * bins)))
    if len(m) < 3:
        return NoiseModel(source="counting")
    a, b, cov = _fit_line(m, v, err, agree, None if gain is None else float(gain))
    a_err, b_err = float(np.sqrt(cov[0, 0])), float(np.sqrt(cov[1, 1]))
    source = "estimated"
    if gain is None and not a_err < 0.1 * abs(a):  # too little signal to measure the gain: 1 is assumed
        a, b, cov = _fit_line(m, v, err, agree, 1.0)
        a_err, b_err, source = 0.0, float(np.sqrt(cov[1, 1])), "estimated (gain not measurable, 1 assumed)"
    if integer and abs(a - 1) < max(3 * a_err, 0.15) and b < max(3 * b_err, 0.05) and offset in (None, 0):
        return NoiseModel(1.0, 0.0, 0.0, a_err, 0.0, counting=True, source="counting")
    if offset is not None:
        off = float(offset)
    elif b < -3 * b_err:  # a pedestal: the darkest region is taken to hold no signal
        off = float(m.min())
    else:
        off = 0.0
    var_read = max(b + a * off, 0.0)
    read = float(np.sqrt(var_read) / a) if read_noise is None else float(read_noise)
    read_err = float(b_err / (2 * a * max(np.sqrt(var_read), 1e-3))) if read_noise is None else 0.0
    return NoiseModel(float(a), read, off, a_err, min(read_err, 10.0), counting=False, source=source)
