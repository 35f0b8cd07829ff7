"""py4dstem-prenet: deep-learning preprocessing of 4D-STEM data for py4DSTEM (4D-PreNet).

Importing the package registers ``prenet_denoise``, ``prenet_measure_origin``, ``prenet_center``,
``prenet_measure_ellipse``, ``prenet_ellipse`` and ``prenet_preprocess`` on :class:`py4DSTEM.DataCube`.
Conventions (axes, detector centre, ellipse parameters, units) are stated once, in
:mod:`py4dstem_prenet.geometry`; the layout of the code is ``docs/architecture.md``.
"""

from . import datacube as _datacube  # (registers the DataCube methods)
from ._version import __version__
from .pipeline import run_chain
from .reporting import report
from .stream import open_cube, run_file
from .validation import InputError
from .weights import WeightsError, get_model, list_models

_datacube.register()

__all__ = ["InputError", "WeightsError", "__version__", "get_model", "list_models", "open_cube", "report",
           "run_chain", "run_file"]
