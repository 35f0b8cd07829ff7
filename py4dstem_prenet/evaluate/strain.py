"""Downstream proof: py4DSTEM strain maps of an unstrained crystal, classical calibration vs ours.

The cube is a shipped clean abTEM pattern of crystalline Si near [011] (``source``: ``crystal_on_zone``
or ``crystal_tilted``, see :mod:`py4dstem_prenet.example`) at every scan position, so the true strain is
zero everywhere; it is recorded with a smooth descan drift (plane + parabola) plus jitter, an elliptical
distortion (:mod:`geometry`, applied as :func:`example.example_clean` does) and low-dose Poisson plus
read noise (:mod:`simulate.noise`). py4DSTEM's own strain mapping (``StrainMap``:
``choose_basis_vectors``, ``fit_basis_vectors``, ``get_strain``) then runs on five calibrations:

* **classical: origin + fit_ellipse_1D** (route a): Bragg disks on the raw cube; origins by
  ``BraggVectors.measure_origin`` (the disk nearest the detector centre: in a thick on-zone crystal the
  direct beam is dimmer than the first-order disks, so py4DSTEM's default "brightest peak" picks those),
  smoothed by ``fit_origin`` (robust parabola); the ellipse by ``fit_ellipse_1D`` on the calibrated Bragg
  vector map in a window around its strongest ring (:func:`classical.auto_fit_window`), applied with
  ``calibrate()`` unless the fit failed (:func:`classical_ellipse`).
* **classical: origin, no ellipse**: the same Bragg vectors and origins, no ellipse correction: what a
  user gets who rejects the ellipse fit.
* **classical origin + true ellipse (oracle)**: the same, with the true ellipse: the floor set by noise
  and disk detection, and a check of the whole measurement.
* **classical origin + prenet_ellipse**: the same, with our ellipse alone (``cube.prenet_ellipse``,
  which reads py4DSTEM's origins from the calibration and writes ``(a, b, theta)`` back to it).
* **ours: prenet_preprocess** (route b): the whole chain (denoise, centre, ellipse), then the same Bragg
  detection and ``StrainMap`` on the corrected cube with the calibration it carries (origin at the
  detector centre, no ellipse left).

Every route uses the same detection parameters and probe template: a synthetic disk
(``Probe.generate_synthetic_probe``) whose radius is the convergence semi-angle of the simulation over
its pixel size, i.e. what a user knows from the microscope settings, independent of the data and of any
calibration. The strain reference is the true, undistorted lattice: ``g1, g2`` fitted the same way on
the clean, centred, undistorted pattern, so a residual ellipse shows up as a mean strain and
position-dependent errors as scatter. Strains ``e_xx, e_yy, e_xy`` are py4DSTEM's (detector axes,
x = qx), in percent; the lattice rotation ``theta`` (radians) is reported x100 on the same scale
(1 % = 0.01 rad = 0.57 degrees).
"""

from __future__ import annotations

import contextlib
import io
import math
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import h5py
import matplotlib.pyplot as plt
import numpy as np
import py4DSTEM
import torch
from py4DSTEM.process.calibration.ellipse import fit_ellipse_1D

from .. import example, geometry
from ..simulate.noise import DetectorEffects, add_noise
from ..simulate.scans import descan_drift
from . import classical
from .harness import Table

SOURCE = "crystal_on_zone"
CLASSICAL = "classical: origin + fit_ellipse_1D"
NO_ELLIPSE = "classical: origin, no ellipse"
ORACLE = "classical origin + true ellipse (oracle)"
HYBRID = "classical origin + prenet_ellipse"
OURS = "ours: prenet_preprocess"
COMPONENTS = ("e_xx", "e_yy", "e_xy", "theta")
JITTER_PX = 0.15  # per-position descan jitter on top of the smooth drift, pixels
MAX_RATIO = 1.5  # an ellipse fit beyond this a/b is a failed fit (as in classical.py4dstem_fit_ellipse)

# Bragg disk detection, identical for every route and the reference (find_Bragg_disks arguments; pixels)
DETECTION = {"corrPower": 1.0, "sigma_cc": 1.0, "subpixel": "multicorr", "upsample_factor": 16,
             "minAbsoluteIntensity": 0.0, "minRelativeIntensity": 0.05, "relativeToPeak": 0,
             "minPeakSpacing": 7, "edgeBoundary": 4, "maxNumPeaks": 60}
# maxima of the Bragg vector map that become the indexed Bragg directions (StrainMap.choose_basis_vectors)
BASIS = {"subpixel": "multicorr", "upsample_factor": 16, "minSpacing": 6, "edgeBoundary": 2,
         "minRelativeIntensity": 0.01, "maxNumPeaks": 40}
