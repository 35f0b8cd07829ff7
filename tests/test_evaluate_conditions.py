"""The evaluation's bookkeeping: refused inputs are failures, conditions are labelled, rows carry the CRB."""

import numpy as np

from py4dstem_prenet.evaluate import harness
from py4dstem_prenet.simulate.noise import DetectorEffects
from py4dstem_prenet.validation import InputError


def test_refused_input_counts_as_failure():
    def refuse():
        raise InputError("3 pattern(s) are constant")

    qx, qy = harness._or_refused(refuse, 4)
    assert np.isnan(qx).all() and qx.shape == (4,)
    e = harness._center_errors(np.array([1.0, np.nan]), np.array([0.0, np.nan]), np.zeros(2), np.zeros(2))
    assert e["failed"] == 1 and e["MAE-R"] == 1.0


def test_condition_rows_and_labels():
    effects = [DetectorEffects(), DetectorEffects(bit_depth=6, counting=True),
               DetectorEffects(read_noise=1.5, gain=4.0, stop_width=5.0, stop_radius=6.0)]
    labels = harness._detector_conditions(effects, ["ideal", "counting", "integrating"])
    assert list(labels["bit depth"]) == ["unlimited", "6 bit", "unlimited"]
    assert list(labels["read noise"]) == ["0 e", "0 e", "1-2 e"]
    assert list(labels["beam stop"]) == ["none", "none", "round + arm"]
    table = harness.Table("Centre: test", harness.CENTER_COLUMNS)
    truth = (np.zeros(3), np.zeros(3))
    results = {"ours": (np.array([0.0, 3.0, np.nan]), np.zeros(3))}
    harness._table_rows(table, labels, results, truth, np.array([0.1, 0.2, np.inf]), {"ours": 1.0})
    rows = {(r[0], r[1]): r for r in table.rows}
    assert rows[("all", "all")][7] == 1 and rows[("all", "all")][4] == 1.5  # failed, MAE-R
    assert rows[("bit depth", "6 bit")][4] == 3.0 and np.isinf(rows[("beam stop", "round + arm")][8])
    assert sorted(harness._natural(v) for v in ("8-24 px", "0-8 px", "24+ px"))[0][1] == 0.0
