"""The ``py4DSTEM.DataCube`` methods: argument checks, calibration and EMD writes; nothing numeric.

Every method takes ``model`` (a manifest name, ``"default"`` or a ``.safetensors`` path from
``prenet train``), ``device`` (``"auto"``, ``"cpu"``, ``"cuda"``), ``batch_size`` (patterns per network
call) and ``progress`` (tqdm bar). None of them changes the input cube's data; results are new
DataCubes (float32 counts) and calibration written with py4DSTEM's own setters.
"""

from __future__ import annotations

import numpy as np
import py4DSTEM
import torch
from py4DSTEM.process.calibration.origin import fit_origin

from . import geometry, nodes
from .center import Origins, measure_origins, warp_cube
from .denoise import denoise
from .ellipse import EllipseFit, mean_centered_pattern, measure_ellipse
from .validation import InputError

FITS = (None, "plane", "parabola", "bezier_two", "constant")


def _new_cube(source: py4DSTEM.DataCube, data: np.ndarray, name: str) -> py4DSTEM.DataCube:
    """A DataCube holding ``data`` with a copy of ``source``'s pixel sizes and units (no origin/ellipse)."""
    old = source.calibration
    cube = py4DSTEM.DataCube(data=data, name=name)
    cal = cube.calibration
    for key in ("Q_pixel_size", "R_pixel_size", "Q_pixel_units", "R_pixel_units", "QR_rotation", "QR_flip"):
        if key in old.keys:
            cal[key] = old[key]
    cal.calibrate()
    return cube


def _mark_centred(cube: py4DSTEM.DataCube) -> None:
    """Record in ``cube``'s calibration that every optical axis sits at the detector centre."""
    cx, cy = geometry.detector_center(cube.data.shape)
    cube.calibration.set_origin_meas((cx, cy))
    cube.calibration.set_origin((cx, cy))


def _origins_from_calibration(cube: py4DSTEM.DataCube) -> tuple[np.ndarray, np.ndarray]:
    origin = cube.calibration.get_origin()
    if origin is None:
        raise InputError(
            "the cube's calibration holds no origin: run cube.prenet_center(...) first (or set one with "
            "cube.calibration.set_origin((qx0, qy0)))"
        )
    shape = cube.data.shape[:2]
    return tuple(np.broadcast_to(np.asarray(o, dtype=np.float64), shape) for o in origin)


def _fit_origins(origins: Origins, fit: str | None, robust: bool) -> tuple[np.ndarray, np.ndarray]:
    if fit is None:
        return origins.qx0, origins.qy0
    qx, qy, _, _ = fit_origin((origins.qx0, origins.qy0), fitfunction=fit, robust=robust)
    return np.asarray(qx, dtype=np.float64), np.asarray(qy, dtype=np.float64)


def prenet_denoise(self: py4DSTEM.DataCube, model: str = "default", device: str = "auto",
                   batch_size: int = 64, progress: bool = True) -> py4DSTEM.DataCube:
    """Denoise every diffraction pattern (U-Net + CBAM); returns a new DataCube.

    Counts in, counts out: the result has the input's shape and intensity scale (float32 counts, never
    negative). The input is not modified. The result carries metadata ``prenet_denoise`` (model,
    weights checksum, package version) and the input's pixel sizes.
    """
    data, loaded = denoise(self.data, model, device, batch_size, progress)
    cube = _new_cube(self, data, f"{self.name}_denoised")
    cube.metadata = nodes.provenance("denoise", loaded, units="counts")
    return cube


def _measure_centres(cube: py4DSTEM.DataCube, data, model, device, batch_size, progress, fit, robust):
    """Measure origins on ``data``, write them to ``cube``'s calibration, attach ``prenet_origin``."""
    if fit not in FITS:
        raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
    origins, loaded = measure_origins(data, model, device, batch_size, progress)
    qx0, qy0 = _fit_origins(origins, fit, robust)
    cal = cube.calibration
    cal.set_origin_meas((origins.qx0, origins.qy0))
    cal.set_origin((qx0, qy0))
    meta = nodes.provenance("center", loaded, units="pixels", fit=str(fit), robust=bool(robust),
                            aligned_with="fit" if fit else "measured")
    node = nodes.origin_node(origins.qx0, origins.qy0, origins.confidence, meta)
    cube.tree(node, force=True)
    return qx0, qy0, node


def _copy_node(node):
    """A fresh copy of a ``prenet_*`` node (a node belongs to one tree only)."""
    (meta,) = node.metadata.values()  # each prenet node carries exactly its provenance metadata
    make = nodes.origin_node if node.name == "prenet_origin" else nodes.ellipse_node
    return make(*node.data, meta.copy(name=meta.name))


def prenet_center(self: py4DSTEM.DataCube, model: str = "default", device: str = "auto",
                  batch_size: int = 64, progress: bool = True, align: bool = True,
                  fit: str | None = None, robust: bool = False):
    """Measure the optical axis ``(qx0, qy0)`` of every pattern and (by default) align the patterns.

    Writes to this cube's calibration: ``set_origin_meas`` gets the raw per-pattern measurement;
    ``set_origin`` gets the same values, or with ``fit`` ("plane", "parabola", "bezier_two", "constant";
    py4DSTEM's ``fit_origin``, ``robust`` for outlier rejection) a smooth fit across the scan, which
    removes per-pattern noise but also real jitter. Alignment uses ``origin`` (so the fit when given).
    Positions are pixels, py4DSTEM axes; the detector centre is ``(Qx/2, Qy/2)``.

    Attaches a ``prenet_origin`` RealSlice (qx0, qy0, confidence) under this cube.

    Returns the aligned DataCube (every optical axis moved to the detector centre by a bicubic
    sub-pixel translation, counts conserved; its calibration says the origin is the centre and it
    carries its own ``prenet_origin`` copy), or with ``align=False`` the ``prenet_origin`` node.
    """
    qx0, qy0, node = _measure_centres(self, self.data, model, device, batch_size, progress, fit, robust)
    if not align:
        return node
    cube = _new_cube(self, warp_cube(self.data, qx0, qy0, device=device, batch_size=batch_size,
                                     progress=progress), f"{self.name}_centered")
    _mark_centred(cube)
    cube.tree(_copy_node(node), force=True)
    return cube


