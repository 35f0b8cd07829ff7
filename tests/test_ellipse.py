"""The ring fit: a/b, angle and ring centre from distorted rings, a calibrated error bar, "not measurable"
where there is nothing to measure, masks, and the check on the corrected pattern."""

import math

import numpy as np
import pytest
import torch

from py4dstem_prenet import geometry, rings
from py4dstem_prenet.ellipse import check_correction, measure_ellipse
from py4dstem_prenet.simulate.noise import DetectorEffects, add_noise

Q = 128


def _ideal(kind="rings"):
    g = np.arange(Q) - Q / 2
    r = np.hypot(g[:, None], g[None, :])
    img = np.exp(-3 * (r / 4) ** 2) + 0.002 / (1 + (r / 10) ** 2)
    if kind == "rings":
        img = img + 0.02 * np.exp(-((r - 30) ** 2) / 4.5) + 0.01 * np.exp(-((r - 48) ** 2) / 8)
    elif kind == "halo":
        img = img + 0.01 * np.exp(-((r - 28) ** 2) / (2 * 5.0**2))
    return img / img.sum()


def _mean(ratio, theta, dose, kind="rings", x0=Q / 2 + 0.7, y0=Q / 2 - 0.4, seed=0):
    f = geometry.distortion_matrix((Q, Q), x0, y0, ratio, theta)
    d = geometry.warp(torch.from_numpy(_ideal(kind))[None], geometry.invert(f))[0].clamp_min(0).float()
    gen = torch.Generator().manual_seed(seed)
    return add_noise(d[None].repeat(64, 1, 1), dose, gen, DetectorEffects(read_noise=0.5)).mean(0).numpy()


@pytest.mark.parametrize("ratio,theta,kind", [(1.05, 0.3, "rings"), (1.03, -1.1, "halo"), (1.08, 1.4, "rings")])
def test_fit_recovers_ratio_angle_and_centre(ratio, theta, kind):
    fit = rings.fit_rings(_mean(ratio, theta, 1e4, kind))
    assert fit.measurable
    assert abs(fit.ratio - ratio) < max(4 * fit.ratio_sigma, 1e-3)
    assert geometry.angle_difference(fit.theta, theta)[0] < math.radians(1.5)
    assert abs(fit.x0 - (Q / 2 + 0.7)) < 0.1 and abs(fit.y0 - (Q / 2 - 0.4)) < 0.1
    assert 0 < fit.ratio_sigma < 0.005 and np.isfinite(fit.residual)


def test_error_bar_is_calibrated_over_noise_realisations():
    z = []
    for seed in range(8):
        fit = rings.fit_rings(_mean(1.04, 0.7, 1e3, seed=seed), seed=seed)
        z.append((fit.ratio - 1.04) / fit.ratio_sigma)
    assert np.mean(np.abs(z) < 2.5) >= 0.75  # a 2.5-sigma band holds most of them (not a tiny error bar)
    assert np.std(z) < 2.5  # ... and the error bar is not far too small


def test_featureless_and_single_crystal_are_not_measurable():
    g = np.arange(Q) - Q / 2
    r = np.hypot(g[:, None], g[None, :])
    flat = 1e4 * (np.exp(-3 * (r / 4) ** 2) + 0.01 / (1 + (r / 10) ** 2))
    fit = rings.fit_rings(np.random.default_rng(0).poisson(flat).astype(float))
    assert not fit.measurable and "featureless" in fit.reason and fit.ratio == 1.0
    spots = flat.copy()
    for a in np.arange(6) * np.pi / 3 + 0.2:  # one hexagonal ring of sharp spots
        spots += 3e3 * np.exp(-((g[:, None] - 30 * np.cos(a)) ** 2 + (g[None, :] - 30 * np.sin(a)) ** 2) / 3)
    fit = rings.fit_rings(np.random.default_rng(1).poisson(spots).astype(float))
    assert not fit.measurable and "spots" in fit.reason


def test_masks_beam_stop_dead_and_hot_pixels():
    mean = _mean(1.05, 0.3, 1e4)
    mean[:64, 60:68] = 0.0  # a beam-stop arm from the edge to the centre
    rng = np.random.default_rng(0)
    idx = rng.integers(10, Q - 10, (40, 2))
    mean[idx[:20, 0], idx[:20, 1]] = 0.0  # dead
    mean[idx[20:, 0], idx[20:, 1]] = 1e4  # hot
    fit = rings.fit_rings(mean)
    assert fit.measurable and abs(fit.ratio - 1.05) < 0.003
    assert not np.any(fit.mask[idx[20:, 0], idx[20:, 1]]) and fit.mask[100, 100]  # every hot pixel masked


def test_corrected_pattern_has_no_second_harmonic():
    mean = _mean(1.06, 0.9, 1e4, x0=Q / 2, y0=Q / 2)
    before = rings.ring_harmonic(mean)
    assert before.measurable and not before.ok
    fit = rings.fit_rings(mean)
    _, after = check_correction(mean, fit.ratio, fit.theta, fit.x0, fit.y0, rings.RingSettings())
    assert after.measurable and after.ok and after.amplitude < before.amplitude / 10


def test_measure_ellipse_warns_when_not_measurable():
    g = np.arange(Q) - Q / 2
    r = np.hypot(g[:, None], g[None, :])
    with pytest.warns(UserWarning, match="not measurable"):
        fit, _ = measure_ellipse(1e3 * np.exp(-((r / 5) ** 2)), device="cpu")
    assert not fit.measurable and fit.ratio == 1.0 and fit.reason
    fit, loaded = measure_ellipse(_mean(1.05, 0.3, 1e4, x0=Q / 2, y0=Q / 2), device="cpu")
    assert fit.measurable and abs(fit.ratio - 1.05) < 0.003 and fit.check_ok
    assert loaded.entry.task == "ellipse"


def test_settings_refuse_unknown_keys():
    with pytest.raises(ValueError, match="unknown ring-fit settings"):
        rings.RingSettings.from_dict({"n_sector": 12})


def test_prenet_ellipse_writes_fit_errors_and_ring_offset(untrained):
    import py4DSTEM

    import py4dstem_prenet  # noqa: F401  (registers the DataCube methods)

    f = geometry.distortion_matrix((Q, Q), Q / 2 + 1.5, Q / 2 - 1.0, 1.05, 0.4)  # ring centre off the beam
    ring = geometry.warp(torch.from_numpy(_ideal())[None], geometry.invert(f))[0].clamp_min(0).float()
    gen = torch.Generator().manual_seed(0)
    data = add_noise(ring[None].repeat(16, 1, 1), 1e4, gen).numpy().reshape(4, 4, Q, Q)
    cube = py4DSTEM.DataCube(data=data)
    cube.calibration.set_origin((np.full((4, 4), Q / 2), np.full((4, 4), Q / 2)))  # the direct beam
    fit = cube.prenet_measure_ellipse(model=untrained["ellipse"], device="cpu", progress=False)
    a, b, theta = cube.calibration.get_ellipse()
    assert fit.measurable and abs(a / b - 1.05) < 0.004 and geometry.angle_difference(theta, 0.4)[0] < 0.03
    assert 0 < cube.calibration["ellipse_ratio_sigma"] < 0.004
    meta = cube.tree("prenet_ellipse").metadata["prenet_ellipse"]
    assert meta["ring_center_offset_qx"] == pytest.approx(1.5, abs=0.15)
    assert meta["ring_center_offset_qy"] == pytest.approx(-1.0, abs=0.15)
    assert meta["measurable"] == 1 and meta["check_ok"] == 1 and "direct-beam" in meta["center_used"]
