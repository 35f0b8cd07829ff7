"""The noise model and the augmentation (one resampling, exact labels)."""

import numpy as np
import pytest
import torch

from py4dstem_prenet import geometry
from py4dstem_prenet.simulate.augment import AugmentRanges, distort, draw_geometry
from py4dstem_prenet.simulate.noise import DetectorEffects, add_noise


def test_poisson_mean_and_variance():
    clean = torch.full((200, 32, 32), 1.0 / 1024)  # uniform pattern
    gen = torch.Generator().manual_seed(0)
    for dose in (1e2, 1e4):
        counts = add_noise(clean, dose, gen)
        lam = dose / 1024
        assert counts.mean().item() == pytest.approx(lam, rel=0.01)
        assert counts.var().item() == pytest.approx(lam, rel=0.03)
        assert torch.all(counts == counts.round())


def test_read_noise_background_and_pixels():
    clean = torch.zeros(50, 32, 32)
    gen = torch.Generator().manual_seed(1)
    counts = add_noise(clean, 1e3, gen, DetectorEffects(read_noise=2.0, background=5.0))
    assert counts.mean().item() == pytest.approx(5.0, abs=0.05)
    assert counts.std().item() == pytest.approx(2.0, rel=0.03)
    hot = add_noise(clean + 1e-3, 1e3, gen, DetectorEffects(hot_fraction=0.01, dead_fraction=0.01, hot_level=999))
    assert (hot == 999).float().mean().item() == pytest.approx(0.01, abs=0.003)


def test_noise_is_deterministic_from_generator():
    clean = torch.rand(3, 16, 16) / 256
    a = add_noise(clean, [1e2, 1e3, 1e4], torch.Generator().manual_seed(5), DetectorEffects(read_noise=1))
    b = add_noise(clean, [1e2, 1e3, 1e4], torch.Generator().manual_seed(5), DetectorEffects(read_noise=1))
    c = add_noise(clean, [1e2, 1e3, 1e4], torch.Generator().manual_seed(6), DetectorEffects(read_noise=1))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_augmentation_labels_are_exact():
    """A centred symmetric disk, distorted, has its centre of mass exactly at the label (qx0, qy0)."""
    q = 96
    g = torch.arange(q, dtype=torch.float64)
    r = torch.hypot(g[:, None] - q / 2, g[None] - q / 2)
    disk = torch.sigmoid((6 - r) / 0.8)[None].repeat(5, 1, 1)
    params = draw_geometry(np.random.default_rng(0), 5, (q, q), AugmentRanges())
    out = distort(disk, params)
    m = out.sum((1, 2))
    cx = (out.sum(2) * g).sum(1) / m
    cy = (out.sum(1) * g).sum(1) / m
    np.testing.assert_allclose(cx.numpy(), params["qx0"], atol=2e-3)
    np.testing.assert_allclose(cy.numpy(), params["qy0"], atol=2e-3)
    # counts are conserved by the one resampling (area changes are compensated)
    np.testing.assert_allclose(m.numpy(), disk.sum((1, 2)).numpy(), rtol=2e-3)


def test_augmentation_ranges():
    p = draw_geometry(np.random.default_rng(1), 1000, (128, 128), AugmentRanges())
    assert np.all(np.abs(p["qx0"] - 64) <= 12.8) and np.all(np.abs(p["qy0"] - 64) <= 12.8)
    assert p["ratio"].min() >= 1.0 and p["ratio"].max() <= 1.12
    assert np.all(np.abs(p["theta"]) <= np.pi / 2)
    assert geometry.distortion_matrix((128, 128), p["qx0"], p["qy0"], p["ratio"], p["theta"]).shape == (1000, 3, 3)


def test_far_shifts_reach_the_detector_edge():
    p = draw_geometry(np.random.default_rng(2), 2000, (128, 128), AugmentRanges(far_fraction=0.25))
    far = np.maximum(np.abs(p["qx0"] - 64), np.abs(p["qy0"] - 64))
    assert far.max() <= 0.4 * 128 and far.max() > 0.35 * 128
    assert 0.15 < np.mean(far > 12.8) < 0.3  # about a quarter, minus the far ones drawn near the centre


