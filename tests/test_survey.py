"""The survey pre-pass: every pattern checked up front, hot and dead pixels found from the statistics across
the scan, a pedestal estimated, and patterns cleaned without touching the input."""

import time

import h5py
import numpy as np
import pytest
from conftest import disk_cube

from py4dstem_prenet import InputError
from py4dstem_prenet.example import load_example
from py4dstem_prenet.survey import clean_patterns, survey_cube


@pytest.fixture(scope="module")
def example():
    cube, truth = load_example()
    return np.asarray(cube.data), truth


HOT = [(10, 20), (70, 70), (71, 70), (30, 90)]  # 65535, a hot pair (1000, 800) inside the beam, a weak 20
DEAD = [(64, 64), (40, 100)]  # dead in the direct beam and in the diffuse background


def with_bad_pixels(data, scale=1.0, offset=0.0):
    """``data * scale + offset`` with hot pixels (their values scaled alike) and dead pixels reading 0."""
    bad = data * np.float32(scale) + np.float32(offset)
    for (qx, qy), value in zip(HOT, (65535, 1000, 800, 20), strict=True):
        bad[:, :, qx, qy] = value * scale + offset
    for qx, qy in DEAD:
        bad[:, :, qx, qy] = 0
    return bad


def positions(mask):
    return sorted(map(tuple, np.argwhere(mask).tolist()))


def test_clean_data_has_no_bad_pixels_and_no_pedestal(example):
    data, _ = example
    s = survey_cube(data, progress=False)
    assert s.n_patterns == 256 and s.mask.sum() == 0 and s.pedestal == 0.0
    for seed in range(4):
        s = survey_cube(disk_cube(8, 8, seed=seed)[0], progress=False)
        assert s.mask.sum() == 0 and s.pedestal == 0.0


@pytest.mark.parametrize(("scale", "offset"), [(1.0, 0.0), (1e-3, 0.0), (1e-30, 0.0), (1.0, 100.0), (1e-3, 5.0)])
def test_hot_and_dead_pixels_found_whatever_the_units_and_pedestal(example, scale, offset):
    data, _ = example
    s = survey_cube(with_bad_pixels(data, scale, offset), progress=False)
    assert positions(s.mask_hot) == sorted(HOT)
    assert positions(s.mask_dead) == sorted(DEAD)


@pytest.mark.parametrize("offset", [0.0, 100.0, 7.25])
def test_pedestal_estimated(example, offset):
    """The example's darkest pixels sit at 0.008 counts (signal + noise): the estimate is the offset to
    within that."""
    data, _ = example
    assert survey_cube(data + offset, progress=False).pedestal == pytest.approx(offset, abs=0.01)
    counts = disk_cube(8, 8)[0].astype(np.float32)  # Poisson counts without read noise: exactly the offset
    assert survey_cube(counts + offset, progress=False).pedestal == offset


def test_beam_stop_and_dark_corners_are_not_dead(example):
    data = example[0].copy()
    data[:, :, 60:70, 60:70] = 0  # a beam stop over the direct beam
    s = survey_cube(data, progress=False)
    assert s.mask.sum() == 0


def test_clean_patterns_repairs_masked_pixels_and_subtracts_the_pedestal(example):
    data, truth = example
    bad = with_bad_pixels(data, offset=100)
    frozen = bad.copy()
    s = survey_cube(bad, progress=False)
    block = bad[3]
    cleaned = clean_patterns(block, s)
    np.testing.assert_array_equal(bad, frozen)  # never in place
    assert cleaned.dtype == np.float32 and cleaned.shape == block.shape
    keep = ~s.mask
    np.testing.assert_allclose(cleaned[..., keep], data[3][..., keep] - (s.pedestal - 100), atol=1e-3)
    for qx, qy in HOT + DEAD:  # each replaced by the median of its unmasked neighbours
        nb = data[3, :, max(0, qx - 1):qx + 2, max(0, qy - 1):qy + 2]
        assert np.all(cleaned[:, qx, qy] <= nb.max((1, 2)) + 0.01)
        assert np.all(cleaned[:, qx, qy] >= nb.min((1, 2)) - 0.01)
    # the cleaned patterns hold the counts of the patterns without bad pixels, less the estimated pedestal
    totals = (cleaned.sum((1, 2)) + (s.pedestal - 100) * cleaned[0].size) / data[3].sum((1, 2))
    assert np.all(np.abs(totals - 1) < 0.02), totals


def test_metadata_lists_the_pixels(example):
    s = survey_cube(with_bad_pixels(example[0]), progress=False)
    meta = s.metadata()
    assert meta.name == "prenet_survey" and meta["n_hot"] == 4 and meta["n_dead"] == 2
    assert sorted(map(tuple, np.asarray(meta["hot_pixels"]).tolist())) == sorted(HOT)
    assert meta["pedestal"] == 0.0


def test_nan_in_the_last_pattern_is_found_in_one_cheap_pass(tmp_path, example):
    """The survey reads every pattern once, with no network: a NaN in the last of 2304 patterns of
    128 x 128 (a 150 MB file) is found in seconds."""
    data = example[0]
    path = tmp_path / "big.h5"
    with h5py.File(path, "w") as f:
        d = f.create_dataset("cube", (48, 48, 128, 128), dtype="float32", chunks=(1, 48, 128, 128))
        for r in range(48):
            d[r] = np.tile(data[r % 16], (3, 1, 1))
        last = d[47, 47]
        last[100, 100] = np.nan
        d[47, 47] = last
    t0 = time.perf_counter()
    with h5py.File(path, "r") as f, pytest.raises(InputError, match=r"NaN/inf.*\(47, 47\)"):
        survey_cube(f["cube"], progress=False)
    assert time.perf_counter() - t0 < 60
