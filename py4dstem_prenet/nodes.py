"""The EMD nodes this package writes (plain py4DSTEM/emdfile classes, so any py4DSTEM reads them back).

* ``prenet_origin`` (:class:`py4DSTEM.RealSlice`, slices ``qx0``, ``qy0``, ``confidence``, ``sigma``,
  ``flag``, ``method``): the measured optical axis of every pattern (pixels), the centre network's
  probability of the chosen candidate (0..1), the standard error per axis (pixels; inf: not measured),
  1 where the answer is unreliable, and how it was measured (an index into the metadata's ``methods``).
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

from ._version import __version__
from .weights import LoadedModel


def provenance(task: str, loaded: LoadedModel, **values: Any) -> Metadata:
    """Metadata ``prenet_<task>``: model name and checksum, package version, plus ``values``."""
    data = {"model": loaded.entry.name, "weights_sha256": loaded.entry.sha256,
            "package": "py4dstem_prenet", "version": __version__}
    data.update(values)
    return Metadata(name=f"prenet_{task}", data=data)


ORIGIN_SLICES = ["qx0", "qy0", "confidence", "sigma", "flag", "method"]


def origin_node(qx0: np.ndarray, qy0: np.ndarray, confidence: np.ndarray, sigma: np.ndarray, flag: np.ndarray,
                method: np.ndarray, meta: Metadata) -> RealSlice:
    """``prenet_origin``: stack ``(6, Rx, Ry)`` of qx0, qy0 (pixels), confidence, sigma (pixels), flag (0/1)
    and method (index into ``meta["methods"]``)."""
    data = np.stack([qx0, qy0, confidence, sigma, flag, method]).astype(np.float64)
    node = RealSlice(data=data, name="prenet_origin", units="pixels", slicelabels=list(ORIGIN_SLICES))
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
