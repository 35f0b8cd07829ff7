"""Bad input gets a clear error naming the problem."""

import numpy as np
import py4DSTEM
import pytest
import torch

from py4dstem_prenet import InputError
from py4dstem_prenet.center import measure_origins
from py4dstem_prenet.pipeline import run_chain
from py4dstem_prenet.runner import resolve_device
from py4dstem_prenet.weights import load_model


def center(data, untrained):
    return py4DSTEM.DataCube(data=data).prenet_center(model=untrained["center"], device="cpu", progress=False)


def test_wrong_rank(untrained):
    # py4DSTEM.DataCube cannot even hold these, so the array-level functions check them
    with pytest.raises(InputError, match="4D cube"):
        measure_origins(np.ones((4, 64, 64)), model=untrained["center"], device="cpu", progress=False)


def test_non_numeric_dtype(untrained):
    with pytest.raises(InputError, match="dtype bool"):
        center(np.ones((2, 2, 64, 64), dtype=bool), untrained)
    with pytest.raises(InputError, match="dtype complex"):
        center(np.ones((2, 2, 64, 64), dtype=np.complex64), untrained)


def test_empty_cube(untrained):
    with pytest.raises(InputError, match="empty"):
        measure_origins(np.ones((0, 2, 64, 64)), model=untrained["center"], device="cpu", progress=False)


def test_detector_too_small(untrained):
    with pytest.raises(InputError, match="smaller than"):
        center(np.ones((2, 2, 16, 16)), untrained)


def test_nan_inf_reported_with_count_and_position(untrained):
    data = np.random.default_rng(0).random((3, 4, 64, 64)).astype(np.float32)
    data[1, 2, 5, 5] = np.nan
    data[2, 3, 0, :3] = np.inf
    with pytest.raises(InputError, match=r"4 NaN/inf values in 2 pattern\(s\), first at .*\(1, 2\), \(2, 3\)"):
        center(data, untrained)


def test_constant_and_all_zero_patterns(untrained):
    data = np.random.default_rng(0).random((2, 2, 64, 64)).astype(np.float32)
    data[1, 0] = 0
    with pytest.raises(InputError, match=r"1 pattern\(s\) are constant.*\(1, 0\)"):
        center(data, untrained)


def test_mostly_negative_is_an_error_but_small_negatives_are_fine(untrained):
    rng = np.random.default_rng(0)
    ok = rng.random((2, 2, 64, 64)).astype(np.float32) * 10 - 0.5  # dark-subtracted: a few small negatives
    center(ok, untrained)
    with pytest.raises(InputError, match="mostly negative"):
        center(-ok, untrained)


def test_input_never_modified(untrained):
    data = np.random.default_rng(0).random((2, 2, 64, 64)).astype(np.float32) - 0.05
    before = data.copy()
    center(data, untrained)
    np.testing.assert_array_equal(data, before)


def test_low_dose_with_read_noise_is_accepted(untrained):
    """100 electrons spread over a 64x64 detector plus read noise: nearly as many negative as
    positive values, but real data, not an error."""
    rng = np.random.default_rng(1)
    data = (rng.poisson(100 / 4096, (3, 3, 64, 64)) + rng.normal(0, 0.5, (3, 3, 64, 64))).astype(np.float32)
    center(data, untrained)


# --- options are checked before any pass (issue 13) ---------------------------------------------------------


@pytest.fixture
def no_pass(monkeypatch):
    """Make every expensive pass fail loudly (only the cheap survey may run): an error must come before."""
    from py4dstem_prenet import engine
    from py4dstem_prenet.survey import SurveyStep

    real = engine.run

    def survey_only(step, *args, **kwargs):
        if not isinstance(step, SurveyStep):
            raise AssertionError("an expensive pass started before the arguments were checked")
        return real(step, *args, **kwargs)

    monkeypatch.setattr(engine, "run", survey_only)


def small_cube(rx=3, ry=4):
    from conftest import disk_cube

    return py4DSTEM.DataCube(data=disk_cube(rx, ry)[0])


@pytest.mark.parametrize("batch_size", [1.5, "8", None, True, 0, -3])
def test_batch_size_must_be_a_positive_integer(batch_size, untrained, no_pass):
    dc = small_cube()
    with pytest.raises(InputError, match="batch_size must be a positive integer"):
        dc.prenet_center(model=untrained["center"], device="cpu", progress=False, batch_size=batch_size)
    with pytest.raises(InputError, match="batch_size must be a positive integer"):
        dc.prenet_denoise(model=untrained["denoise"], device="cpu", progress=False, batch_size=batch_size)
    with pytest.raises(InputError, match="batch_size must be a positive integer"):
        run_chain(dc.data, denoise_model=untrained["denoise"], center_model=untrained["center"],
                  ellipse_model=untrained["ellipse"], device="cpu", batch_size=batch_size, progress=False)


def test_numpy_integer_batch_size_is_accepted(untrained):
    small_cube().prenet_measure_origin(model=untrained["center"], device="cpu", progress=False, batch_size=np.int64(5))


