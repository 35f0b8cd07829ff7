"""Streaming files: the result equals the in-memory chain, HDF5 inputs are found, memory does not grow with
the cube, an interrupted run leaves nothing, and a Dask cluster gives the same numbers."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import py4DSTEM
import pytest
import torch
from conftest import disk_cube

from py4dstem_prenet import atomic, pipeline, stream
from py4dstem_prenet.stream import open_cube, run_file
from py4dstem_prenet.validation import InputError


def models(untrained):
    return {"denoise_model": untrained["denoise"], "center_model": untrained["center"],
            "ellipse_model": untrained["ellipse"]}


def test_run_file_equals_in_memory_chain(tmp_path, cube, untrained):
    src, out = tmp_path / "in.h5", tmp_path / "out.h5"
    py4DSTEM.save(str(src), cube)
    _, measured = run_file(src, out, device="cpu", progress=False, **models(untrained))
    back = py4DSTEM.read(str(out))
    ref = cube.prenet_preprocess(device="cpu", progress=False, **models(untrained))
    np.testing.assert_array_equal(back.data, ref.data)
    assert back.calibration.get_Q_pixel_size() == 0.05 and back.calibration.get_Q_pixel_units() == "A^-1"
    assert back.calibration.get_origin() == (32.0, 32.0)
    np.testing.assert_array_equal(back.tree("prenet_origin").data, ref.tree("prenet_origin").data)
    np.testing.assert_array_equal(back.tree("prenet_ellipse").data, ref.tree("prenet_ellipse").data)
    np.testing.assert_array_equal(measured.calibration.get_origin_meas()[0], cube.calibration.get_origin_meas()[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.h5", "out.h5"]


def test_open_cube_finds_the_cube_in_plain_hdf5(tmp_path):
    data = disk_cube(2, 3)[0]
    path = tmp_path / "detector.h5"
    with h5py.File(path, "w") as f:
        f["entry/data/frames"] = data
        f["entry/other"] = np.zeros((4, 4))
    cube = open_cube(path)
    assert isinstance(cube.data, h5py.Dataset) and cube.data.shape == data.shape
    cube.data.file.close()
    with h5py.File(path, "a") as f:
        f["entry/second"] = data
    with pytest.raises(InputError, match="2 candidate cubes"):
        open_cube(path)
    assert open_cube(path, dataset="entry/second").data.name == "/entry/second"
    with pytest.raises(InputError, match="no dataset 'nope'"):
        open_cube(path, dataset="nope")
    with pytest.raises(InputError, match="2D"):
        open_cube(path, dataset="entry/other")


def test_interrupted_run_leaves_no_output_and_reruns_cleanly(tmp_path, cube, untrained, monkeypatch):
    src, out = tmp_path / "in.h5", tmp_path / "out.h5"
    py4DSTEM.save(str(src), cube)
    real = pipeline.TransformStep.process

    def interrupted(self, start, block):
        if start > 0:
            raise KeyboardInterrupt
        return real(self, start, block)

    monkeypatch.setattr(pipeline.TransformStep, "process", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_file(src, out, device="cpu", progress=False, batch_size=4, **models(untrained))
    assert [p.name for p in tmp_path.iterdir()] == ["in.h5"]
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / f".out.h5.{atomic.host()}.{int(gone.stdout)}.abc.part").write_bytes(b"left by a killed run")
    monkeypatch.setattr(pipeline.TransformStep, "process", real)
    run_file(src, out, device="cpu", progress=False, batch_size=4, **models(untrained))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.h5", "out.h5"]


def test_concurrent_runs_never_remove_each_others_live_temporary_file(tmp_path, cube, untrained):
    """Temporary files are named after the process that writes them; a run removes only those of dead
    processes of this host, never a live run's (nor one on another host of a shared disk)."""
    src, out = tmp_path / "in.h5", tmp_path / "out.h5"
    py4DSTEM.save(str(src), cube)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        mine = tmp_path / f".out.h5.{atomic.host()}.{live.pid}.k3j2.part"
        other_host = tmp_path / f".out.h5.elsewhere.{live.pid + 1}.x9.part"
        for p in (mine, other_host):
            p.write_bytes(b"a run in progress")
        with atomic.atomic_path(out) as tmp:
            assert tmp.name.startswith(f".out.h5.{atomic.host()}.{os.getpid()}.") and tmp.name.endswith(".part")
            assert mine.exists() and other_host.exists()
        out.unlink()
        run_file(src, out, device="cpu", progress=False, batch_size=4, **models(untrained))
        assert mine.read_bytes() == b"a run in progress" and other_host.exists()
    finally:
        live.kill()
        live.wait()


def test_second_run_to_finish_does_not_replace_the_first_without_overwrite(tmp_path, cube, untrained, monkeypatch):
    src, out = tmp_path / "in.h5", tmp_path / "out.h5"
    py4DSTEM.save(str(src), cube)
    real = pipeline.TransformStep.process

    def meanwhile(self, start, block):  # another run finishes while this one works
        if not out.exists():
            out.write_bytes(b"the other run's result")
        return real(self, start, block)

    monkeypatch.setattr(pipeline.TransformStep, "process", meanwhile)
    with pytest.raises(FileExistsError, match="written by another run"):
        run_file(src, out, device="cpu", progress=False, **models(untrained))
    assert out.read_bytes() == b"the other run's result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.h5", "out.h5"]


