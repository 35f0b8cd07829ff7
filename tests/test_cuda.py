"""CPU and CUDA agree (skipped where PyTorch sees no GPU): the same centres, ellipse and patterns."""

import numpy as np
import py4DSTEM
import pytest
import torch

from py4dstem_prenet.example import load_example

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_chain_agrees_on_cpu_and_cuda():
    cube, _ = load_example()
    small = py4DSTEM.DataCube(data=np.asarray(cube.data[:4, :4]))
    results = {}
    for device in ("cpu", "cuda"):
        dc = py4DSTEM.DataCube(data=small.data.copy())
        out = dc.prenet_preprocess(device=device, progress=False)
        results[device] = (dc.tree("prenet_origin").data, dc.calibration.get_ellipse(), np.asarray(out.data))
    (o_cpu, e_cpu, d_cpu), (o_gpu, e_gpu, d_gpu) = results["cpu"], results["cuda"]
    np.testing.assert_allclose(o_cpu[:2], o_gpu[:2], atol=1e-3)
    np.testing.assert_allclose(e_cpu, e_gpu, atol=1e-4)
    assert np.abs(d_cpu - d_gpu).max() <= 1e-3 * max(1.0, np.abs(d_cpu).max())
