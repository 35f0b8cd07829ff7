"""Synthetic scans (simulate.scans) and the Poisson Cramer-Rao bound of the centre (evaluate.crb)."""

import numpy as np
import pytest
import torch

from py4dstem_prenet.evaluate.crb import centre_crb
from py4dstem_prenet.simulate.noise import DetectorEffects
from py4dstem_prenet.simulate.scans import ScanRanges, build_scan, descan_drift

Q = 48


def _disk(q=Q, r=5.0, cx=None, cy=None):
    g = torch.arange(q, dtype=torch.float64)
    d = torch.hypot(g[:, None] - (q / 2 if cx is None else cx), g[None] - (q / 2 if cy is None else cy))
    p = torch.sigmoid((r - d) / 0.7)
    return (p / p.sum()).float()


def _com(x):
    x = x.double()
    g = torch.arange(x.shape[-1], dtype=torch.float64)
    m = x.sum((-2, -1))
    return (x.sum(-1) * g).sum(-1) / m, (x.sum(-2) * g).sum(-1) / m


def test_drift_kinds_and_size():
    rng = np.random.default_rng(0)
    for kind in ("plane", "parabola", "fixed"):
        qx, qy = descan_drift((16, 16), 10.0, rng, (128, 128), kind=kind, jitter_px=0.0)
        assert np.hypot(qx - 64, qy - 64).max() == pytest.approx(10.0)
    qx, qy = descan_drift((16, 16), 10.0, rng, (128, 128), kind="plane", jitter_px=0.0)
    assert np.allclose(np.diff(qx, 2, axis=0), 0, atol=1e-9)  # a plane has no curvature
    with pytest.raises(ValueError, match="drift kind"):
        descan_drift((4, 4), 1.0, rng, (64, 64), kind="wobble")


def test_build_scan_truth_is_exact():
    """A round disk's centre of mass sits on the truth of every position (drift, jitter, grains, halo)."""
    pool = torch.stack([_disk(r=4.0), _disk(r=6.0)])
    for halo in (0.0, 1.0):
        ranges = ScanRanges(scan=(5, 6), ratio=(1.0, 1.0), grains=(2, 2), halo_fraction=halo, jitter_px=0.3)
        clean, truth = build_scan(pool, np.random.default_rng(3), ranges)
        assert clean.shape == (5, 6, Q, Q) and truth["qx0"].shape == (5, 6)
        assert (truth["halo_px"] > 0) == bool(halo) and set(np.unique(truth["source"])) <= {0, 1}
        cx, cy = _com(torch.from_numpy(clean).reshape(-1, Q, Q))
        np.testing.assert_allclose(cx.numpy(), truth["qx0"].ravel(), atol=0.02)
        np.testing.assert_allclose(cy.numpy(), truth["qy0"].ravel(), atol=0.02)
        assert np.hypot(truth["qx0"] - Q / 2, truth["qy0"] - Q / 2).max() < 0.1 * Q + 0.03 * Q * 1.5 + 1.5


def test_polycrystal_rings_are_rotation_averages():
    """ring_fraction=1: each pattern is the mean of rotations, so an off-axis spot becomes a ring."""
    spot = _disk(r=1.5, cx=Q / 2 + 12, cy=Q / 2)
    clean, truth = build_scan(spot[None], np.random.default_rng(1),
                              ScanRanges(scan=(2, 2), drift_frac=0.0, offset_frac=0.0, jitter_px=0.0,
                                         ratio=(1.0, 1.0), ring_fraction=1.0, ring_grains=48))
    assert truth["rings"]
    p = clean[0, 0]
    g = np.arange(Q)
    r = np.hypot(g[:, None] - Q / 2, g[None] - Q / 2)
    on_ring = np.abs(r - 12) < 1
    lit = p[on_ring] > 0.1 * p[on_ring].max()
    assert lit.mean() > 0.8  # intensity (nearly) all around the ring; the spot alone lights a few %
    assert (spot.numpy()[on_ring] > 0.1 * spot.numpy().max()).mean() < 0.1


def test_crb_matches_gaussian_spot_and_read_noise_raises_it():
    """Poisson CRB of a Gaussian spot's centre: sigma^2 / N per axis (radial sqrt(2) sigma / sqrt N)."""
    g = torch.arange(64, dtype=torch.float64)
    s = 3.0
    p = torch.exp(-((g[:, None] - 32.3) ** 2 + (g[None] - 31.6) ** 2) / (2 * s * s))
    p = (p / p.sum()).float()[None]
    for dose in (1e2, 1e4):
        assert centre_crb(p, dose)[0] == pytest.approx(np.sqrt(2 * s * s / dose), rel=0.03)
    assert centre_crb(p, 1e4, DetectorEffects(read_noise=2.0))[0] > centre_crb(p, 1e4)[0] * 1.05
    saturated = centre_crb(p, 1e7, DetectorEffects(bit_depth=6))[0]
    assert saturated > centre_crb(p, 1e7)[0] * 3  # clipped pixels carry no information
    assert np.isinf(centre_crb(torch.zeros(1, 16, 16), 1e3)[0])
