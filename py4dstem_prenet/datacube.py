"""The ``py4DSTEM.DataCube`` methods: argument checks, calibration and EMD writes; nothing numeric.

Every method takes keyword arguments only: ``model`` (a name from :func:`weights.list_models`,
``"default"`` or a ``.safetensors`` path from ``prenet train``), ``device`` (``"auto"``, ``"cpu"``,
``"cuda[:N]"``), ``batch_size`` (patterns per network call), ``progress`` (tqdm bar) and ``client`` (a
``dask.distributed.Client``), all checked before any pass. Each returns one type: ``prenet_measure_origin``
the ``prenet_origin`` node, ``prenet_measure_ellipse`` an :class:`~ellipse.EllipseFit`, the others a new
DataCube (float32, the input's units). None of them changes the input cube's data; calibration is
written with py4DSTEM's own setters.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import py4DSTEM
import torch

from . import geometry, nodes
from .center import measure_origins
from .denoise import plan_denoise
from .ellipse import EllipseFit, mean_centered_pattern, measure_ellipse
from .noise_estimate import NoiseModel
from .pipeline import ChainResult, fit_origins, run_chain, transform
from .survey import cleaned, preflight
from .validation import InputError, check_origins
from .weights import LoadedModel


def _new_cube(source: py4DSTEM.DataCube, data: Any, name: str) -> py4DSTEM.DataCube:
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


def _copy_node(node):
    """A fresh copy of a ``prenet_*`` node (a node belongs to one tree only)."""
    (meta,) = node.metadata.values()  # each prenet node carries exactly its provenance metadata
    make = nodes.origin_node if node.name == "prenet_origin" else nodes.ellipse_node
    return make(*node.data, meta.copy(name=meta.name))


def prenet_denoise(self: py4DSTEM.DataCube, *, model: str = "default", variants: tuple[str, ...] | None = None,
                   noise: NoiseModel | None = None, device: str = "auto", batch_size: int = 64,
                   progress: bool = True, client: Any = None) -> py4DSTEM.DataCube:
    """Denoise every diffraction pattern; returns a new DataCube.

    The detector's noise model (gain, read noise, offset) is estimated from the cube
    (:func:`noise_estimate.estimate_noise`; give ``noise`` to set it) and the denoising is done in
    electrons. A self-check (:func:`denoise.plan_denoise`) estimates, from the noisy data alone, the error
    of each candidate (``variants``: default the U-Net + CBAM ``model``, the scan-neighbour network and a
    low-rank reconstruction over the scan) and uses the blend of them and the input with the lowest
    estimated error (the input itself when nothing helps), bias-corrected per output level.

    The result has the input's shape and units (float32; never negative for a counting detector; with
    read noise, like the input, it may hold small negative values). The input is not modified. The
    result carries metadata ``prenet_denoise`` (model, weights checksum, package version, noise model,
    the self-check's choice and its estimated MSE reduction with its uncertainty) and the input's pixel
    sizes. ``client``: a ``dask.distributed.Client`` to spread the work over a cluster (same result).
    """
    survey = preflight(self.data, batch_size=batch_size, device=device, models={"denoise": model},
                       progress=progress, client=client)
    source = cleaned(self.data, survey)
    plan = plan_denoise(source, model=model, variants=variants, noise=noise, device=device, batch_size=batch_size)
    data, plan = transform(source, denoise_model=plan, device=device, batch_size=batch_size,
                           progress=progress, client=client)
    cube = _new_cube(self, data, f"{self.name}_denoised")
    cube.metadata = nodes.provenance("denoise", plan.loaded, **plan.metadata())
    cube.metadata = survey.metadata()
    return cube


def _write_origins(cube: py4DSTEM.DataCube, origins, qx0, qy0, loaded: LoadedModel, fit, robust):
    """Write measured and aligned origins to ``cube``'s calibration; attach and return ``prenet_origin``."""
    cal = cube.calibration
    cal.set_origin_meas((origins.qx0, origins.qy0))
    cal.set_origin((qx0, qy0))
    info = origins.info or {}
    meta = nodes.provenance("center", loaded, units="pixels (qx0, qy0, sigma)", fit=str(fit), robust=bool(robust),
                            aligned_with="fit" if fit else "measured", **info)
    node = nodes.origin_node(origins.qx0, origins.qy0, origins.confidence, origins.sigma, origins.flag,
                             origins.method, meta)
    cube.tree(node, force=True)
    return node


def prenet_measure_origin(self: py4DSTEM.DataCube, *, model: str = "default", fit: str | None = None,
                          robust: bool = False, device: str = "auto", batch_size: int = 64, progress: bool = True,
                          client: Any = None) -> py4DSTEM.RealSlice:
    """Measure the optical axis ``(qx0, qy0)`` of every pattern (pixels, py4DSTEM axes; the detector
    centre is ``(Qx/2, Qy/2)``); returns the ``prenet_origin`` node (RealSlice: qx0, qy0, confidence,
    sigma, flag, method; see :mod:`nodes`), also attached under this cube.

    Hot and dead pixels and a pedestal found by the survey pre-pass (:mod:`survey`) are repaired first.
    Writes to this cube's calibration: ``set_origin_meas`` gets the per-pattern measurement;
    ``set_origin`` gets the same values, or with ``fit`` ("plane", "parabola", "bezier_two", "constant";
    py4DSTEM's ``fit_origin``, ``robust`` for outlier rejection) a smooth fit across the scan, which
    removes per-pattern noise but also real jitter. The node's metadata says how each position was
    measured and with which settings. ``client``: a ``dask.distributed.Client`` (same result).
    """
    return _measure_origin(self, model, fit, robust, device, batch_size, progress, client)[0]


def _measure_origin(cube, model, fit, robust, device, batch_size, progress, client):
    """The measurement of :func:`prenet_measure_origin`; also returns the aligned origins and the survey."""
    survey = preflight(cube.data, batch_size=batch_size, device=device, fit=fit, robust=robust,
                       models={"center": model}, progress=progress, client=client)
    origins, loaded, _ = measure_origins(cleaned(cube.data, survey), model, device, batch_size, progress,
                                         client=client, mask=~survey.mask)
    qx0, qy0 = fit_origins(origins, fit, robust)
    return _write_origins(cube, origins, qx0, qy0, loaded, fit, robust), qx0, qy0, survey


def prenet_center(self: py4DSTEM.DataCube, *, model: str = "default", fit: str | None = None,
                  robust: bool = False, device: str = "auto", batch_size: int = 64, progress: bool = True,
                  client: Any = None) -> py4DSTEM.DataCube:
    """Measure the optical axis of every pattern (exactly as :func:`prenet_measure_origin`, which writes
    this cube's calibration and ``prenet_origin`` node) and return the aligned DataCube: every optical
    axis moved to the detector centre by a bicubic sub-pixel translation (at ``origin``, so the fit when
    ``fit`` is given), counts conserved, hot/dead pixels repaired and the pedestal removed; its
    calibration says the origin is the centre and it carries its own ``prenet_origin`` copy.
    ``client``: a ``dask.distributed.Client`` to spread the work over a cluster (same result).
    """
    node, qx0, qy0, survey = _measure_origin(self, model, fit, robust, device, batch_size, progress, client)
    data, _ = transform(cleaned(self.data, survey), qx0=qx0, qy0=qy0, device=device, batch_size=batch_size,
                        progress=progress, client=client)
    cube = _new_cube(self, data, f"{self.name}_centered")
    _mark_centred(cube)
    cube.tree(_copy_node(node), force=True)
    return cube


def _write_ellipse(cube: py4DSTEM.DataCube, mean: np.ndarray, fit: EllipseFit, loaded: LoadedModel):
    """Write the ellipse to ``cube``'s calibration (py4DSTEM's ``(a, b, theta)``, ``b = 1``; with
    ``a = b = 1`` when not measurable, the correction the chain applied) plus its errors and the ring
    centre offset (``ellipse_ratio_sigma``, ``ellipse_theta_sigma``, ``ellipse_measurable``,
    ``ring_center_offset``); attach and return ``prenet_ellipse`` (the mean pattern before and after the
    correction, and the fit in its metadata)."""
    a, b, theta = geometry.ellipse_to_py4dstem(fit.ratio, fit.theta)
    cal = cube.calibration
    cal.set_ellipse((a, b, theta))
    cal["ellipse_measurable"] = int(fit.measurable)
    if fit.measurable:
        cal["ellipse_ratio_sigma"] = float(fit.ratio_sigma)
        cal["ellipse_theta_sigma"] = float(fit.theta_sigma)
        cal["ring_center_offset"] = tuple(float(v) for v in fit.center_offset)
    f = geometry.distortion_matrix(mean.shape, ratio=fit.ratio, theta=fit.theta)
    corrected = geometry.warp(torch.from_numpy(mean.astype(np.float32))[None], f, preserve_counts=True,
                              clamp=True)[0].numpy()
    values = dict(
        method="ring fit (py4dstem_prenet.rings.fit_rings)", ratio=fit.ratio, theta=fit.theta,
        a=a, b=b, ratio_sigma=float(fit.ratio_sigma), theta_sigma=float(fit.theta_sigma),
        measurable=int(fit.measurable), reason=fit.reason, ring_x0=float(fit.x0), ring_y0=float(fit.y0),
        ring_center_offset_qx=float(fit.center_offset[0]), ring_center_offset_qy=float(fit.center_offset[1]),
        center_used="direct-beam origin (calibration origin), as py4DSTEM's calibrate() and polar transforms",
        residual_px=float(fit.residual), chi2=float(fit.chi2), ring_radii=", ".join(f"{r:.1f}" for r in fit.radii),
        harmonic_after_px=float(fit.harmonic), harmonic_after_sigma_px=float(fit.harmonic_sigma),
        check_ok=int(fit.check_ok),
        units="a/b dimensionless, theta radians from qx to qy, positions and radii pixels of the centred mean")
    # a value that could not be measured is left out (NaN would not survive comparisons or every reader)
    meta = nodes.provenance("ellipse", loaded, **{k: v for k, v in values.items()
                                                  if not (isinstance(v, float) and not np.isfinite(v))})
    node = nodes.ellipse_node(mean, corrected, meta)
    cube.tree(node, force=True)
    return node


def prenet_measure_ellipse(self: py4DSTEM.DataCube, *, model: str = "default", device: str = "auto",
                           batch_size: int = 64, progress: bool = True, client: Any = None) -> EllipseFit:
    """Measure the elliptical distortion from the mean centred pattern; returns the
    :class:`~py4dstem_prenet.ellipse.EllipseFit` (a/b, theta, their errors, the ring centre, or "not
    measurable" with the reason).

    Needs an origin in the calibration (run :meth:`prenet_measure_origin` or :meth:`prenet_center` first,
    or call this on the cube the latter returned). The ellipse is a fit to the rings of the mean
    (:func:`ellipse.measure_ellipse`). Writes py4DSTEM's ``(a, b, theta)`` with ``set_ellipse``: ``a/b``
    the measured axis ratio, ``b = 1`` (only the ratio and angle define the distortion), ``theta`` the
    a-axis angle in radians from qx towards qy, applied about the direct-beam origin (py4DSTEM's
    ``BraggVectors.calibrate()`` and polar transforms then apply exactly this package's correction);
    where the ellipse is not measurable, ``(1, 1, 0)`` and a warning (no correction). Attaches a
    ``prenet_ellipse`` node (mean pattern before/after, the fit in its metadata) under this cube.
    """
    return _measure_ellipse(self, model, device, batch_size, progress, client)[0]


def _measure_ellipse(cube, model, device, batch_size, progress, client):
    """The measurement of :func:`prenet_measure_ellipse`; also returns the node, the origins and the survey."""
    qx0, qy0 = _origins_from_calibration(cube)
    check_origins(qx0, qy0)
    survey = preflight(cube.data, batch_size=batch_size, device=device, models={"ellipse": model},
                       progress=progress, client=client)
    cx, cy = geometry.detector_center(cube.data.shape)
    centred = bool(np.all(qx0 == cx) and np.all(qy0 == cy))
    mean = mean_centered_pattern(cleaned(cube.data, survey), None if centred else qx0, None if centred else qy0,
                                 device, batch_size, progress, client)
    fit, loaded = measure_ellipse(mean, model, device, mask=~survey.mask)
    return fit, _write_ellipse(cube, mean, fit, loaded), qx0, qy0, survey


def prenet_ellipse(self: py4DSTEM.DataCube, *, model: str = "default", device: str = "auto",
                   batch_size: int = 64, progress: bool = True, client: Any = None) -> py4DSTEM.DataCube:
    """Measure the elliptical distortion (exactly as :func:`prenet_measure_ellipse`, which writes this
    cube's calibration and ``prenet_ellipse`` node) and return the corrected DataCube: optical axis at the
    detector centre, circular rings (no ellipse correction where it was not measurable), counts
    conserved. ``client``: a ``dask.distributed.Client`` to spread the work over a cluster (same result).
    """
    fit, node, qx0, qy0, survey = _measure_ellipse(self, model, device, batch_size, progress, client)
    data, _ = transform(cleaned(self.data, survey), qx0=qx0, qy0=qy0, ratio=fit.ratio, theta=fit.theta,
                        device=device, batch_size=batch_size, progress=progress, client=client)
    cube = _new_cube(self, data, f"{self.name}_corrected")
    _mark_centred(cube)
    cube.tree(_copy_node(node), force=True)
    return cube


def chain_result_cube(source: py4DSTEM.DataCube, data: Any, result: ChainResult, fit: str | None,
                      robust: bool) -> py4DSTEM.DataCube:
    """Record a :func:`pipeline.run_chain` result: ``source``'s calibration gets ``origin_meas``,
    ``origin`` and ``ellipse`` and its tree the ``prenet_origin`` and ``prenet_ellipse`` nodes; returns
    the corrected DataCube holding ``data`` (calibration: centred, pixel sizes of ``source``) with
    copies of both nodes, when denoised the ``prenet_denoise`` metadata, and the ``prenet_survey``
    metadata (hot/dead pixels and pedestal found in the input, :mod:`survey`)."""
    origin = _write_origins(source, result.origins, result.qx0, result.qy0, result.models["center"], fit, robust)
    ellipse = _write_ellipse(source, result.mean, result.ellipse, result.models["ellipse"])
    cube = _new_cube(source, data, f"{source.name}_corrected")
    _mark_centred(cube)
    cube.tree(_copy_node(origin), force=True)
    cube.tree(_copy_node(ellipse), force=True)
    if result.denoise is not None:
        cube.metadata = nodes.provenance("denoise", result.denoise.loaded, **result.denoise.metadata())
    if result.survey is not None:
        cube.metadata = result.survey.metadata()
    return cube


def prenet_preprocess(self: py4DSTEM.DataCube, *, denoise_model: str = "default", center_model: str = "default",
                      ellipse_model: str = "default", denoise_first: bool = True, fit: str | None = None,
                      robust: bool = False, device: str = "auto", batch_size: int = 64, progress: bool = True,
                      client: Any = None) -> py4DSTEM.DataCube:
    """The whole chain (:func:`pipeline.run_chain`): measure centres and the mean centred pattern in one
    pass, the ellipse on that mean, then denoise and correct (shift + ellipse, one resampling) in a
    second pass.

    Centres are measured on the patterns as recorded (the centre network was trained on noisy patterns),
    the ellipse on the mean of the recorded patterns centred at the measured origins. The returned cube
    holds the denoised patterns (``denoise_first=False``: the raw ones), centred and corrected. This
    cube's calibration receives ``origin_meas``, ``origin`` (fitted if ``fit``) and ``ellipse`` exactly
    as from :meth:`prenet_center` and :meth:`prenet_ellipse`, and the nodes ``prenet_origin`` and
    ``prenet_ellipse`` are attached under it. Returns the denoised, centred and ellipse-corrected
    DataCube (float32 counts) carrying copies of both nodes and the denoise metadata. ``client``: a
    ``dask.distributed.Client`` to spread the work over a cluster (same result).
    """
    data, result = run_chain(self.data, denoise_model=denoise_model if denoise_first else None,
                             center_model=center_model, ellipse_model=ellipse_model, fit=fit, robust=robust,
                             device=device, batch_size=batch_size, progress=progress, client=client)
    return chain_result_cube(self, data, result, fit, robust)


def register() -> None:
    """Attach the ``prenet_*`` methods to :class:`py4DSTEM.DataCube`."""
    for fn in (prenet_denoise, prenet_measure_origin, prenet_center, prenet_measure_ellipse, prenet_ellipse,
               prenet_preprocess):
        setattr(py4DSTEM.DataCube, fn.__name__, fn)
