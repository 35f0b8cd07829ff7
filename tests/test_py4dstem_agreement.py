"""Our correction and py4DSTEM's own downstream correction agree exactly (the contract with users)."""

import numpy as np
import py4DSTEM
import pytest
import torch

from py4dstem_prenet import geometry


def bragg_vectors_with(points, qx0, qy0, ratio, theta):
    """BraggVectors at one scan position holding ``points`` (measured pixel coordinates), calibrated
    with our origin and ellipse written the way prenet_center / prenet_ellipse write them."""
    bv = py4DSTEM.BraggVectors(Rshape=(1, 1), Qshape=(128, 128))
    pla = bv._v_uncal
    pl = pla.get_pointlist(0, 0)
    pl.add_data_by_field((points[0], points[1], np.ones_like(points[0])))
    cal = bv.calibration
    cal.set_origin((np.full((1, 1), qx0), np.full((1, 1), qy0)))
    cal.set_ellipse(geometry.ellipse_to_py4dstem(ratio, theta))
    bv.setcal(center=True, ellipse=True, pixel=False, rotate=False)
    return bv


@pytest.mark.parametrize("ratio,theta", [(1.08, 0.4), (1.12, -1.3), (1.03, 1.5707), (1.0, 0.0)])
def test_bragg_vector_calibration_matches_our_point_correction(ratio, theta):
    rng = np.random.default_rng(3)
    qx0, qy0 = 61.7, 66.2
    # ideal (circular) points, distorted by our forward model
    ux, uy = rng.normal(0, 25, 40), rng.normal(0, 25, 40)
    f = geometry.distortion_matrix((128, 128), qx0, qy0, ratio, theta)
    qx, qy = geometry.apply(f[0], ux + 64, uy + 64)
    bv = bragg_vectors_with((qx, qy), qx0, qy0, ratio, theta)
    v = bv.cal[0, 0]
    ox, oy = geometry.correct_points(qx, qy, qx0, qy0, ratio, theta)
    np.testing.assert_allclose(v.qx, ox, atol=1e-9)
    np.testing.assert_allclose(v.qy, oy, atol=1e-9)
    # and both recover the ideal points exactly
    np.testing.assert_allclose(v.qx, ux, atol=1e-9)
    np.testing.assert_allclose(v.qy, uy, atol=1e-9)


def test_image_correction_puts_spots_where_py4dstem_puts_vectors():
    """A spot at measured position q lands, after our image warp, at py4DSTEM's calibrated vector
    (relative to the detector centre): image and vector corrections are the same map."""
    qx0, qy0, ratio, theta = 60.3, 67.8, 1.1, 0.6
    spots = np.array([[60.3 + 20, 67.8 + 5], [60.3 - 12, 67.8 + 18], [60.3 + 3, 67.8 - 25]])
    g = np.arange(128.0)
    img = sum(np.exp(-((g[:, None] - sx) ** 2 + (g[None] - sy) ** 2) / (2 * 1.2**2)) for sx, sy in spots)
    f = geometry.distortion_matrix((128, 128), qx0, qy0, ratio, theta)
    out = geometry.warp(torch.as_tensor(img)[None], f)[0]
    bv = bragg_vectors_with((spots[:, 0], spots[:, 1]), qx0, qy0, ratio, theta)
    v = bv.cal[0, 0]
    for px, py in zip(v.qx + 64, v.qy + 64, strict=True):
        ix, iy = int(round(px)), int(round(py))
        win = out[ix - 5:ix + 6, iy - 5:iy + 6].clamp_min(0)
        cx = (win.sum(1) * torch.arange(ix - 5, ix + 6)).sum() / win.sum()
        cy = (win.sum(0) * torch.arange(iy - 5, iy + 6)).sum() / win.sum()
        assert abs(cx.item() - px) < 0.05 and abs(cy.item() - py) < 0.05