def test_saturation_clips_each_pattern_at_a_fraction_of_its_maximum():
    clean = torch.rand(3, 32, 32) / 1024
    counts = add_noise(clean, 1e6, torch.Generator().manual_seed(0), DetectorEffects(saturation=0.5))
    free = add_noise(clean, 1e6, torch.Generator().manual_seed(0))
    np.testing.assert_allclose(counts.flatten(1).amax(1).numpy(), 0.5 * free.flatten(1).amax(1).numpy(), rtol=1e-6)
    assert (counts == counts.flatten(1).amax(1).view(3, 1, 1)).float().mean() > 0.2  # a flat saturated top


def test_counting_detector_bit_depth_and_integers():
    """A 6-bit counter saturates the direct beam at 63 counts; counts stay integers with flat field."""
    from py4dstem_prenet.simulate.noise import DETECTORS

    q = 64
    g = torch.arange(q, dtype=torch.float32)
    beam = (torch.hypot(g[:, None] - 32, g[None] - 32) < 4).float()
    clean = (beam / beam.sum() * 0.9 + 0.1 / q**2)[None].repeat(4, 1, 1)
    e = DETECTORS["counting-6bit"]
    counts = add_noise(clean, 1e5, torch.Generator().manual_seed(0), e)
    assert counts.max().item() == 63 and torch.all(counts == counts.round())
    assert (counts[:, 32, 32] == 63).all()  # the saturated direct beam
    dead = (counts == 0).all(0) & (clean[0] * 1e5 > 5)  # fixed dead pixels: the same in every pattern
    assert dead.sum() == ((counts == 0) & (clean * 1e5 > 5)).sum() / 4


def test_integrating_detector_gain_read_noise_dark():
    """Integrating: mean = gain * electrons + pedestal, read noise gain * sigma_e, negatives after dark."""
    clean = torch.full((400, 16, 16), 1.0 / 256)
    e = DetectorEffects(gain=10.0, read_noise=1.5, background=0.5, dark_sigma=0.3)
    counts = add_noise(clean, 256.0, torch.Generator().manual_seed(1), e)  # 1 electron per pixel
    assert counts.mean().item() == pytest.approx(10.5, abs=0.1)
    var = 10.0**2 * (1 + 1.5**2) + 0.3**2
    assert counts.var().item() == pytest.approx(var, rel=0.05)
    assert (counts < 0).any() and not torch.all(counts == counts.round())
    dark = add_noise(torch.zeros(200, 16, 16), 1.0, torch.Generator().manual_seed(2),
                     DetectorEffects(dark_sigma=1.0))
    assert torch.allclose(dark[0], dark[1])  # the dark residual is fixed per pixel
    with pytest.raises(ValueError, match="gain"):
        DetectorEffects(gain=0)


def test_mtf_conserves_counts_and_spreads():
    from py4dstem_prenet.simulate.noise import expected_electrons

    clean = torch.zeros(1, 32, 32)
    clean[0, 16, 16] = 1.0
    lam = expected_electrons(clean, 1e3, DetectorEffects(mtf_sigma=0.6))
    assert lam.sum().item() == pytest.approx(1e3, rel=1e-6)
    assert 0.3 < lam[0, 16, 16].item() / 1e3 < 0.5 and lam[0, 17, 16] > 0


def test_beam_stop_blocks_arm_and_round_stop():
    from py4dstem_prenet.simulate.noise import beam_stop_mask, draw_detector

    e = DetectorEffects(stop_width=6.0, stop_radius=8.0, stop_angle=0.0)  # arm along +qx from the centre
    m = beam_stop_mask((64, 64), e)
    assert m[32, 32] == 0 and m[60, 32] == 0 and m[60, 40] == 1 and m[10, 32] == 1 and m[32, 39] == 0
    counts = add_noise(torch.full((2, 64, 64), 1 / 4096), 1e5, torch.Generator().manual_seed(0), e)
    assert counts[:, 32, 32].sum() == 0 and counts[:, 10, 10].min() > 0
    rng = np.random.default_rng(0)
    stops = [draw_detector(rng, "counting", beam_stop=1.0).has_beam_stop for _ in range(10)]
    assert all(stops) and not draw_detector(rng, "ideal").has_beam_stop
    with pytest.raises(ValueError, match="kind"):
        draw_detector(rng, "medipix")