@pytest.mark.parametrize("spelling", ["same", "relative", "symlink", "hardlink"])
def test_output_that_is_the_input_is_refused(tmp_path, cube, untrained, monkeypatch, spelling):
    src = tmp_path / "in.h5"
    py4DSTEM.save(str(src), cube)
    before = src.read_bytes()
    monkeypatch.chdir(tmp_path)
    out = {"same": src, "relative": Path("sub/../in.h5"), "symlink": tmp_path / "link.h5",
           "hardlink": tmp_path / "hard.h5"}[spelling]
    (tmp_path / "sub").mkdir()
    if spelling == "symlink":
        out.symlink_to(src)
    if spelling == "hardlink":
        os.link(src, out)
    with pytest.raises(InputError, match="is the input file"):
        run_file(src, out, overwrite=True, device="cpu", progress=False, **models(untrained))
    assert src.read_bytes() == before


def test_output_folder_is_refused_before_the_run(tmp_path, cube, untrained, monkeypatch):
    src = tmp_path / "in.h5"
    py4DSTEM.save(str(src), cube)
    monkeypatch.setattr(stream, "run_chain", lambda *a, **k: pytest.fail("the run started"))
    with pytest.raises(InputError, match="is a folder"):
        run_file(src, tmp_path, overwrite=True, device="cpu", progress=False, **models(untrained))


PEAK_RSS = textwrap.dedent("""
    import json, resource, sys
    from py4dstem_prenet.stream import run_file
    run_file(sys.argv[1], sys.argv[2], denoise_model=None, center_model=sys.argv[3], ellipse_model=sys.argv[4],
             device="cpu", progress=False, batch_size=32)
    print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
""")


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_cube(tmp_path, untrained):
    """Peak RSS of `run_file` on a 16x larger cube (12 MB vs 200 MB of float32) grows by far less than
    the cube: memory is bounded by the batch, not the cube."""
    peaks = {}
    for rows in (8, 128):
        src = tmp_path / f"in{rows}.h5"
        with h5py.File(src, "w") as f:
            d = f.create_dataset("cube", (rows, 96, 64, 64), dtype="float32", chunks=(1, 96, 64, 64))
            block = disk_cube(1, 96, seed=rows)[0].astype(np.float32)
            for r in range(rows):
                d[r] = block[0]
        res = subprocess.run([sys.executable, "-c", PEAK_RSS, str(src), str(tmp_path / f"out{rows}.h5"),
                              untrained["center"], untrained["ellipse"]], capture_output=True, text=True, check=True)
        peaks[rows] = json.loads(res.stdout.strip().splitlines()[-1])
    cube_mb = 128 * 96 * 64 * 64 * 4 / 2**20
    assert peaks[128] - peaks[8] < 0.2 * cube_mb, (peaks, cube_mb)


@pytest.mark.slow
def test_dask_cluster_gives_the_single_process_result(tmp_path, cube, untrained):
    distributed = pytest.importorskip("distributed")
    src = tmp_path / "in.h5"
    py4DSTEM.save(str(src), cube)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each worker: float32 reductions then run in the same order
    try:
        ref = cube.prenet_preprocess(device="cpu", progress=False, batch_size=4, **models(untrained))
    finally:
        torch.set_num_threads(threads)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc, \
            distributed.Client(lc) as client:
        in_memory = py4DSTEM.DataCube(data=cube.data.copy()).prenet_preprocess(
            device="cpu", progress=False, batch_size=4, client=client, **models(untrained))
        run_file(src, tmp_path / "out.h5", device="cpu", progress=False, batch_size=4, client=client,
                 **models(untrained))
    np.testing.assert_array_equal(in_memory.data, ref.data)
    np.testing.assert_array_equal(py4DSTEM.read(str(tmp_path / "out.h5")).data, ref.data)
    np.testing.assert_array_equal(in_memory.tree("prenet_origin").data, ref.tree("prenet_origin").data)


def test_output_records_the_survey_of_the_input(tmp_path, untrained):
    data = disk_cube(4, 4, seed=3)[0]
    data[:, :, 50, 12] = 65535  # a hot pixel
    src, out = tmp_path / "in.h5", tmp_path / "out.h5"
    py4DSTEM.save(str(src), py4DSTEM.DataCube(data=data))
    run_file(src, out, device="cpu", progress=False, denoise_model=None, center_model=untrained["center"],
             ellipse_model=untrained["ellipse"])
    meta = py4DSTEM.read(str(out)).metadata["prenet_survey"]
    assert meta["n_patterns"] == 16 and meta["n_hot"] == 1 and meta["n_dead"] == 0
    assert np.asarray(meta["hot_pixels"]).tolist() == [[50, 12]]
