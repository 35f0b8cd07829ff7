"""Weights: manifest lookup, checksum verification, safe loading, clear errors."""

import json
import shutil

import pytest
import torch

from py4dstem_prenet import weights
from py4dstem_prenet.weights import WeightsError


@pytest.fixture
def package(tmp_path, monkeypatch, untrained):
    """A throw-away package folder with a manifest that ships the untrained centre network."""
    (tmp_path / "weights").mkdir()
    shutil.copyfile(untrained["center"], tmp_path / "weights" / "c.safetensors")
    entry = weights.read_user_entry(untrained["center"])
    f = tmp_path / "weights" / "c.safetensors"
    entry.update(file="weights/c.safetensors", sha256=weights.sha256_of(f), size=f.stat().st_size)
    manifest = {"schema": 1, "defaults": {"center": "c"}, "models": {"c": entry}}
    (tmp_path / "weights_manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setattr(weights, "MANIFEST_PATH", tmp_path / "weights_manifest.json")
    weights.clear_cache()
    yield tmp_path
    weights.clear_cache()


def test_default_model_loads_verified(package):
    loaded = weights.load_model("center")
    assert loaded.entry.name == "c" and not loaded.module.training
    out = loaded.module(torch.zeros(1, 1, 32, 32))
    assert out.shape == (1, 1, 32, 32)


def test_tampered_file_is_refused(package):
    f = package / "weights" / "c.safetensors"
    raw = bytearray(f.read_bytes())
    raw[-10] ^= 0xFF  # same size, one byte flipped
    f.write_bytes(bytes(raw))
    with pytest.raises(WeightsError, match="checksum"):
        weights.load_model("center")


def test_truncated_file_is_refused(package):
    f = package / "weights" / "c.safetensors"
    f.write_bytes(f.read_bytes()[:1000])
    with pytest.raises(WeightsError, match="truncated"):
        weights.load_model("center")


def test_missing_default_says_no_trained_weights(package):
    with pytest.raises(WeightsError, match="no trained weights for the 'denoise' network"):
        weights.load_model("denoise")


def test_unknown_and_wrong_task(package):
    with pytest.raises(WeightsError, match="unknown center model"):
        weights.load_model("center", "nope")
    with pytest.raises(WeightsError, match="not a 'denoise' network"):
        weights.get_entry("denoise", "c")


def test_corrupt_manifest(package):
    (package / "weights_manifest.json").write_text("{not json")
    with pytest.raises(WeightsError, match="not valid JSON"):
        weights.read_manifest()


def test_user_file_garbage_and_wrong_task(tmp_path, untrained):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(WeightsError, match="not a valid safetensors"):
        weights.load_model("center", str(bad))
    with pytest.raises(WeightsError, match="not a 'center' network"):
        weights.load_model("center", untrained["denoise"])


def test_pickle_is_never_executed(tmp_path):
    """A torch pickle renamed .safetensors is rejected as invalid, not unpickled."""
    evil = tmp_path / "evil.safetensors"
    torch.save({"w": torch.zeros(1)}, evil)
    with pytest.raises(WeightsError):
        weights.load_model("center", str(evil))


def test_shipped_manifest_is_consistent():
    """Every model in the shipped manifest has its file, with the right checksum, and loads."""
    manifest = weights.read_manifest()
    for name, entry in manifest["models"].items():
        if entry.get("file"):
            weights.verify(weights.MANIFEST_PATH.parent / entry["file"], entry["sha256"], entry["size"])
            weights.load_model(entry["task"], name)
    for task, name in manifest.get("defaults", {}).items():
        assert manifest["models"][name]["task"] == task


def test_registry_is_layered_over_the_shipped_manifest(package, untrained):
    """User weights go to the registry (never the package); list/get find them; names may not shadow."""
    shipped_before = (package / "weights_manifest.json").read_text()
    weights.install_weights(untrained["denoise"], "my-denoise", default=True)
    assert (package / "weights_manifest.json").read_text() == shipped_before
    assert (weights.registry_dir() / "weights" / "my-denoise.safetensors").is_file()
    assert weights.list_models() == ["c", "my-denoise"]
    assert weights.list_models("denoise") == ["my-denoise"]
    loaded = weights.load_model("denoise")  # the registry's default for a task the package has none for
    assert loaded.entry.name == "my-denoise" and loaded.entry.source == "user"
    assert weights.get_model("c").entry.task == "center"
    with pytest.raises(WeightsError, match="shipped model"):
        weights.install_weights(untrained["center"], "c")
    with pytest.raises(WeightsError, match="unknown model"):
        weights.get_model("nope")


def test_models_are_cached_per_device(package):
    """A refused device (meta, a missing GPU) never reaches the CPU copy the other callers hold."""
    cpu = weights.load_model("center")
    for bad in ("meta", "cuda:7"):
        with pytest.raises(ValueError, match="device"):
            weights.load_model("center", device=bad)
    again = weights.load_model("center")
    assert again.module is cpu.module and next(again.module.parameters()).device.type == "cpu"
    assert torch.isfinite(again.module(torch.ones(1, 1, 32, 32))).all()


def test_update_metrics_writes_the_named_manifest_only(package, tmp_path):
    copy = tmp_path / "checkout_manifest.json"
    shutil.copyfile(package / "weights_manifest.json", copy)
    weights.update_metrics("c", {"mae": 0.1}, manifest_path=copy)
    assert json.loads(copy.read_text())["models"]["c"]["metrics"]["mae"] == 0.1
    assert "mae" not in weights.read_manifest()["models"]["c"].get("metrics", {})
