"""The sub-pixel conventions everything stands on: the work grid maps back exactly, a heatmap target's
weighted centre of mass is the label it was drawn at, and a block-averaged pattern keeps its centre."""

import numpy as np
import pytest
import torch

from py4dstem_prenet import geometry
from py4dstem_prenet.normalization import detector_to_work, to_work_grid, work_to_detector
from py4dstem_prenet.train.data import heatmap_target


@pytest.mark.parametrize("factor", [1.0, 2.0, 4.0, 1.5])
def test_work_grid_mapping_round_trips(factor):
    q = np.linspace(-0.5, 127.5, 17)
    np.testing.assert_allclose(work_to_detector(detector_to_work(q, factor), factor), q, atol=1e-12)
    # the centre of work pixel k covers detector pixels k*f .. (k+1)*f - 1: its centre is (k + 0.5) f - 0.5
    assert work_to_detector(np.array(0.0), factor) == pytest.approx(0.5 * factor - 0.5)


@pytest.mark.parametrize("size", [64, 32])
def test_block_average_keeps_a_point_where_the_mapping_says(size):
    """A single bright pixel block-averaged onto the work grid lands in the work pixel whose detector
    centre is within half a block of it; the centre of mass of a smooth blob maps back exactly."""
    q = 128
    gx, gy = np.meshgrid(np.arange(q), np.arange(q), indexing="ij")
    cx, cy = 70.3, 51.8
    blob = torch.from_numpy(np.exp(-((gx - cx) ** 2 + (gy - cy) ** 2) / (2 * 6.0**2)))[None]
    work, (fx, fy) = to_work_grid(blob, size)
    assert work.shape[-2:] == (size, size) and fx == fy == q / size
    w = work[0].numpy()
    wx, wy = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    mx, my = (w * wx).sum() / w.sum(), (w * wy).sum() / w.sum()
    assert work_to_detector(mx, fx) == pytest.approx(cx, abs=1e-6)
    assert work_to_detector(my, fy) == pytest.approx(cy, abs=1e-6)


@pytest.mark.parametrize("sigma", [1.0, 1.5])
def test_heatmap_target_weighted_com_is_the_label(sigma):
    """The training target is a Gaussian at the label; the inference read-out (weighted_com with the
    window the manifest records, 4 sigma or more) returns the label to well under 0.01 px."""
    qx0, qy0 = np.array([40.25, 63.9, 20.0]), np.array([70.6, 12.1, 100.49])
    target = heatmap_target((128, 128), qx0, qy0, sigma)[:, 0].double()
    qx, qy, mass = geometry.weighted_com(target, window=int(np.ceil(4 * sigma)))
    np.testing.assert_allclose(qx.numpy(), qx0, atol=5e-3)
    np.testing.assert_allclose(qy.numpy(), qy0, atol=5e-3)
    assert (mass > 0).all()


def test_detector_centre_is_half_the_shape():
    assert geometry.detector_center((128, 128)) == (64.0, 64.0)
    assert geometry.detector_center((5, 96, 97)) == (48.0, 48.5)
