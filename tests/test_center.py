"""Centre finding, stage by stage: the work grid, the geometric disk fit, the scan consensus, and the
whole pass on small deterministic cases."""

import numpy as np
import pytest
import torch

from py4dstem_prenet.center import CentreSettings, refine_on_disk
from py4dstem_prenet.center_identify import symmetry_scores
from py4dstem_prenet.disk_fit import fit_disk
from py4dstem_prenet.normalization import WorkGrid
from py4dstem_prenet.scan_consensus import choose
from py4dstem_prenet.weights import get_entry

SETTINGS = CentreSettings.from_dict(get_entry("center", "default").postprocess)


def disks(centres, radius=5.0, q=64, halo=0.0, shape=None, level=100.0):
    h, w = shape or (q, q)
    gx, gy = torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64)
    out = []
    for cx, cy in centres:
        r = torch.hypot(gx[:, None] - cx, gy[None] - cy)
        out.append(torch.sigmoid((radius - r) / 0.4) * level + halo * torch.exp(-((r - 20) ** 2) / 10))
    return torch.stack(out)


def test_refinement_finds_disk_centre_from_a_rough_start():
    truth = np.array([[30.3, 33.7], [25.55, 40.2], [36.9, 28.1]])
    start = truth + np.array([[1.0, -0.7], [-1.2, 0.5], [0.6, 1.0]])
    qx, qy = refine_on_disk(disks(truth, halo=5.0), start[:, 0], start[:, 1])
    np.testing.assert_allclose(qx, truth[:, 0], atol=0.02)
    np.testing.assert_allclose(qy, truth[:, 1], atol=0.02)


@pytest.mark.parametrize("radius", [3.0, 8.0, 20.0])
def test_edge_fit_converges_from_several_pixels_and_reports_sigma(radius):
    rng = np.random.default_rng(1)
    truth = np.array([[60.3, 63.7], [66.55, 58.2], [63.9, 64.1]])
    clean = disks(truth, radius=radius, q=128, level=50.0) + 2.0
    noisy = torch.poisson(clean, generator=torch.Generator().manual_seed(0)).float()
    start = truth + rng.uniform(-3, 3, truth.shape)
    f = fit_disk(noisy, start[:, 0], start[:, 1], settings=SETTINGS.fit)
    err = np.hypot(f.qx - truth[:, 0], f.qy - truth[:, 1])
    assert f.ok.all()
    assert err.max() < 0.15
    np.testing.assert_allclose(f.radius, radius, atol=0.3)
    assert np.all((f.sigma > 0) & (f.sigma < 0.2))


def test_edge_fit_ignores_intensity_inside_and_outside_the_disk():
    """A saturated, textured disk on a bright halo, with a brighter neighbour: the edge, not the
    intensity, sets the centre."""
    truth = (62.4, 65.8)
    g = torch.arange(128, dtype=torch.float64)
    r = torch.hypot(g[:, None] - truth[0], g[None] - truth[1])
    disk = torch.sigmoid((15 - r) / 0.5) * (1 + 0.5 * torch.sin(g[:, None] / 3.0))  # dynamical-like texture
    halo = 0.4 * torch.exp(-((g[:, None] - 50) ** 2 + (g[None] - 60) ** 2) / 800)  # off-centre halo
    neighbour = 3 * torch.sigmoid((15 - torch.hypot(g[:, None] - 62.4, g[None] - 100)) / 0.5)
    img = torch.clamp(disk + halo + neighbour, max=1.2)[None] * 1000  # saturated
    f = fit_disk(img, np.array([60.0]), np.array([63.0]), settings=SETTINGS.fit)
    assert f.ok[0]
    assert np.hypot(f.qx[0] - truth[0], f.qy[0] - truth[1]) < 0.1


