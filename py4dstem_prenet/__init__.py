"""py4dstem-prenet: deep-learning preprocessing of 4D-STEM data for py4DSTEM (4D-PreNet).

Importing the package registers ``prenet_denoise``, ``prenet_center``, ``prenet_ellipse`` and
``prenet_preprocess`` on :class:`py4DSTEM.DataCube`. Conventions (axes, detector centre, ellipse
parameters, units) are stated once, in :mod:`py4dstem_prenet.geometry`.
"""

__version__ = "0.1.0"

from . import datacube as _datacube  # noqa: E402  (registers the DataCube methods)
from .pipeline import run_chain  # noqa: E402
from .reporting import report  # noqa: E402
from .stream import open_cube, run_file  # noqa: E402
from .validation import InputError  # noqa: E402
from .weights import WeightsError  # noqa: E402

_datacube.register()

__all__ = ["InputError", "WeightsError", "__version__", "open_cube", "report", "run_chain", "run_file"]
