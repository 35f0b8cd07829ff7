"""Shared fixtures: small synthetic cubes and untrained (random) networks written in the format of
``prenet train``, used only to exercise the plumbing (shapes, calibration, EMD, errors), never
shipped as defaults."""

from __future__ import annotations

import numpy as np
import py4DSTEM
import pytest
import torch

import py4dstem_prenet  # noqa: F401  (registers the DataCube methods)
from py4dstem_prenet.models import build_model
from py4dstem_prenet.train.recipes import ARCHITECTURES, inputs_for
from py4dstem_prenet.weights import write_weights


def disk_cube(rx=3, ry=4, q=64, seed=0, dose=2e3):
    """Noisy cube of a soft-edged bright disk plus a ring; returns (counts, qx0, qy0)."""
    rng = np.random.default_rng(seed)
    qx0 = q / 2 + rng.uniform(-3, 3, (rx, ry))
    qy0 = q / 2 + rng.uniform(-3, 3, (rx, ry))
    gx, gy = np.meshgrid(np.arange(q), np.arange(q), indexing="ij")
    r = np.hypot(gx[None, None] - qx0[..., None, None], gy[None, None] - qy0[..., None, None])
    clean = 1 / (1 + np.exp((r - 5) / 0.7)) + 0.05 * np.exp(-((r - 20) ** 2) / 8)
    clean /= clean.sum(axis=(2, 3), keepdims=True)
    return rng.poisson(clean * dose).astype(np.uint16), qx0, qy0


@pytest.fixture(autouse=True)
def user_registry(tmp_path_factory, monkeypatch):
    """Every test sees its own empty user model registry, never the real ~/.local/share one."""
    monkeypatch.setenv("PY4DSTEM_PRENET_HOME", str(tmp_path_factory.mktemp("registry")))


@pytest.fixture
def cube():
    data, qx0, qy0 = disk_cube()
    dc = py4DSTEM.DataCube(data=data)
    dc.calibration.set_Q_pixel_size(0.05)
    dc.calibration.set_Q_pixel_units("A^-1")
    return dc


@pytest.fixture(scope="session")
def untrained(tmp_path_factory):
    """Paths of randomly initialised compact networks, keyed by task."""
    folder = tmp_path_factory.mktemp("untrained")
    paths = {}
    for task in ("denoise", "center", "ellipse"):
        torch.manual_seed(0)
        net = build_model(ARCHITECTURES[task]["compact"])
        entry = {"task": task, "architecture": ARCHITECTURES[task]["compact"], "input": inputs_for(task, "compact"),
                 "recipe": {"note": "random initialisation, for plumbing tests only"}, "metrics": {}}
        paths[task] = str(write_weights(folder / f"{task}.safetensors", net.state_dict(), entry))
    return paths
