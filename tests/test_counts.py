"""Counts conserved where the docs say so: the resampling of the chain (shift + ellipse) conserves each
pattern's total and creates no negative values."""

import numpy as np
import py4DSTEM
import torch
from conftest import disk_cube

from py4dstem_prenet import geometry as g
from py4dstem_prenet.example import load_example
from py4dstem_prenet.pipeline import transform


def hard_disks(n=16, q=64, radius=6.0, seed=0):
    rng = np.random.default_rng(seed)
    cx, cy = q / 2 + rng.uniform(-4, 4, n), q / 2 + rng.uniform(-4, 4, n)
    gx, gy = np.meshgrid(np.arange(q), np.arange(q), indexing="ij")
    disks = (np.hypot(gx - cx[:, None, None], gy - cy[:, None, None]) < radius).astype(np.float64) * 50
    return torch.from_numpy(disks), cx, cy


def test_plain_bicubic_rings_negative_and_clamp_removes_it_keeping_the_total():
    disks, cx, cy = hard_disks()
    f = g.distortion_matrix((64, 64), cx, cy, 1.05, 0.4)
    plain = g.warp(disks, f, preserve_counts=True)
    clamped = g.warp(disks, f, preserve_counts=True, clamp=True)
    assert plain.min() < -1  # the documented ringing
    assert clamped.min() >= 0
    torch.testing.assert_close(clamped.sum((1, 2)), plain.sum((1, 2)), rtol=1e-10, atol=0)
    torch.testing.assert_close(clamped.sum((1, 2)), disks.sum((1, 2)), rtol=1e-3, atol=0)


def test_clamp_keeps_read_noise_of_the_input():
    """Negative values that are in the data (read noise) are not the interpolation's: they are kept."""
    rng = np.random.default_rng(0)
    noise = torch.from_numpy(rng.normal(0, 0.5, (4, 64, 64)) + 0.2)
    f = g.distortion_matrix((64, 64), 32.3, 31.6)
    out = g.warp(noise, f, clamp=True)
    assert out.min() < -1
    torch.testing.assert_close(out.sum((1, 2)), g.warp(noise, f).sum((1, 2)), rtol=1e-9, atol=1e-9)


def test_chain_resampling_is_non_negative_and_conserves_counts():
    """The aligned example patterns (sharp abTEM disks, noise-free counts): non-negative, each pattern's
    total that of the exact resampling and within 0.5 % of the input's (what leaves the detector)."""
    _, truth = load_example()
    data = truth["clean"][:2].astype(np.float32)
    kw = {"qx0": truth["qx0"][:2], "qy0": truth["qy0"][:2], "ratio": truth["ratio"], "theta": truth["theta"]}
    out, _ = transform(data, device="cpu", progress=False, **kw)
    assert out.min() >= 0
    f = g.distortion_matrix((128, 128), np.ravel(kw["qx0"]), np.ravel(kw["qy0"]), kw["ratio"], kw["theta"])
    exact = g.warp(torch.from_numpy(data.reshape(-1, 128, 128)), f, preserve_counts=True).sum((1, 2)).numpy()
    np.testing.assert_allclose(out.sum((2, 3)).ravel(), exact, rtol=1e-5)
    np.testing.assert_allclose(out.sum((2, 3)), data.sum((2, 3)), rtol=5e-3)


def test_aligned_cube_holds_no_negative_counts(untrained):
    data, _, _ = disk_cube(3, 4, seed=2, dose=5e4)
    dc = py4DSTEM.DataCube(data=data)
    aligned = dc.prenet_center(model=untrained["center"], device="cpu", progress=False)
    assert aligned.data.min() >= 0
    qx0, qy0 = dc.calibration.get_origin()
    f = g.distortion_matrix((64, 64), np.ravel(qx0), np.ravel(qy0))
    exact = g.warp(torch.from_numpy(data.reshape(-1, 64, 64).astype(np.float32)), f, preserve_counts=True)
    np.testing.assert_allclose(aligned.data.sum((2, 3)).ravel(), exact.sum((1, 2)).numpy(), rtol=1e-5)
