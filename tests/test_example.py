"""The built-in example cube and `prenet demo` (with the shipped weights): deterministic, and as accurate
as users are told."""

import numpy as np
import py4DSTEM
import torch

from py4dstem_prenet import geometry
from py4dstem_prenet.cli import main
from py4dstem_prenet.example import example_truth, load_example

#: What the demo promises on its example (a/b = 1.06 at 35 degrees, 2000 e- per pattern) when it reports
#: an ellipse at all.
ELLIPSE_ANGLE_TOLERANCE_DEG = 5.0


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


def test_demo_is_accurate_on_the_example(tmp_path):
    """`prenet demo` on the deterministic example: centres, ellipse and denoising against the truth."""
    assert main(["demo", "-o", str(tmp_path), "--quiet", "--device", "cpu"]) == 0
    back = py4DSTEM.read(str(tmp_path / "prenet_demo.h5"))
    cube, truth = load_example()
    assert back.data.shape == cube.data.shape
    origin = back.tree("prenet_origin")
    qx0, qy0 = (origin.get_slice(k).data for k in ("qx0", "qy0"))
    err = np.hypot(qx0 - truth["qx0"], qy0 - truth["qy0"])
    assert err.mean() < 0.3 and err.max() < 1.0, (err.mean(), err.max())
    meta = back.tree("prenet_ellipse").metadata["prenet_ellipse"]
    if meta["measurable"]:  # a number is reported only with an error bar that covers the truth
        assert abs(meta["ratio"] - truth["ratio"]) < 2 * meta["ratio_sigma"] + 1e-3
        assert np.degrees(geometry.angle_difference(meta["theta"], truth["theta"]))[0] < ELLIPSE_ANGLE_TOLERANCE_DEG
    else:  # "not measurable" is a valid answer: then nothing is corrected, and the reason is given
        assert meta["ratio"] == 1.0 and meta["reason"]
    # denoised + corrected output against the clean patterns corrected with the true geometry
    f = geometry.distortion_matrix((128, 128), truth["qx0"].ravel(), truth["qy0"].ravel(), truth["ratio"],
                                   truth["theta"])
    def corrected(a):
        return geometry.warp(torch.from_numpy(np.asarray(a, np.float32).reshape(-1, 128, 128)), f,
                             preserve_counts=True).numpy()
    clean, noisy = corrected(truth["clean"]), corrected(cube.data)
    out = np.asarray(back.data, np.float32).reshape(-1, 128, 128)
    assert ((out - clean) ** 2).mean() < 0.5 * ((noisy - clean) ** 2).mean()
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
