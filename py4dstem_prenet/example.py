"""The built-in example cube: simulated (abTEM + this package's noise model), with its ground truth.

A 16 x 16 scan, 128 x 128 detector, 200 kV, 2 mrad probe: a Si crystal near the [011] zone axis on the
left (its tilt drifting across the region), an amorphous Cu-Zr glass on the right, and a mixed band in
between; a smooth descan drift (a tilted plane plus a parabola, several pixels) with 0.15 px jitter, an
elliptical distortion (a/b = 1.06, theta = 35 degrees) and low-dose Poisson noise (2,000 electrons per
pattern) plus 0.5 counts of read noise.

``load_example(detector=...)`` records the same scan on other detectors (:data:`EXAMPLE_DETECTORS`):
"counting" a 6-bit counting detector (Medipix/Merlin-like) at 20,000 electrons per pattern, whose direct
beam saturates at 63 counts, with charge sharing, a flat-field error and dead/hot pixels; "integrating" a
CMOS-like camera (8 counts per electron, 1.5 electrons rms read noise, a dark residual that leaves negative
values) at the default dose. The default ("default") is the cube described above.

Only the clean source patterns ship (``data/example_sources.h5``, made once by
:func:`build_example_sources` with abTEM); the cube is assembled from them on every load, exactly and
deterministically, with :mod:`geometry` and :mod:`simulate.noise`.
"""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
import py4DSTEM
import torch

from . import geometry
from .simulate.noise import DETECTORS, DetectorEffects, add_noise, effects_record, expected_counts

SOURCES = Path(__file__).resolve().parent / "data" / "example_sources.h5"
SCAN = (16, 16)
DETECTOR = 128
RATIO, THETA = 1.06, math.radians(35.0)
DOSE, READ_NOISE = 2000.0, 0.5
#: Detectors of :func:`load_example`: name -> (electrons per pattern, detector model).
EXAMPLE_DETECTORS = {
    "default": (DOSE, DetectorEffects(read_noise=READ_NOISE)),
    "counting": (20000.0, DETECTORS["counting-6bit"]),
    "integrating": (DOSE, DETECTORS["integrating"]),
}