@pytest.mark.parametrize("device", ["gpu", "meta", "cuda0", "CPU ", 3])
def test_unknown_device_is_named(device, untrained, no_pass):
    with pytest.raises(InputError, match="device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"):
        small_cube().prenet_center(model=untrained["center"], device=device, progress=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_a_clear_error(untrained, no_pass):
    with pytest.raises(InputError, match="sees no CUDA GPU"):
        small_cube().prenet_denoise(model=untrained["denoise"], device="cuda", progress=False)
    with pytest.raises(InputError, match="sees no CUDA GPU"):
        resolve_device("cuda:1")


def test_gpu_index_beyond_the_gpus_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(InputError, match="sees only 2 GPU"):
        resolve_device("cuda:2")


@pytest.mark.parametrize(("fit", "scan", "robust"), [("parabola", (2, 2), False), ("plane", (1, 1), False),
                                                      ("plane", (1, 8), False), ("bezier_two", (2, 5), False),
                                                      ("parabola", (3, 3), True), ("bezier_two", (3, 3), True)])
def test_fit_too_big_for_the_scan_is_refused_before_the_pass(fit, scan, robust, untrained, no_pass):
    with pytest.raises(InputError, match=f"fit='{fit}'.*needs a scan of at least"):
        small_cube(*scan).prenet_center(model=untrained["center"], device="cpu", progress=False, fit=fit,
                                        robust=robust)


@pytest.mark.parametrize(("fit", "scan", "robust"), [("parabola", (3, 3), False), ("plane", (2, 2), False),
                                                      ("constant", (1, 1), True), ("bezier_two", (3, 3), False),
                                                      ("plane", (2, 3), True)])
def test_feasible_fits_run(fit, scan, robust, untrained):
    dc = small_cube(*scan)
    node = dc.prenet_measure_origin(model=untrained["center"], device="cpu", progress=False, fit=fit, robust=robust)
    assert np.all(np.isfinite(node.data[:2]))  # qx0, qy0 (sigma is inf where a position was not measured)
    assert all(np.all(np.isfinite(o)) for o in dc.calibration.get_origin())


def test_nan_origin_is_refused_before_prenet_ellipse_reads_the_cube(untrained, no_pass):
    dc = small_cube()
    qx0 = np.full((3, 4), 32.0)
    qx0[2, 1] = np.nan
    dc.calibration.set_origin((qx0, np.full((3, 4), 32.0)))
    with pytest.raises(InputError, match=r"origin qx0 is NaN/inf at 1 scan position\(s\), first \[\(2, 1\)\]"):
        dc.prenet_ellipse(model=untrained["ellipse"], device="cpu", progress=False)


@pytest.mark.parametrize("model", [None, "", 3])
def test_a_model_is_needed_for_every_stage_that_runs(model, untrained, no_pass):
    dc = small_cube()
    with pytest.raises(InputError, match="no denoise model given"):
        dc.prenet_denoise(model=model, device="cpu", progress=False)
    with pytest.raises(InputError, match="no center model given"):
        dc.prenet_center(model=model, device="cpu", progress=False)
    with pytest.raises(InputError, match="no ellipse model given"):
        run_chain(dc.data, denoise_model=None, center_model=untrained["center"], ellipse_model=model, device="cpu",
                  batch_size=4, progress=False)


@pytest.mark.parametrize("method", ["prenet_center", "prenet_denoise", "prenet_preprocess"])
def test_nan_in_the_last_pattern_is_refused_before_any_pass(method, untrained, no_pass):
    """A cheap survey of every pattern comes first: the last of many patterns is checked before the
    first network call (the pass would otherwise do most of its work before failing)."""
    from conftest import disk_cube

    data = disk_cube(6, 8)[0].astype(np.float32)
    data[5, 7, 10, 10] = np.nan
    dc = py4DSTEM.DataCube(data=data)
    kw = {"model": untrained["center"]} if method == "prenet_center" else \
        {"model": untrained["denoise"]} if method == "prenet_denoise" else \
        {f"{t}_model": untrained[t] for t in ("denoise", "center", "ellipse")}
    with pytest.raises(InputError, match=r"NaN/inf.*\(5, 7\)"):
        getattr(dc, method)(device="cpu", progress=False, batch_size=4, **kw)


def test_a_failing_device_never_poisons_the_model_cache(untrained):
    dc = small_cube()
    before = dc.prenet_measure_origin(model=untrained["center"], device="cpu", progress=False).data
    with pytest.raises(InputError):
        dc.prenet_center(model=untrained["center"], device="meta", progress=False)
    with pytest.raises(InputError, match="device must be"):
        load_model("center", untrained["center"], device="meta")
    loaded = load_model("center", untrained["center"])
    assert all(p.device.type == "cpu" for p in loaded.module.parameters())
    after = dc.prenet_measure_origin(model=untrained["center"], device="cpu", progress=False).data
    np.testing.assert_array_equal(before, after)
