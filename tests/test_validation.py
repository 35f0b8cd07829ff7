"""Bad input gets a clear error naming the problem."""

import numpy as np
import py4DSTEM
import pytest

from py4dstem_prenet import InputError
from py4dstem_prenet.center import measure_origins


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
