"""The DataCube methods: shapes, calibration, EMD nodes, save/read round trip, inputs untouched.

The networks here are untrained (see conftest): these tests check the plumbing, not accuracy, which
the evaluation harness measures with the shipped weights.
"""

import numpy as np
import py4DSTEM
import pytest

from py4dstem_prenet import geometry
from py4dstem_prenet.io import save_atomic


def test_methods_are_registered():
    for name in ("prenet_denoise", "prenet_center", "prenet_ellipse", "prenet_preprocess"):
        assert callable(getattr(py4DSTEM.DataCube, name))


def test_denoise_returns_new_cube_in_counts(cube, untrained):
    before = cube.data.copy()
    out = cube.prenet_denoise(model=untrained["denoise"], device="cpu", batch_size=5, progress=False)
    assert isinstance(out, py4DSTEM.DataCube) and out is not cube
    assert out.data.shape == cube.data.shape and out.data.dtype == np.float32
    assert np.all(out.data >= 0)
    np.testing.assert_array_equal(cube.data, before)
    assert out.calibration.get_Q_pixel_size() == 0.05
    assert out.metadata["prenet_denoise"]["model"] == untrained["denoise"]


def test_center_writes_calibration_and_node(cube, untrained):
    before = cube.data.copy()
    aligned = cube.prenet_center(model=untrained["center"], device="cpu", batch_size=7, progress=False)
    np.testing.assert_array_equal(cube.data, before)
    qx0, qy0 = cube.calibration.get_origin_meas()
    assert qx0.shape == (3, 4) and np.all(np.isfinite(qx0)) and np.all(np.isfinite(qy0))
    node = cube.tree("prenet_origin")
    assert node.slicelabels == ["qx0", "qy0", "confidence", "sigma", "flag", "method"]
    np.testing.assert_allclose(node.data[0], qx0)
    meta = node.metadata["prenet_center"]
    assert meta["version"]
    assert meta["methods"][0] == "disk edge fit" and sum(meta["method_counts"].values()) == 12
    assert np.all(node.data[3] > 0) and set(np.unique(node.data[4])) <= {0.0, 1.0}
    assert meta["settings"]["fit"]["n_rays"] > 0  # the tuned numbers used are recorded
    # the aligned cube says its origin is the detector centre
    assert aligned.calibration.get_origin() == (32.0, 32.0)
    assert aligned.tree("prenet_origin") is not node


def test_center_alignment_moves_measured_point_to_centre(cube, untrained):
    aligned = cube.prenet_center(model=untrained["center"], device="cpu", progress=False)
    qx0, qy0 = cube.calibration.get_origin()
    # a pattern whose origin is qx0 has its disk there; after alignment the disk's CoM moves by -shift
    def com(d):
        return (np.sum(d * np.arange(64)[:, None]) / d.sum(), np.sum(d * np.arange(64)[None]) / d.sum())
    cx_b, cy_b = com(cube.data[0, 0].astype(float))
    cx_a, cy_a = com(aligned.data[0, 0])
    assert cx_a - cx_b == pytest.approx(32 - qx0[0, 0], abs=0.15)
    assert cy_a - cy_b == pytest.approx(32 - qy0[0, 0], abs=0.15)


def test_center_measure_only_and_fit(cube, untrained):
    node = cube.prenet_measure_origin(model=untrained["center"], device="cpu", progress=False, fit="plane")
    assert node.name == "prenet_origin"
    fitted = cube.calibration.get_origin()[0]
    meas = cube.calibration.get_origin_meas()[0]
    assert fitted.shape == meas.shape == (3, 4)
    # a plane fit of 12 points is smooth: its second differences vanish
    np.testing.assert_allclose(np.diff(fitted, 2, axis=0), 0, atol=1e-9)
    with pytest.raises(ValueError, match="fit must be"):
        cube.prenet_center(model=untrained["center"], device="cpu", progress=False, fit="spline")


def test_ellipse_needs_origin(cube, untrained):
    from py4dstem_prenet import InputError

    with pytest.raises(InputError, match="prenet_center"):
        cube.prenet_ellipse(model=untrained["ellipse"], device="cpu", progress=False)


def test_ellipse_writes_py4dstem_ellipse(cube, untrained):
    cube.calibration.set_origin((np.full((3, 4), 31.2), np.full((3, 4), 32.7)))
    fit = cube.prenet_measure_ellipse(model=untrained["ellipse"], device="cpu", progress=False)
    a, b, theta = cube.calibration.get_ellipse()
    assert a / b == pytest.approx(fit.ratio) and b == 1.0
    assert geometry.angle_difference(theta, fit.theta)[0] < 1e-12
    node = cube.tree("prenet_ellipse")
    assert node.data.shape == (2, 64, 64) and node.slicelabels == ["mean_centered", "mean_corrected"]


def test_preprocess_save_read_round_trip(cube, untrained, tmp_path):
    out = cube.prenet_preprocess(denoise_model=untrained["denoise"], center_model=untrained["center"],
                                 ellipse_model=untrained["ellipse"], device="cpu", progress=False, batch_size=5)
    assert out.data.shape == cube.data.shape
    path = save_atomic(tmp_path / "out.h5", out)
    back = py4DSTEM.read(str(path))
    np.testing.assert_array_equal(back.data, out.data)
    for name in ("prenet_origin", "prenet_ellipse"):
        np.testing.assert_array_equal(back.tree(name).data, out.tree(name).data)
        key = "prenet_center" if name == "prenet_origin" else "prenet_ellipse"
        assert back.tree(name).metadata[key]._params == out.tree(name).metadata[key]._params
    assert back.calibration.get_origin() == out.calibration.get_origin()
    assert back.metadata["prenet_denoise"]["weights_sha256"] == out.metadata["prenet_denoise"]["weights_sha256"]
    # the raw cube's calibration (origins per pattern + ellipse) also survives a round trip
    raw = save_atomic(tmp_path / "raw.h5", cube)
    back_raw = py4DSTEM.read(str(raw))
    np.testing.assert_array_equal(back_raw.calibration.get_origin_meas()[0], cube.calibration.get_origin_meas()[0])
    assert back_raw.calibration.get_ellipse() == pytest.approx(cube.calibration.get_ellipse())
    with pytest.raises(FileExistsError):
        save_atomic(tmp_path / "out.h5", out)


def test_unknown_fit_is_refused_before_any_work(cube, monkeypatch):
    import py4dstem_prenet.datacube as dcm

    monkeypatch.setattr(dcm, "measure_origins", lambda *a, **k: pytest.fail("measured before checking fit"))
    with pytest.raises(ValueError, match="fit must be one of"):
        cube.prenet_center(fit="spline", progress=False)