def test_edge_fit_on_a_disk_cut_by_the_detector_edge_and_a_dead_pixel():
    truth = (40.2, 11.5)  # radius 14: 2.5 px off the left edge
    img = disks([truth], radius=14.0, q=96)
    img[0, 40, 24] = 0.0  # dead pixel on the edge's inside
    mask = torch.ones(96, 96, dtype=torch.bool)
    f = fit_disk(img, np.array([41.0]), np.array([13.0]), mask=mask, settings=SETTINGS.fit)
    assert f.ok[0] and np.hypot(f.qx[0] - truth[0], f.qy[0] - truth[1]) < 0.05
    assert f.rays[0] < 0.95  # rays off the detector were dropped


def test_fit_is_unchanged_by_pedestal_and_scale():
    truth = np.array([[30.3, 33.7], [25.55, 40.2]])
    rng = np.random.default_rng(0)
    base = torch.poisson(disks(truth, level=40.0) + 1, generator=torch.Generator().manual_seed(2))
    start = truth + rng.uniform(-1, 1, truth.shape)
    ref = fit_disk(base, start[:, 0], start[:, 1], settings=SETTINGS.fit)
    for scaled in (base * 1e-3, base + 100.0, base * 7.0 + 3.0):
        f = fit_disk(scaled, start[:, 0], start[:, 1], settings=SETTINGS.fit)
        np.testing.assert_allclose(f.qx, ref.qx, atol=1e-3)
        np.testing.assert_allclose(f.qy, ref.qy, atol=1e-3)


def test_featureless_pattern_is_not_a_fit():
    flat = torch.poisson(torch.full((2, 64, 64), 3.0), generator=torch.Generator().manual_seed(0))
    f = fit_disk(flat, np.array([32.0, 20.0]), np.array([32.0, 40.0]), settings=SETTINGS.fit)
    assert not np.any(f.ok & (f.sigma < 0.5))


@pytest.mark.parametrize("shape,size", [((32, 32), 128), ((64, 64), 128), ((96, 96), 128), ((128, 96), 128),
                                        ((200, 200), 128), ((256, 256), 128), ((512, 512), 128),
                                        ((96, 160), 64), ((256, 256), 64)])
def test_work_grid_maps_positions_exactly(shape, size):
    grid = WorkGrid.for_shape(shape, size)
    qx, qy = np.array([10.3, shape[0] / 2, shape[0] - 12.7]), np.array([11.6, shape[1] / 2 - 0.4, shape[1] - 9.2])
    ux, uy = grid.to_work(qx, qy)
    np.testing.assert_allclose(grid.to_detector(ux, uy), (qx, qy), atol=1e-9)
    # a Gaussian blob's centroid on the work grid maps back onto the detector position
    sigma = 3.0 * max(1.0, grid.factor)
    g0, g1 = torch.arange(shape[0], dtype=torch.float64), torch.arange(shape[1], dtype=torch.float64)
    blob = torch.exp(-((g0[:, None] - qx[1]) ** 2 + (g1[None] - qy[1]) ** 2) / (2 * sigma**2))[None]
    work = grid.apply(blob)[0]
    assert work.shape == (size, size)
    w0, w1 = torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64)
    cx = float((work.sum(1) * w0).sum() / work.sum())
    cy = float((work.sum(0) * w1).sum() / work.sum())
    bx, by = grid.to_detector(cx, cy)
    assert abs(bx - qx[1]) < 0.02 and abs(by - qy[1]) < 0.02


def test_symmetry_peaks_at_the_centre_of_symmetry():
    g = torch.arange(96, dtype=torch.float64)
    r = torch.hypot(g[:, None] - 47.3, g[None] - 50.1)
    ring = (torch.exp(-((r - 25) ** 2) / 4) + 0.3 * torch.exp(-((r - 38) ** 2) / 4))[None] * 50
    s = symmetry_scores(ring, np.array([[47.3, 40.0]]), np.array([[50.1, 50.1]]))
    assert s[0, 0] > 0.95 > s[0, 1] + 0.3


