"""The engine: steps declare outputs; "nav" parts land at their scan positions, "sum" parts add up; the
Dask executor gives exactly the in-process result; options are refused before any work."""

from dataclasses import dataclass

import numpy as np
import pytest

from py4dstem_prenet import engine
from py4dstem_prenet.options import Options
from py4dstem_prenet.validation import InputError


@dataclass
class TotalAndSum(engine.Step):
    """Per-pattern total counts (nav) and the summed pattern (sum)."""

    desc: str = "test"

    def outputs(self, shape):
        return {"total": engine.Output("nav"), "pattern": engine.Output("sum", shape[2:])}

    def process(self, start, block):
        return {"total": block.sum((1, 2), dtype=np.float64), "pattern": block.sum(0, dtype=np.float64)}


def cube(rx=5, ry=3, q=32):
    rng = np.random.default_rng(0)
    return rng.poisson(5.0, (rx, ry, q, q)).astype(np.uint16)


@pytest.mark.parametrize("batch_size", [1, 2, 4, 64])
def test_nav_and_sum_outputs_merge_in_scan_order(batch_size):
    data = cube()
    out = engine.run(TotalAndSum(), data, Options(batch_size=batch_size, progress=False))
    np.testing.assert_array_equal(out["total"], data.sum((2, 3)))
    np.testing.assert_array_equal(out["pattern"], data.sum((0, 1)))


def test_into_buffer_is_filled_and_unknown_outputs_refused():
    data = cube()
    buf = np.zeros(data.shape[:2])
    out = engine.run(TotalAndSum(), data, Options(progress=False), into={"total": buf})
    assert out["total"] is buf
    np.testing.assert_array_equal(buf, data.sum((2, 3)))
    with pytest.raises(ValueError, match="no outputs"):
        engine.run(TotalAndSum(), data, Options(progress=False), into={"nope": buf})


@pytest.mark.slow
def test_dask_executor_equals_local():
    distributed = pytest.importorskip("distributed")
    data = cube(rx=7, ry=5)
    local = engine.run(TotalAndSum(), data, Options(batch_size=4, progress=False))
    with distributed.Client(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None) as client:
        remote = engine.run(TotalAndSum(), data, Options(batch_size=4, progress=False, client=client))
    for k in local:
        np.testing.assert_array_equal(local[k], remote[k])


@pytest.mark.parametrize("bad", [0, -1, 1.5, "8", None, True])
def test_batch_size_refused(bad):
    with pytest.raises(InputError, match="batch_size"):
        Options(batch_size=bad)


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "meta", ""])
def test_device_refused(bad):
    with pytest.raises(InputError, match="device"):
        Options(device=bad)
