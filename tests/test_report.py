"""The QA report: ring statistics see ellipticity, and the report is written for a processed cube."""

import numpy as np
import py4DSTEM
import pytest
import torch

from py4dstem_prenet import geometry
from py4dstem_prenet.cli import main
from py4dstem_prenet.reporting import report, ring_statistics
from py4dstem_prenet.validation import InputError


def ring(ratio, q=96):
    g = np.arange(q)
    r = np.hypot(g[:, None] - q / 2, g[None, :] - q / 2)
    img = np.exp(-((r - 25) ** 2) / 4.0).astype(np.float32)
    if ratio == 1:
        return img
    f = geometry.distortion_matrix((q, q), ratio=ratio, theta=0.4)
    return geometry.warp(torch.from_numpy(img)[None], geometry.invert(f))[0].numpy()


def test_ring_spread_sees_an_ellipse():
    radius, mean, spread = ring_statistics(ring(1.0))
    peak = np.argmin(np.abs(radius - 25))
    assert abs(radius[np.nanargmax(mean)] - 25) <= 1
    _, _, spread_ell = ring_statistics(ring(1.05))
    assert spread[peak] < 0.02 and spread_ell[peak] > 5 * spread[peak]


def test_report_png_and_html(tmp_path, cube, untrained):
    kw = {f"{t}_model": untrained[t] for t in ("denoise", "center", "ellipse")}
    result = cube.prenet_preprocess(device="cpu", progress=False, **kw)
    png, page = report(result, tmp_path / "qa.png", raw=cube)
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    text = page.read_text()
    assert "data:image/png;base64," in text and "prenet_center" in text and "ratio" in text
    with pytest.raises(InputError, match="no prenet_origin node"):
        report(py4DSTEM.DataCube(data=cube.data.astype(np.float32)), tmp_path / "x.png")


def test_report_command_on_run_output(tmp_path, cube, untrained):
    src, out = tmp_path / "in.h5", tmp_path / "out.h5"
    py4DSTEM.save(str(src), cube)
    models = [f"--{t}-model={untrained[t]}" for t in ("denoise", "center", "ellipse")]
    assert main(["run", str(src), "-o", str(out), "--quiet", "--device", "cpu", *models]) == 0
    assert main(["report", str(out), "--input", str(src), "-o", str(tmp_path / "qa.png")]) == 0
    assert (tmp_path / "qa.png").exists() and (tmp_path / "qa.html").exists()