def build_example_sources(path: Path = SOURCES) -> Path:
    """Simulate the clean source patterns with abTEM (needs the ``[simulate]`` extra); a few minutes."""
    from .simulate.abtem_sim import OpticsParams, simulate_pattern
    from .simulate.structures import get_structure

    common = {"energy_kv": 200.0, "semiangle_mrad": 2.0, "mrad_per_px": 0.6, "inplane_deg": 20.0,
              "phonon_configs": 0, "detector": DETECTOR}
    recipes = {
        "crystal_on_zone": ("Si_diamond", {"thickness_A": 120.0, "zone_axis": (0, 1, 1), "tilt_mrad": (0.0, 0.0)}),
        "crystal_tilted": ("Si_diamond", {"thickness_A": 120.0, "zone_axis": (0, 1, 1), "tilt_mrad": (6.0, -3.0)}),
        "amorphous_a": ("CuZr_glass", {"thickness_A": 80.0, "zone_axis": (0, 0, 1), "tilt_mrad": (0.0, 0.0)}),
        "amorphous_b": ("CuZr_glass", {"thickness_A": 80.0, "zone_axis": (1, 1, 1), "tilt_mrad": (0.0, 0.0)}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with h5py.File(tmp, "w") as f:
        for i, (key, (name, optics)) in enumerate(recipes.items()):
            atoms = get_structure(name).build(seed=i)
            pattern = simulate_pattern(atoms, OpticsParams(**common, **optics), seed=i)
            ds = f.create_dataset(key, data=pattern.astype(np.float32), compression="gzip", shuffle=True)
            ds.attrs.update(structure=name, **{k: str(v) for k, v in {**common, **optics}.items()})
    tmp.replace(path)
    return path


def _weights(scan: tuple[int, int]) -> np.ndarray:
    """Mixing weights ``(Rx, Ry, 4)`` of the sources: crystal left, glass right, a mixed band between."""
    ry = np.linspace(0, 1, scan[1])[None, :].repeat(scan[0], 0)
    rx = np.linspace(0, 1, scan[0])[:, None].repeat(scan[1], 1)
    glass = np.clip((ry - 0.35) / 0.3, 0, 1)
    crystal = 1 - glass
    return np.stack([crystal * (1 - rx), crystal * rx, glass * (1 - ry), glass * ry], -1)


def example_truth(scan: tuple[int, int] = SCAN) -> dict[str, np.ndarray | float]:
    """Ground truth of the example: origins ``qx0, qy0`` (pixels), ``ratio`` (a/b), ``theta`` (radians)."""
    rng = np.random.default_rng(7)
    u, v = np.meshgrid(np.linspace(-1, 1, scan[0]), np.linspace(-1, 1, scan[1]), indexing="ij")
    c = DETECTOR / 2
    qx0 = c + 1.3 + 3.0 * u - 1.0 * v + 1.2 * u * u + rng.normal(0, 0.15, scan)
    qy0 = c - 0.8 + 1.5 * u + 2.5 * v - 0.8 * v * v + rng.normal(0, 0.15, scan)
    return {"qx0": qx0, "qy0": qy0, "ratio": RATIO, "theta": THETA}


def example_clean(truth: dict, path: Path = SOURCES, *, dose: float = DOSE) -> np.ndarray:
    """Expected electrons ``(Rx, Ry, Q, Q)`` float32 (noise-free, distorted) of the example cube at ``dose``
    electrons per pattern."""
    if not path.is_file():
        raise FileNotFoundError(f"example source patterns {path} are missing; reinstall py4dstem-prenet")
    with h5py.File(path, "r") as f:
        sources = np.stack([f[k][()] for k in ("crystal_on_zone", "crystal_tilted", "amorphous_a", "amorphous_b")])
    scan = truth["qx0"].shape
    ideal = np.einsum("xyk,kij->xyij", _weights(scan), sources).reshape(-1, DETECTOR, DETECTOR)
    f = geometry.distortion_matrix((DETECTOR, DETECTOR), truth["qx0"].ravel(), truth["qy0"].ravel(),
                                   truth["ratio"], truth["theta"])
    distorted = geometry.warp(torch.from_numpy(ideal).double(), geometry.invert(f), preserve_counts=True)
    return (distorted.clamp_min(0) * dose).float().numpy().reshape(*scan, DETECTOR, DETECTOR)


def load_example(detector: str = "default") -> tuple[py4DSTEM.DataCube, dict]:
    """The example DataCube (noisy counts, float32) and its ground truth (see module docstring).

    ``detector``: a name of :data:`EXAMPLE_DETECTORS` ("default", "counting", "integrating"). The truth
    dict also holds ``clean``, the noise-free detector output of every pattern (expected counts: for
    "default" the expected electrons), ``dose`` (electrons per pattern) and ``detector`` (every parameter
    of the detector model, :func:`simulate.noise.effects_record`).
    """
    if detector not in EXAMPLE_DETECTORS:
        raise ValueError(f"detector must be one of {sorted(EXAMPLE_DETECTORS)}, got {detector!r}")
    dose, effects = EXAMPLE_DETECTORS[detector]
    truth = example_truth()
    clean = example_clean(truth, dose=dose)
    gen = torch.Generator().manual_seed(11)
    flat = torch.from_numpy(clean.reshape(-1, DETECTOR, DETECTOR))
    noisy = add_noise(flat, 1.0, gen, effects)
    if detector != "default":
        clean = expected_counts(flat, 1.0, effects).numpy().reshape(clean.shape)
    cube = py4DSTEM.DataCube(data=noisy.numpy().reshape(clean.shape), name="prenet_example")
    cube.calibration.set_Q_pixel_size(0.6)
    cube.calibration.set_Q_pixel_units("mrad")
    return cube, {**truth, "clean": clean, "dose": dose, "detector": effects_record(effects)}
