"""The one distortion model: affine maps, warps, sub-pixel centres, ellipse conversions."""

import math

import numpy as np
import pytest
import torch

from py4dstem_prenet import geometry as g


def gaussian(shape, cx, cy, sigma, dtype=torch.float64):
    qx = torch.arange(shape[0], dtype=dtype)[:, None]
    qy = torch.arange(shape[1], dtype=dtype)[None, :]
    return torch.exp(-((qx - cx) ** 2 + (qy - cy) ** 2) / (2 * sigma**2))


def rings(shape, cx, cy, radii=(18.0, 30.0), width=2.5, ratio=1.0, theta=0.0):
    """Rings of an ellipse (a/b = ratio, a-axis at theta) centred at (cx, cy): analytic, no warp."""
    qx, qy = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    e_inv = np.linalg.inv(g.ellipse_matrix(ratio, theta)[0])
    ux = e_inv[0, 0] * (qx - cx) + e_inv[0, 1] * (qy - cy)
    uy = e_inv[1, 0] * (qx - cx) + e_inv[1, 1] * (qy - cy)
    r = np.hypot(ux, uy)
    return sum(np.exp(-((r - r0) ** 2) / (2 * width**2)) for r0 in radii)


def test_detector_center_convention():
    assert g.detector_center((128, 128)) == (64.0, 64.0)
    assert g.detector_center((3, 5, 256, 128)) == (128.0, 64.0)


def test_identity_matrix_is_identity_warp():
    img = torch.rand(2, 32, 40, dtype=torch.float64)
    out = g.warp(img, g.distortion_matrix((32, 40)), mode="bilinear")
    assert torch.allclose(out, img, atol=1e-12)


def test_pure_shift_moves_pattern_by_known_subpixel_amount():
    shape = (64, 64)
    # correct a pattern whose axis is at (30.3, 33.6): it must land at the detector centre (32, 32)
    f = g.distortion_matrix(shape, 30.3, 33.6)
    moved = g.warp(gaussian(shape, 30.3, 33.6, 3.0)[None], f)
    qx, qy, _ = g.weighted_com(moved, window=15, floor=0.0)
    assert abs(qx[0] - 32.0) < 2e-3 and abs(qy[0] - 32.0) < 2e-3


def test_warp_then_inverse_warp_returns_pattern():
    shape = (128, 128)
    img = torch.as_tensor(rings(shape, 64, 64))[None]
    f = g.distortion_matrix(shape, 61.3, 66.8, ratio=1.08, theta=0.7)
    distorted = g.warp(img, g.invert(f))
    back = g.warp(distorted, f)
    inner = (slice(20, 108), slice(20, 108))  # away from the zero-filled edge
    err = (back[0][inner] - img[0][inner]).abs().max().item()
    assert err < 5e-3  # bicubic twice on rings of 2.5 px width: max abs error relative to peak 1


def test_distortion_warp_matches_analytic_ellipse():
    shape = (128, 128)
    truth = rings(shape, 60.4, 67.2, ratio=1.1, theta=-0.5)
    f = g.distortion_matrix(shape, 60.4, 67.2, ratio=1.1, theta=-0.5)
    sim = g.warp(torch.as_tensor(rings(shape, 64, 64))[None], g.invert(f))[0].numpy()
    assert np.abs(sim - truth)[15:113, 15:113].max() < 5e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_subpixel_com_of_exact_image(dtype):
    rng = np.random.default_rng(0)
    for _ in range(20):
        cx, cy = rng.uniform(20, 44, 2)
        h = gaussian((64, 64), cx, cy, 2.0, dtype)[None]
        qx, qy, mass = (v.numpy() for v in g.weighted_com(h / h.sum(), window=8))
        assert abs(qx[0] - cx) < 0.005 and abs(qy[0] - cy) < 0.005
        assert 0.99 < mass[0] <= 1.0 + 1e-6  # a normalised peak lies entirely inside the window


def test_com_is_batched_and_ignores_distant_background():
    h = torch.stack([gaussian((48, 48), 10.2, 30.7, 1.5), gaussian((48, 48), 40.6, 5.1, 1.5)])
    h[:, 0, 0] += 0.5  # a bright far-away pixel outside the window
    qx, qy, _ = (v.numpy() for v in g.weighted_com(h, window=8))
    np.testing.assert_allclose(qx, [10.2, 40.6], atol=5e-3)
    np.testing.assert_allclose(qy, [30.7, 5.1], atol=5e-3)


def test_py4dstem_conversions_round_trip():
    for ratio, theta in [(1.05, 0.3), (1.12, -1.2), (1.0, 0.0), (1.3, 1.5)]:
        a, b, t = g.ellipse_to_py4dstem(ratio, theta, b=40.0)
        assert a >= b == 40.0
        r2, t2 = g.ellipse_from_py4dstem(a, b, t)
        assert r2 == pytest.approx(ratio)
        assert g.angle_difference(t2, theta)[0] < 1e-12
    # a < b is the same ellipse with the axes swapped
    r, t = g.ellipse_from_py4dstem(20.0, 22.0, 0.1)
    assert r == pytest.approx(1.1) and g.angle_difference(t, 0.1 + math.pi / 2)[0] < 1e-12
    with pytest.raises(ValueError):
        g.ellipse_from_py4dstem(-1.0, 2.0, 0.0)


def test_angle_encoding_is_continuous_across_half_turn():
    thetas = np.array([-1.5, -0.2, 0.0, 0.9, 1.56])
    enc = g.encode_angle(thetas)
    assert np.all(g.angle_difference(g.decode_angle(enc[:, 0], enc[:, 1]), thetas) < 1e-12)
    # theta and theta + pi are the same ellipse and the same code
    np.testing.assert_allclose(g.encode_angle(thetas + math.pi), enc, atol=1e-12)


def test_correct_points_inverts_forward_model():
    rng = np.random.default_rng(1)
    ux, uy = rng.normal(0, 20, 50), rng.normal(0, 20, 50)
    f = g.distortion_matrix((128, 128), 70.2, 58.9, 1.07, 0.4)
    qx, qy = g.apply(f[0], ux + 64, uy + 64)
    cx, cy = g.correct_points(qx, qy, 70.2, 58.9, 1.07, 0.4)
    np.testing.assert_allclose(cx, ux, atol=1e-10)
    np.testing.assert_allclose(cy, uy, atol=1e-10)


def test_preserve_counts_conserves_total():
    shape = (96, 96)
    img = torch.as_tensor(rings(shape, 48, 48, radii=(15.0,), width=3.0))[None]
    f = g.distortion_matrix(shape, 48, 48, ratio=1.1, theta=0.3)
    out = g.warp(img, f, preserve_counts=True)
    assert out.sum().item() == pytest.approx(img.sum().item(), rel=2e-3)


def test_bad_inputs():
    with pytest.raises(ValueError, match="ratio"):
        g.ellipse_matrix(-1.0, 0.0)
    with pytest.raises(ValueError, match=r"\(N, Qx, Qy\)"):
        g.warp(torch.zeros(4, 4), np.eye(3))
    with pytest.raises(ValueError, match="length"):
        g.distortion_matrix((8, 8), [1.0, 2.0], [1.0, 2.0, 3.0])