MAX_PEAK_SPACING = 2.0  # pixels: a detected disk further than this from every Bragg direction is not used

Basis = tuple[tuple[float, float], tuple[float, float]]  # g1, g2 as (qx, qy), pixels


@dataclass
class Route:
    """One route's strain map against the true zero.

    strain : ``(4, Rx, Ry)`` e_xx, e_yy, e_xy (%) and theta (radians x 100), NaN where no lattice was fitted.
    ratio, theta : the ellipse the route measured (a/b, radians), ``None`` if it has none.
    applied : whether that ellipse was used to correct the Bragg vectors.
    seconds : wall time of calibration, detection and strain mapping.
    """

    strain: np.ndarray
    ratio: float | None
    theta: float | None
    applied: bool
    seconds: float

    @property
    def fitted(self) -> np.ndarray:
        """``(Rx, Ry)`` bool: positions where py4DSTEM fitted the lattice."""
        return np.isfinite(self.strain[0])

    def rms(self) -> float:
        """RMS of e_xx, e_yy and e_xy over the fitted positions, %: the strain error (the truth is 0)."""
        m = self.fitted
        return float(np.sqrt(np.mean(self.strain[:3, m] ** 2))) if m.any() else float("nan")


@dataclass
class StrainComparison:
    """Every route on one simulated cube: ``truth`` as from :func:`simulate_unstrained`, ``reference`` the
    true ``g1, g2`` (pixels), ``routes`` by name (the module docstring lists them)."""

    truth: dict
    reference: Basis
    routes: dict[str, Route]

    def table(self) -> Table:
        """Mean and standard deviation over the fitted positions of each component, per route."""
        t = self.truth
        scan = t["qx0"].shape
        table = Table(
            f"Strain of an unstrained crystal ({t['source']}), {scan[0]}x{scan[1]} scan, {t['dose']:.0f} e-/pattern, "
            f"drift up to {t['drift_px']:.1f} px, true ellipse a/b {t['ratio']:.3f} at "
            f"{math.degrees(t['theta']):.1f} deg; errors against the true zero: strains in %, theta in 0.01 rad",
            ["route", "a/b", "angle (deg)", "ellipse used", "fitted",
             *[f"{c} {s}" for c in COMPONENTS for s in ("mean", "std")], "RMS strain", "seconds"])
        for name, r in self.routes.items():
            m = r.fitted
            stats = [float(f(r.strain[i, m])) if m.any() else float("nan")
                     for i in range(len(COMPONENTS)) for f in (np.mean, np.std)]
            angle = None if r.theta is None else math.degrees(r.theta)
            table.rows.append([name, "-" if r.ratio is None else r.ratio, "-" if r.theta is None else angle,
                               "yes" if r.applied else "no", f"{int(m.sum())}/{m.size}", *stats, r.rms(), r.seconds])
        return table


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """py4DSTEM's strain steps draw figures, print progress bars and warn (e.g. "QR rotation not
    calibrated"); keep the caller's figures and terminal clean."""
    before = set(plt.get_fignums())
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()), \
                contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for num in set(plt.get_fignums()) - before:
            plt.close(num)


def load_source(source: str = SOURCE) -> tuple[np.ndarray, float]:
    """A clean shipped pattern ``(Q, Q)`` (fraction of the electrons per pixel) and its probe radius in
    pixels (convergence semi-angle / reciprocal pixel size of the simulation)."""
    with h5py.File(example.SOURCES, "r") as f:
        ds = f[source]
        return ds[()].astype(np.float64), float(ds.attrs["semiangle_mrad"]) / float(ds.attrs["mrad_per_px"])


def simulate_unstrained(scan: tuple[int, int] = (12, 12), dose: float = example.DOSE, ratio: float = 1.05,
                        theta: float = math.radians(35.0), drift_px: float = 4.0, seed: int = 0,
                        source: str = SOURCE) -> tuple[py4DSTEM.DataCube, dict]:
    """The recorded cube (float32 counts) of an unstrained crystal and its truth.

    ``dose``: electrons per pattern; ``ratio`` (a/b) and ``theta`` (radians, qx towards qy): the elliptical
    distortion; ``drift_px``: largest descan excursion, pixels. The truth holds ``qx0, qy0`` (pixels) and
    the arguments ``ratio``, ``theta``, ``dose``, ``drift_px``, ``source``.
    """
    pattern, _ = load_source(source)
    rng = np.random.default_rng(seed)
    qx0, qy0 = descan_drift(scan, drift_px, rng, pattern.shape, jitter_px=JITTER_PX)
    n = qx0.size
    ideal = torch.from_numpy(pattern)[None].expand(n, *pattern.shape).contiguous()
    f = geometry.distortion_matrix(pattern.shape, qx0.ravel(), qy0.ravel(), ratio, theta)
    clean = geometry.warp(ideal, geometry.invert(f), preserve_counts=True).clamp_min(0)
    noisy = add_noise(clean.float(), dose, torch.Generator().manual_seed(seed),
                      DetectorEffects(read_noise=example.READ_NOISE))
    cube = py4DSTEM.DataCube(data=noisy.numpy().reshape(*scan, *pattern.shape), name="unstrained")
    return cube, {"qx0": qx0, "qy0": qy0, "ratio": ratio, "theta": theta, "dose": dose, "drift_px": drift_px,
                  "source": source}


