"""Batching: row ranges give the same batches as a whole walk, and scan neighbours are the right patterns."""

import numpy as np
import py4DSTEM
import pytest
import torch

from py4dstem_prenet.batches import iter_batches
from py4dstem_prenet.models import build_model
from py4dstem_prenet.train.recipes import ARCHITECTURES, inputs_for
from py4dstem_prenet.weights import write_weights


def coded_cube(rx=5, ry=3, q=32):
    """Pattern (r, c) is 100 r + c + 1 at pixel (0, 0), plus a ramp (patterns must not be constant)."""
    code = 100 * np.arange(rx)[:, None] + np.arange(ry)[None, :] + 1
    ramp = np.arange(q * q, dtype=np.float32).reshape(q, q) / q**2
    return (code[..., None, None] + ramp).astype(np.float32)


def test_neighbours_up_down_left_right_mirrored_at_the_edges():
    data = coded_cube()
    seen = {}
    for start, block in iter_batches(data, batch_size=4, progress=False, neighbours=True):
        assert block.shape[1:] == (5, 32, 32)
        for k, b in enumerate(block):
            seen[start + k] = b[:, 0, 0]
    assert sorted(seen) == list(range(15))
    # interior (2, 1): up (1, 1), down (3, 1), left (2, 0), right (2, 2)
    np.testing.assert_array_equal(seen[2 * 3 + 1], [202, 102, 302, 201, 203])
    # corner (0, 0): up mirrored to (1, 0), left mirrored to (0, 1)
    np.testing.assert_array_equal(seen[0], [1, 101, 101, 2, 2])
    # corner (4, 2): down mirrored to (3, 2), right mirrored to (4, 1)
    np.testing.assert_array_equal(seen[14], [403, 303, 303, 402, 402])


def test_row_ranges_give_the_whole_walks_batches():
    data = coded_cube(7, 3)
    whole = list(iter_batches(data, batch_size=6, progress=False, neighbours=True))
    parts = [b for rows in ((0, 2), (2, 4), (4, 7))
             for b in iter_batches(data, batch_size=6, progress=False, rows=rows, neighbours=True)]
    assert [s for s, _ in whole] == [s for s, _ in parts]
    for (_, a), (_, b) in zip(whole, parts, strict=True):
        np.testing.assert_array_equal(a, b)


def test_neighbour_denoiser_runs_through_the_datacube_method(tmp_path, cube):
    torch.manual_seed(0)
    arch = ARCHITECTURES["denoise"]["compact-neighbours"]
    entry = {"task": "denoise", "architecture": arch, "input": inputs_for("denoise", "compact-neighbours"),
             "recipe": {"note": "random initialisation, for plumbing tests only"}, "metrics": {}}
    path = write_weights(tmp_path / "nb.safetensors", build_model(arch).state_dict(), entry)
    out = cube.prenet_denoise(model=str(path), device="cpu", batch_size=5, progress=False)
    assert out.data.shape == cube.data.shape and np.all(out.data >= 0)
    again = py4DSTEM.DataCube(data=cube.data.copy()).prenet_denoise(model=str(path), device="cpu", batch_size=12,
                                                                     progress=False)
    np.testing.assert_allclose(again.data, out.data, rtol=1e-4, atol=1e-4)


def test_prefetch_keeps_order_passes_errors_and_stops_early():
    from py4dstem_prenet.batches import prefetch

    assert list(prefetch(iter(range(50)), depth=3)) == list(range(50))

    def failing():
        yield 1
        raise ValueError("bad batch")

    it = prefetch(failing())
    assert next(it) == 1
    with pytest.raises(ValueError, match="bad batch"):
        next(it)
    taken = []
    for i in prefetch(iter(range(1000)), depth=2):
        taken.append(i)
        if i == 3:
            break  # the reader thread stops instead of blocking on a full buffer
    assert taken == [0, 1, 2, 3]