def _measure_and_write_ellipse(cube: py4DSTEM.DataCube, data, qx0, qy0, model, device, batch_size, progress):
    mean = mean_centered_pattern(data, qx0, qy0, device, batch_size, progress)
    fit, loaded = measure_ellipse(mean, model, device)
    a, b, theta = geometry.ellipse_to_py4dstem(fit.ratio, fit.theta)
    cube.calibration.set_ellipse((a, b, theta))
    f = geometry.distortion_matrix(mean.shape, ratio=fit.ratio, theta=fit.theta)
    corrected = geometry.warp(torch.from_numpy(mean)[None], f, preserve_counts=True)[0].numpy()
    meta = nodes.provenance("ellipse", loaded, ratio=fit.ratio, theta=fit.theta, a=a, b=b,
                            confidence=fit.confidence, units="a/b dimensionless, theta radians from qx to qy")
    cube.tree(nodes.ellipse_node(mean, corrected, meta), force=True)
    return fit


def prenet_ellipse(self: py4DSTEM.DataCube, model: str = "default", device: str = "auto",
                   batch_size: int = 64, progress: bool = True, correct: bool = True):
    """Measure the elliptical distortion from the mean centred pattern and (by default) correct it.

    Needs an origin in the calibration (run :meth:`prenet_center` first, or call this on the cube it
    returned). Writes py4DSTEM's ``(a, b, theta)`` with ``set_ellipse``: ``a/b`` the measured axis
    ratio, ``b = 1`` (only the ratio and angle define the distortion), ``theta`` the a-axis angle in
    radians from qx towards qy. py4DSTEM's ``BraggVectors.calibrate()`` and polar transforms then apply
    exactly this package's correction (the a-axis compressed by b/a).

    Attaches a ``prenet_ellipse`` node (mean pattern before/after) under this cube. Returns the corrected
    DataCube (optical axis at the detector centre, circular rings, counts conserved), or with
    ``correct=False`` the measured :class:`~py4dstem_prenet.ellipse.EllipseFit`.
    """
    qx0, qy0 = _origins_from_calibration(self)
    cx, cy = geometry.detector_center(self.data.shape)
    centred = bool(np.all(qx0 == cx) and np.all(qy0 == cy))
    fit = _measure_and_write_ellipse(self, self.data, None if centred else qx0, None if centred else qy0,
                                     model, device, batch_size, progress)
    if not correct:
        return fit
    return _corrected_cube(self, self.data, qx0, qy0, fit, device, batch_size, progress)


def _corrected_cube(source, data, qx0, qy0, fit: EllipseFit, device, batch_size, progress):
    out = warp_cube(data, qx0, qy0, fit.ratio, fit.theta, device=device, batch_size=batch_size, progress=progress)
    cube = _new_cube(source, out, f"{source.name}_corrected")
    _mark_centred(cube)
    cube.tree(_copy_node(source.tree("prenet_ellipse")), force=True)
    return cube


def prenet_preprocess(self: py4DSTEM.DataCube, denoise_model: str = "default", center_model: str = "default",
                      ellipse_model: str = "default", device: str = "auto", batch_size: int = 64,
                      progress: bool = True, denoise_first: bool = True, fit: str | None = None,
                      robust: bool = False) -> py4DSTEM.DataCube:
    """The whole chain: denoise, measure centres, measure the ellipse, then correct in one resampling.

    Centres are measured on the patterns as recorded (the centre network was trained on noisy patterns;
    on the built-in example measuring on denoised ones triples the mean centre error); the ellipse on the
    mean of the centred, denoised patterns. The returned cube holds the denoised patterns
    (``denoise_first=False``: the raw ones), centred and corrected. This cube's calibration receives
    ``origin_meas``, ``origin`` (fitted if ``fit``) and ``ellipse`` exactly as from :meth:`prenet_center`
    and :meth:`prenet_ellipse`, and the nodes ``prenet_origin`` and ``prenet_ellipse`` are attached under
    it. Returns the denoised, centred and
    ellipse-corrected DataCube (float32 counts) carrying copies of both nodes and the denoise metadata.
    """
    data, den_meta = self.data, None
    if denoise_first:
        data, loaded = denoise(self.data, denoise_model, device, batch_size, progress)
        den_meta = nodes.provenance("denoise", loaded, units="counts")
    qx0, qy0, origin_node = _measure_centres(self, self.data, center_model, device, batch_size, progress, fit,
                                             robust)
    fit_e = _measure_and_write_ellipse(self, data, qx0, qy0, ellipse_model, device, batch_size, progress)
    cube = _corrected_cube(self, data, qx0, qy0, fit_e, device, batch_size, progress)
    cube.tree(_copy_node(origin_node), force=True)
    if den_meta is not None:
        cube.metadata = den_meta
    return cube


def register() -> None:
    """Attach the ``prenet_*`` methods to :class:`py4DSTEM.DataCube`."""
    for fn in (prenet_denoise, prenet_center, prenet_ellipse, prenet_preprocess):
        setattr(py4DSTEM.DataCube, fn.__name__, fn)