def probe_kernel(radius: float, shape: tuple[int, int]) -> np.ndarray:
    """py4DSTEM cross-correlation kernel of a synthetic probe of ``radius`` pixels (1 px edge): the disk
    with a sine-squared negative annulus out to twice the radius, centred at the origin."""
    probe = py4DSTEM.Probe.generate_synthetic_probe(radius, 1.0, shape)
    return probe.get_kernel(mode="sigmoid", origin=geometry.detector_center(shape), radii=(radius, 2 * radius))


def _lattice_fit(bv: py4DSTEM.BraggVectors, g_ref: Basis | None) -> py4DSTEM.StrainMap:
    """``StrainMap`` with the basis vectors fitted at every position. With ``g_ref`` the basis is the pair
    of Bragg-vector-map maxima nearest to it (the same reflections as the reference), otherwise
    py4DSTEM's automatic choice."""
    sm = py4DSTEM.StrainMap(braggvectors=bv)
    sm.choose_basis_vectors(**BASIS)
    if g_ref is not None:
        gx, gy = sm.g["x"] - sm.g0[0], sm.g["y"] - sm.g0[1]
        pick = [int(np.argmin(np.hypot(gx - g[0], gy - g[1]))) for g in ((0.0, 0.0), *g_ref)]
        sm.choose_basis_vectors(index_origin=pick[0], index_g1=pick[1], index_g2=pick[2], **BASIS)
    sm.max_peak_spacing = MAX_PEAK_SPACING  # set directly: set_max_peak_spacing() would plt.show()
    sm.fit_basis_vectors()
    return sm


def reference_lattice(source: str = SOURCE, dose: float = example.DOSE) -> Basis:
    """The true ``g1, g2`` (pixels): the basis fitted with the same detection on the clean, centred,
    undistorted pattern at ``dose`` electrons."""
    pattern, radius = load_source(source)
    cube = py4DSTEM.DataCube(data=(pattern * dose).astype(np.float32)[None, None])
    with _quiet():
        bv = cube.find_Bragg_disks(probe_kernel(radius, pattern.shape), **DETECTION)
        bv.calibration.set_origin(geometry.detector_center(pattern.shape))
        bv.calibrate()
        g = _lattice_fit(bv, None).g1g2_map
    return tuple((float(g.get_slice(f"{k}x").data[0, 0]), float(g.get_slice(f"{k}y").data[0, 0]))
                 for k in ("g1", "g2"))


def _strain(bv: py4DSTEM.BraggVectors, g_ref: Basis) -> np.ndarray:
    """``(4, Rx, Ry)`` strain against ``g_ref`` (% and radians x 100), NaN where the fit failed."""
    sm = _lattice_fit(bv, g_ref)
    sm.get_strain(gvects=g_ref)
    out = 100.0 * np.array(sm.data[:4], dtype=np.float64)
    out[:, ~sm.data[4].astype(bool)] = np.nan
    return out


def classical_ellipse(bv: py4DSTEM.BraggVectors) -> tuple[float, float, float, float, float] | None:
    """py4DSTEM ``fit_ellipse_1D`` on the centred Bragg vector map, in a window around its strongest ring
    (:func:`classical.auto_fit_window`): ``p_ellipse`` (pixels, radians), or ``None`` for a failed fit
    (not finite, or a/b beyond ``MAX_RATIO``)."""
    bvm = bv.histogram(mode="cal")
    radii = classical.auto_fit_window(bvm.data, bvm.origin)
    try:
        p = fit_ellipse_1D(bvm.data, center=bvm.origin, fitradii=radii)
    except Exception:  # a failed fit is a result, not an error
        return None
    a, b = p[2], p[3]
    if not (np.all(np.isfinite(p)) and a > 0 and b > 0 and max(a, b) / min(a, b) < MAX_RATIO):
        return None
    return p


