"""The prenet command: run end to end on a file, atomic output, clear errors."""

from pathlib import Path

import numpy as np
import py4DSTEM
import pytest
import torch

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
    origin = back.tree("prenet_origin")
    assert origin.data.shape == (len(origin.slicelabels), 3, 4) and "sigma" in origin.slicelabels
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


@pytest.mark.skipif(not REALDATA.is_dir(), reason="needs the measured example files (a Merlin .mib and a NanoMegas "
                    ".blo), which are not distributed with the package")
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


def one_clear_line(err):
    """A user error is one line on stderr, never a traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_output_that_is_the_input_is_refused(infile, untrained, capsys, monkeypatch):
    before = infile.read_bytes()
    link = infile.parent / "link.h5"
    link.symlink_to(infile)
    monkeypatch.chdir(infile.parent)
    for out in (str(infile), "in.h5", "./sub/../in.h5", str(link)):
        assert main(["run", str(infile), "-o", out, "--overwrite", "--quiet", "--device", "cpu",
                     *models(untrained)]) == 2
        assert "is the input file" in one_clear_line(capsys.readouterr().err)
    assert infile.read_bytes() == before


def test_output_folder_is_refused_before_the_run(infile, untrained, capsys, monkeypatch):
    from py4dstem_prenet import stream

    monkeypatch.setattr(stream, "run_chain", lambda *a, **k: pytest.fail("the run started"))
    assert main(["run", str(infile), "-o", str(infile.parent), "--overwrite", "--quiet", "--device", "cpu",
                 *models(untrained)]) == 2
    assert "is a folder" in one_clear_line(capsys.readouterr().err)


@pytest.mark.parametrize("device", ["gpu", "meta", "cuda:x"])
def test_unknown_device_is_one_clear_line(infile, tmp_path, untrained, capsys, device):
    assert main(["run", str(infile), "-o", str(tmp_path / "o.h5"), "--quiet", "--device", device,
                 *models(untrained)]) == 2
    assert "device must be 'auto', 'cpu', 'cuda' or 'cuda:N'" in one_clear_line(capsys.readouterr().err)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_one_clear_line_and_demo_leaves_no_folder(infile, tmp_path, untrained, capsys):
    assert main(["run", str(infile), "-o", str(tmp_path / "o.h5"), "--quiet", "--device", "cuda",
                 *models(untrained)]) == 2
    assert "sees no CUDA GPU" in one_clear_line(capsys.readouterr().err)
    folder = tmp_path / "demo"
    assert main(["demo", "-o", str(folder), "--device", "cuda", "--quiet"]) == 2
    assert "sees no CUDA GPU" in one_clear_line(capsys.readouterr().err)
    assert not folder.exists()


def test_bad_batch_size_is_one_clear_line(infile, tmp_path, untrained, capsys):
    assert main(["run", str(infile), "-o", str(tmp_path / "o.h5"), "--quiet", "--device", "cpu",
                 "--batch-size", "0", *models(untrained)]) == 2
    assert "batch_size must be a positive integer" in one_clear_line(capsys.readouterr().err)


def test_fit_too_big_for_the_scan_is_one_clear_line(infile, tmp_path, untrained, capsys):
    assert main(["run", str(infile), "-o", str(tmp_path / "o.h5"), "--quiet", "--device", "cpu",
                 "--fit", "bezier_two", "--robust", *models(untrained)]) == 2
    assert "needs a scan of at least 3 x 3" in one_clear_line(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.h5"]


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:9", "nothing-there"])
def test_scheduler_pointing_at_nothing_is_one_clear_line(infile, tmp_path, untrained, capsys, monkeypatch,
                                                         address):
    pytest.importorskip("distributed")
    from py4dstem_prenet import cli

    monkeypatch.setattr(cli, "SCHEDULER_TIMEOUT_S", 2)
    assert main(["run", str(infile), "-o", str(tmp_path / "o.h5"), "--quiet", "--device", "cpu",
                 "--scheduler", address, *models(untrained)]) == 2
    assert "Dask scheduler" in one_clear_line(capsys.readouterr().err)


@pytest.fixture
def processed(infile, tmp_path, untrained):
    out = tmp_path / "out.h5"
    assert main(["run", str(infile), "-o", str(out), "--quiet", "--device", "cpu", *models(untrained)]) == 0
    return out


def test_report_honours_the_suffix_and_refuses_to_overwrite(processed, tmp_path, capsys):
    magic = {".png": b"\x89PNG", ".pdf": b"%PDF", ".svg": b"<?xml"}
    for suffix, head in magic.items():
        figure = tmp_path / f"report{suffix}"
        assert main(["report", str(processed), "-o", str(figure), "--overwrite"]) == 0
        assert figure.read_bytes().startswith(head)
        assert "data:image/png;base64" in figure.with_suffix(".html").read_text()
    figure = tmp_path / "report.pdf"
    stamp = figure.stat().st_mtime_ns
    assert main(["report", str(processed), "-o", str(figure)]) == 2
    assert "exists; pass --overwrite" in one_clear_line(capsys.readouterr().err)
    assert figure.stat().st_mtime_ns == stamp
    assert main(["report", str(processed), "-o", str(tmp_path / "report.jpg")]) == 2
    assert ".png, .pdf, .svg" in one_clear_line(capsys.readouterr().err)
    assert main(["report", str(processed), "-o", str(processed), "--overwrite"]) == 2
    assert "suffixes" in one_clear_line(capsys.readouterr().err)
