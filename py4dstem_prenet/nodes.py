"""The EMD nodes this package writes (plain py4DSTEM/emdfile classes, so any py4DSTEM reads them back).

* ``prenet_origin`` (:class:`py4DSTEM.RealSlice`, slices ``qx0``, ``qy0``, ``confidence``): the measured
  optical axis of every pattern (pixels) and the centre network's confidence (0..1).
* ``prenet_ellipse`` (:class:`py4DSTEM.DiffractionSlice`, slices ``mean_centered``, ``mean_corrected``):
  the mean centred pattern before and after the ellipse correction (counts per pattern); its metadata
  holds the ring fit: ``ratio``, ``theta`` and their ``ratio_sigma``, ``theta_sigma``, ``measurable`` (1/0)
  and ``reason``, the ring centre ``ring_x0, ring_y0`` and its offset from the direct-beam origin
  ``ring_center_offset_qx/qy`` (pixels), ``residual_px``, ``chi2``, ``ring_radii``, and the check on the
  corrected mean ``harmonic_after_px``, ``harmonic_after_sigma_px``, ``check_ok`` (values that could not
  be measured are left out).
* Metadata ``prenet_<task>`` on each node (and on returned cubes): model name, weights SHA-256, package
  version, and the measured values with their units.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from emdfile import Metadata
from py4DSTEM import DiffractionSlice, RealSlice

from . import __version__
from .weights import LoadedModel


def provenance(task: str, loaded: LoadedModel, **values: Any) -> Metadata:
    """Metadata ``prenet_<task>``: model name and checksum, package version, plus ``values``."""
    data = {"model": loaded.entry.name, "weights_sha256": loaded.entry.sha256,
            "package": "py4dstem_prenet", "version": __version__}
    data.update(values)
    return Metadata(name=f"prenet_{task}", data=data)


def origin_node(qx0: np.ndarray, qy0: np.ndarray, confidence: np.ndarray, meta: Metadata) -> RealSlice:
    """``prenet_origin``: stack ``(3, Rx, Ry)`` of qx0, qy0 (pixels) and confidence."""
    node = RealSlice(data=np.stack([qx0, qy0, confidence]).astype(np.float64), name="prenet_origin",
                     units="pixels", slicelabels=["qx0", "qy0", "confidence"])
    node.metadata = meta
    return node


def ellipse_node(mean_centered: np.ndarray, mean_corrected: np.ndarray, meta: Metadata) -> DiffractionSlice:
    """``prenet_ellipse``: stack ``(2, Qx, Qy)`` of the mean pattern before and after correction, with the
    ring fit in ``meta`` (see the module docstring)."""
    node = DiffractionSlice(data=np.stack([mean_centered, mean_corrected]).astype(np.float32),
                            name="prenet_ellipse", units="counts",
                            slicelabels=["mean_centered", "mean_corrected"])
    node.metadata = meta
    return node