def test_scan_consensus_picks_the_candidate_that_follows_the_descan():
    u, v = np.meshgrid(np.linspace(-1, 1, 8), np.linspace(-1, 1, 8), indexing="ij")
    rng = np.random.default_rng(0)
    bx, by = 64 + 3 * u + 0.5 * v**2 + rng.normal(0, 0.05, u.shape), 64 - 2 * v + rng.normal(0, 0.05, u.shape)
    qx = np.stack([bx, bx + 12, bx - 9], -1)  # the direct beam and two diffracted disks
    qy = np.stack([by, by + 3, by + 10], -1)
    score = rng.normal(0, 0.1, qx.shape)
    score[..., 0] += 0.5
    score[2, 3] = [0.0, 1.0, 0.0]  # a diffracted disk preferred by the pattern itself
    score[6, 1] = [0.0, 0.0, 1.0]
    valid = np.ones(qx.shape, bool)
    valid[5, 5, 0] = False  # the direct beam not measured here
    c = choose(qx, qy, valid, score, **SETTINGS.consensus)
    want = np.zeros((8, 8), int)
    assert np.array_equal(c.pick[valid[..., 0]], want[valid[..., 0]])
    assert c.changed[2, 3] and c.changed[6, 1] and c.changed.sum() == 2
    assert not c.agrees[5, 5] and c.agrees.sum() == 63
    assert abs(c.fx[5, 5] - bx[5, 5]) < 0.3


def test_hidden_direct_beam_gives_the_ring_centre_not_a_point_on_a_ring():
    """Rings behind a beam stop (a dark disk and an arm from the top): the answer is the rings' centre."""
    from py4dstem_prenet.center import measure_origins

    rng = np.random.default_rng(0)
    g = np.arange(128)
    pats, truth = [], []
    for _ in range(4):
        cx, cy = rng.uniform(58, 70, 2)
        r = np.hypot(g[:, None] - cx, g[None] - cy)
        img = (200 * np.exp(-r / 12) + 60 * np.exp(-(r - 30) ** 2 / 8) + 30 * np.exp(-(r - 45) ** 2 / 8))
        img *= 1 + 0.5 * rng.random(img.shape)
        img[(r < 9) | ((np.abs(g[None] - cy) < 4) & (g[:, None] < cx))] = 0.5
        pats.append(rng.poisson(img).astype(np.float32))
        truth.append((cx, cy))
    truth = np.array(truth)
    o, _, _ = measure_origins(np.array(pats)[None], progress=False, device="cpu", scan_context=False)
    err = np.hypot(o.qx0[0] - truth[:, 0], o.qy0[0] - truth[:, 1])
    assert err.max() < 0.5
    assert o.info["methods"][int(o.method[0, 0])] and np.all(np.isfinite(o.qx0))


def test_same_centres_for_any_detector_size_pedestal_and_scale():
    """The example's first 4 x 4 patterns: cropped to 96 x 96 and 128 x 96, scaled by 1e-3 and put on a
    pedestal of 100, the centres are those of the original (issue 13), and near the truth."""
    from py4dstem_prenet.center import measure_origins
    from py4dstem_prenet.example import load_example

    cube, truth = load_example()
    d = np.asarray(cube.data[:4, :4])
    tx, ty = truth["qx0"][:4, :4], truth["qy0"][:4, :4]
    variants = {"as is": (d, 0, 0), "x1e-3 + 100": (d * 1e-3 + 100, 0, 0), "96 x 96": (d[:, :, 16:112, 16:112], 16, 16),
                "128 x 96": (d[:, :, :, 16:112], 0, 16)}
    found = {}
    for name, (x, ox, oy) in variants.items():
        o, _, _ = measure_origins(x, device="cpu", progress=False)
        found[name] = (o.qx0 + ox, o.qy0 + oy)
    ref = found["as is"]
    assert np.median(np.hypot(ref[0] - tx, ref[1] - ty)) < 0.3
    for name, (qx, qy) in found.items():
        np.testing.assert_allclose(qx, ref[0], atol=0.02, err_msg=name)
        np.testing.assert_allclose(qy, ref[1], atol=0.02, err_msg=name)
