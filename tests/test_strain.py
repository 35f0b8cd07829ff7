"""Downstream: py4DSTEM strain maps of an unstrained Si crystal (8 x 8 scan, 2,000 e-/pattern, a/b 1.05 at
35 degrees, drift up to 4 px), classical calibration beside ours (:mod:`py4dstem_prenet.evaluate.strain`).

Measured at 16 x 16 over seeds 0-2 (``benchmarks/strain.py``, RMS strain error in %): no ellipse
correction 2.35 (on-zone Si) / 2.50 (tilted); py4DSTEM ``fit_ellipse_1D`` on the Bragg vector map
12.5 / 13.5 (a/b 1.3-1.5: one crystal's lattice does not fix an ellipse); true ellipse (the floor)
0.44 / 0.41; our ellipse with py4DSTEM's origins 0.80 / 0.53; the whole chain (``prenet_preprocess``:
denoise, centre with symmetry re-ranking, ellipse) 0.87 / 0.83, every position fitted: 0.37 / 0.33 of
the best classical route.
"""

import numpy as np
import pytest
import torch

from py4dstem_prenet.evaluate import strain

torch.set_num_threads(1)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def result():
    return strain.compare_strain(scan=(8, 8), dose=2000.0, seed=0, device="cpu")


def best_classical(result) -> float:
    return min(result.routes[strain.CLASSICAL].rms(), result.routes[strain.NO_ELLIPSE].rms())


def test_table_has_every_route_and_component(result):
    table = result.table()
    assert [r[0] for r in table.rows] == list(result.routes)
    assert all(f"{c} mean" in table.columns and f"{c} std" in table.columns for c in strain.COMPONENTS)
    assert "ours: prenet_preprocess" in table.text()


def test_measurement_sees_the_ellipse_and_only_it(result):
    """The harness: with the true ellipse the strain is zero within noise; without any correction the
    ellipse is a mean strain of about its size (a/b - 1 = 5 %)."""
    oracle, raw = result.routes[strain.ORACLE], result.routes[strain.NO_ELLIPSE]
    assert oracle.fitted.all() and raw.fitted.all()
    assert np.all(np.abs(np.nanmean(oracle.strain, axis=(1, 2))) < 0.5)
    assert oracle.rms() < 0.6
    assert raw.rms() > 2.0 and abs(np.nanmean(raw.strain[0])) > 2.0


def test_our_ellipse_beats_classical_calibration(result):
    hybrid = result.routes[strain.HYBRID]
    assert hybrid.fitted.all()
    assert hybrid.rms() < 0.5 * best_classical(result)


def test_whole_chain_beats_classical_calibration(result):
    ours = result.routes[strain.OURS]
    assert ours.fitted.all()
    assert ours.rms() < 0.5 * best_classical(result)
