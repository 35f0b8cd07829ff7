"""Training: a tiny real run (abTEM library of a few 64x64 patterns), resumable, weights loadable."""

import json

import pytest
import torch
from safetensors import safe_open

from py4dstem_prenet.evaluate.harness import evaluate_all
from py4dstem_prenet.simulate.library import generate_library
from py4dstem_prenet.train import recipes
from py4dstem_prenet.train.data import TrainingData, split_of
from py4dstem_prenet.train.loop import make_batch, train
from py4dstem_prenet.weights import load_model

TRAIN, VAL, TEST = "Al2O3_corundum", "ZnAl2O4_spinel", "FeAl_B2"


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    assert split_of(TRAIN) == "train" and split_of(VAL) == "val" and split_of(TEST) == "test"
    path = tmp_path_factory.mktemp("lib") / "tiny.h5"
    generate_library(path, 8, seed=3, detector=64, workers=1, structures=[TRAIN, VAL, TEST], progress=False)
    return str(path)


def test_batches_are_pure_functions_of_seed_and_step(library):
    data = TrainingData(library, "train")
    for task in ("denoise", "center", "ellipse"):
        a, b = make_batch(task, data, 0, 5, 4), make_batch(task, data, 0, 5, 4)
        assert torch.equal(a.x, b.x) and torch.equal(a.target, b.target)
        assert not torch.equal(a.x, make_batch(task, data, 0, 6, 4).x)
    assert make_batch("denoise", data, 0, 0, 4).x.shape[-1] == recipes.INPUTS["denoise"]["train_crop"]
    assert make_batch("denoise", data, 0, 0, 4, "compact-neighbours").x.shape[1] == 6


@pytest.mark.parametrize("task", ["center", "ellipse", "denoise"])
def test_train_resume_and_load(library, tmp_path, monkeypatch, task):
    small = {**recipes.TRAINING[task]["compact"], "val_every": 2, "val_batches": 1, "batch": 2}
    monkeypatch.setitem(recipes.TRAINING[task], "compact", small)
    out = tmp_path / task
    first = train(task, library, out, steps=2, progress=False, checkpoint_every=1, until=1)
    with safe_open(str(first), framework="pt") as f:
        assert json.loads(f.metadata()["entry"])["recipe"]["steps_run"] == 1  # a slice, weights written
    train(task, library, out, steps=2, progress=False, checkpoint_every=1)
    # resuming the same recipe continues from the checkpoint (steps=2 already done -> nothing to do)
    path = train(task, library, out, steps=2, progress=False, checkpoint_every=1)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [2]
    with safe_open(str(path), framework="pt") as f:
        entry = json.loads(f.metadata()["entry"])
    assert entry["task"] == task and entry["recipe"]["steps_run"] == 2
    loaded = load_model(task, str(path))
    assert not loaded.module.training
    with pytest.raises(ValueError, match="different recipe"):
        train(task, library, out, steps=3, progress=False)


def test_evaluation_tables(library):
    """The harness runs end to end (shipped weights, quick sizes) and reports every method."""
    tables = evaluate_all(library, device="cpu", quick=True)
    centre, scans, ellipse, denoise = (t.text() for t in tables)
    for method in ("ours", "com", "get_origin", "get_origin_friedel"):
        assert method in centre and method in scans
    assert "ours without scan context" in scans
    assert "fit_ellipse_1D" in ellipse and "low-rank (oracle)" in denoise
    rows = [r for r in tables[3].rows if r[2] == "gaussian (oracle)"]
    assert all(r[3] <= n[3] for r, n in zip(rows, [r for r in tables[3].rows if r[2] == "noisy"], strict=True))
    assert {r[0] for r in tables[0].rows} >= {"dose", "detector", "bit depth", "read noise", "beam stop",
                                              "thickness", "tilt", "convergence", "detector size"}
    assert all(r[8] > 0 for r in tables[0].rows)  # the Cramer-Rao bound is printed beside the errors
    record = tables[0].records[0]  # every sample traceable: truth, dose and every detector parameter
    assert {"library_row", "qx0", "dose", "crb_px", "ours (qx0, qy0)"} <= set(record)
    assert "bit_depth" in record["detector"] and tables[1].records
