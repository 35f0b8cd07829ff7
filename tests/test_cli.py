"""The prenet command: run end to end on a file, atomic output, clear errors."""

from pathlib import Path

import numpy as np
import py4DSTEM
import pytest

from py4dstem_prenet.cli import main


def models(untrained):
    return [f"--{t}-model={untrained[t]}" for t in ("denoise", "center", "ellipse")]


@pytest.fixture
def infile(tmp_path, cube):
    path = tmp_path / "in.h5"
    py4DSTEM.save(str(path), cube)
    return path


def test_run_writes_emd_and_refuses_overwrite(infile, tmp_path, untrained, capsys):
    out = tmp_path / "out.h5"
    assert main(["run", str(infile), "-o", str(out), "--quiet", "--device", "cpu", *models(untrained)]) == 0
    back = py4DSTEM.read(str(out))
    assert back.data.shape == (3, 4, 64, 64)
    assert back.tree("prenet_origin").data.shape == (3, 3, 4)
    assert main(["run", str(infile), "-o", str(out), "--quiet", *models(untrained)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main(["run", str(infile), "-o", str(out), "--quiet", "--overwrite", "--device", "cpu",
                 *models(untrained)]) == 0


def test_failed_run_leaves_no_output(tmp_path, untrained, capsys):
    data = np.random.default_rng(0).random((2, 2, 64, 64)).astype(np.float32)
    data[1, 1, 3, 3] = np.nan
    src = tmp_path / "nan.h5"
    py4DSTEM.save(str(src), py4DSTEM.DataCube(data=data))
    out = tmp_path / "out.h5"
    assert main(["run", str(src), "-o", str(out), "--quiet", "--device", "cpu", *models(untrained)]) == 2
    assert "NaN/inf" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [src]  # no output, no temporary file


def test_unreadable_input_and_unwritable_output(tmp_path, infile, untrained, capsys):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all")
    assert main(["run", str(junk), "-o", str(tmp_path / "o.h5"), *models(untrained)]) == 2
    assert "could not read" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "missing.h5"), "-o", str(tmp_path / "o.h5")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["run", str(infile), "-o", str(tmp_path / "no" / "such" / "dir.h5")]) == 2
    assert "output folder" in capsys.readouterr().err


REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"


@pytest.mark.skipif(not REALDATA.is_dir(), reason="shared/realdata is not beside this checkout")
@pytest.mark.parametrize("name", ["merlin_4x2/001_4x2_6bit.mib", "sped_blockfile_3x2/test1.blo"])
def test_run_reads_detector_formats_py4dstem_cannot(tmp_path, name):
    """Measured Merlin (.mib, 6-bit, saturated beam at the edge) and NanoMegas (.blo) files: py4DSTEM's
    importer fails on both; RosettaSciIO reads them and the chain runs with the shipped weights."""
    out = tmp_path / "out.h5"
    assert main(["run", str(REALDATA / name), "-o", str(out), "--quiet", "--device", "cpu"]) == 0
    back = py4DSTEM.read(str(out))
    assert back.data.ndim == 4 and np.all(np.isfinite(back.data))
    origin = back.tree("prenet_origin").data
    assert np.all((origin[:2] >= 0) & (origin[:2] < back.data.shape[2]))