def _route(bv: py4DSTEM.BraggVectors, g_ref: Basis, ellipse: tuple[float, float] | None, applied: bool,
           seconds: float) -> Route:
    """Strain of ``bv`` with its calibrated origin and, if ``applied``, ``ellipse = (a/b, radians)``
    written to its calibration as py4DSTEM's ``(a, b, theta)`` (``b = 1``: the correction depends on b/a
    and theta only); ``seconds`` is the time spent before, to which the strain mapping's adds."""
    t0 = time.perf_counter()
    if applied:
        bv.calibration.set_ellipse(geometry.ellipse_to_py4dstem(*ellipse))
    bv.setcal(center=True, ellipse=applied, pixel=False, rotate=False)  # = calibrate(), but can drop the ellipse
    ratio, theta = ellipse if ellipse is not None else (None, None)
    return Route(_strain(bv, g_ref), ratio, theta, applied, seconds + time.perf_counter() - t0)


def classical_routes(cube: py4DSTEM.DataCube, kernel: np.ndarray, g_ref: Basis, truth: dict,
                     device: str = "cpu") -> dict[str, Route]:
    """Bragg disks on the raw cube and py4DSTEM's origin calibration, then strain with four ellipse
    calibrations of the same Bragg vectors: py4DSTEM's ``fit_ellipse_1D`` (applied unless it failed, see
    :func:`classical_ellipse`), none, the true one (an oracle: the floor set by noise and detection), and
    ours alone (``prenet_ellipse`` on the raw cube, which reads py4DSTEM's origins from the calibration)."""
    t0 = time.perf_counter()
    with _quiet():
        bv = cube.find_Bragg_disks(kernel, **DETECTION)
        bv.measure_origin(center_guess=geometry.detector_center(cube.data.shape), score_method="distance")
        bv.fit_origin(fitfunction="parabola", robust=True, plot=False)
        t_origin = time.perf_counter() - t0
        p = classical_ellipse(bv)
        fitted = None if p is None else geometry.ellipse_from_py4dstem(*p[2:])
        routes = {CLASSICAL: _route(bv, g_ref, fitted, p is not None, time.perf_counter() - t0),
                  NO_ELLIPSE: _route(bv, g_ref, None, False, t_origin),
                  ORACLE: _route(bv, g_ref, (truth["ratio"], truth["theta"]), True, t_origin)}
    t1 = time.perf_counter()
    fit = cube.prenet_measure_ellipse(device=device, progress=False)
    with _quiet():
        routes[HYBRID] = _route(bv, g_ref, (fit.ratio, fit.theta), True, t_origin + time.perf_counter() - t1)
    return routes


def prenet_route(cube: py4DSTEM.DataCube, kernel: np.ndarray, g_ref: Basis, device: str = "cpu") -> Route:
    """``prenet_preprocess``, then the same detection and strain on the corrected cube."""
    t0 = time.perf_counter()
    corrected = cube.prenet_preprocess(device=device, progress=False)
    ratio, theta = geometry.ellipse_from_py4dstem(*cube.calibration.get_ellipse())
    with _quiet():
        bv = corrected.find_Bragg_disks(kernel, **DETECTION)
        bv.calibrate()  # origin = detector centre, written by prenet_preprocess; no ellipse left
        strain = _strain(bv, g_ref)
    return Route(strain, ratio, theta, True, time.perf_counter() - t0)


def compare_strain(scan: tuple[int, int] = (12, 12), dose: float = example.DOSE, ratio: float = 1.05,
                   theta: float = math.radians(35.0), drift_px: float = 4.0, seed: int = 0, device: str = "cpu",
                   source: str = SOURCE) -> StrainComparison:
    """Simulate the unstrained cube (:func:`simulate_unstrained`; dose in electrons per pattern, ``theta``
    in radians, ``drift_px`` in pixels) and run every route on it."""
    cube, truth = simulate_unstrained(scan, dose, ratio, theta, drift_px, seed, source)
    _, radius = load_source(source)
    kernel = probe_kernel(radius, cube.data.shape[-2:])
    g_ref = reference_lattice(source, dose)
    routes = classical_routes(cube, kernel, g_ref, truth, device)
    # ours on a cube of its own: prenet_preprocess writes its origins and ellipse to the input's calibration
    routes[OURS] = prenet_route(py4DSTEM.DataCube(data=cube.data, name=cube.name), kernel, g_ref, device)
    return StrainComparison(truth, g_ref, routes)


def strain_comparison(scan: tuple[int, int] = (12, 12), dose: float = example.DOSE, ratio: float = 1.05,
                      theta: float = math.radians(35.0), drift_px: float = 4.0, seed: int = 0,
                      device: str = "cpu", source: str = SOURCE) -> Table:
    """The printed table of :func:`compare_strain`: per route the ellipse it measured, the fitted
    positions, mean and standard deviation of each strain component (%) and of theta (0.01 rad) over the
    scan, the RMS strain error (%) and the run time (s)."""
    return compare_strain(scan, dose, ratio, theta, drift_px, seed, device, source).table()
