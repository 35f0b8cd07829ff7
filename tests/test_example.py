"""The built-in example cube and `prenet demo` (with the shipped weights)."""

import numpy as np
import py4DSTEM

from py4dstem_prenet.cli import main
from py4dstem_prenet.example import example_truth, load_example


def test_example_is_deterministic_with_truth():
    a, truth = load_example()
    b, _ = load_example()
    np.testing.assert_array_equal(a.data, b.data)
    assert a.data.shape == (16, 16, 128, 128)
    assert truth["qx0"].shape == (16, 16) and 1.0 < truth["ratio"] < 1.12
    # the drift is smooth plus jitter: several pixels across the scan
    assert np.ptp(truth["qx0"]) > 3 and np.ptp(truth["qy0"]) > 3
    # counts: Poisson at the stated dose (2000 e- per pattern, some scattered off the detector)
    assert 1500 < a.data.sum(axis=(2, 3)).mean() < 2100
    np.testing.assert_array_equal(example_truth()["qx0"], truth["qx0"])


def test_demo_writes_emd_and_png(tmp_path):
    assert main(["demo", "-o", str(tmp_path), "--quiet", "--device", "cpu"]) == 0
    back = py4DSTEM.read(str(tmp_path / "prenet_demo.h5"))
    assert back.data.shape == (16, 16, 128, 128)
    assert back.tree("prenet_origin").data.shape == (3, 16, 16)
    png = (tmp_path / "prenet_demo.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_example_detectors():
    """The counting example saturates its direct beam at 6 bits; the integrating one has read noise and
    negative values; both record their detector model in the truth."""
    import pytest

    counting, t = load_example("counting")
    assert counting.data.max() == 63 and np.all(counting.data == np.round(counting.data))
    assert (counting.data == 63).mean() > 1e-3 and t["detector"]["bit_depth"] == 6
    integrating, t = load_example("integrating")
    assert integrating.data.min() < 0 and t["detector"]["read_noise"] > 0 and t["detector"]["gain"] > 1
    assert np.ptp(integrating.data - t["clean"]) > 0 and t["clean"].shape == integrating.data.shape
    with pytest.raises(ValueError, match="detector must be one of"):
        load_example("medipix")
