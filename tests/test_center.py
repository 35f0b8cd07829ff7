"""Centre finding pieces: disk refinement and the scan-context outlier test."""

import numpy as np
import torch

from py4dstem_prenet.center import refine_on_disk, scan_outliers


def disks(centres, radius=5.0, q=64, halo=0.0):
    g = torch.arange(q, dtype=torch.float64)
    out = []
    for cx, cy in centres:
        r = torch.hypot(g[:, None] - cx, g[None] - cy)
        out.append(torch.sigmoid((radius - r) / 0.4) * 100 + halo * torch.exp(-((r - 20) ** 2) / 10))
    return torch.stack(out)


def test_refinement_finds_disk_centre_from_a_rough_start():
    truth = np.array([[30.3, 33.7], [25.55, 40.2], [36.9, 28.1]])
    start = truth + np.array([[1.0, -0.7], [-1.2, 0.5], [0.6, 1.0]])  # the network puts it within ~1 px
    qx, qy = refine_on_disk(disks(truth, halo=5.0), start[:, 0], start[:, 1], iterations=6)
    np.testing.assert_allclose(qx, truth[:, 0], atol=0.02)
    np.testing.assert_allclose(qy, truth[:, 1], atol=0.02)


def test_scan_outliers_flags_only_positions_off_the_drift():
    u, v = np.meshgrid(np.linspace(-1, 1, 8), np.linspace(-1, 1, 8), indexing="ij")
    rng = np.random.default_rng(0)
    qx0 = 64 + 3 * u + 0.5 * v**2 + rng.normal(0, 0.05, u.shape)
    qy0 = 64 - 2 * v + rng.normal(0, 0.05, u.shape)
    qx0[2, 3] += 9.0  # a diffracted disk picked instead of the direct beam
    qy0[6, 1] -= 7.5
    bad, fx, fy = scan_outliers(qx0, qy0)
    assert set(zip(*np.nonzero(bad), strict=True)) == {(2, 3), (6, 1)}
    assert abs(fx[2, 3] - (qx0[2, 3] - 9.0)) < 0.3
