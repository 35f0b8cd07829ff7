"""Trained weights: the manifest, checksum verification, safe loading and a download cache.

``weights_manifest.json`` (shipped inside the package) lists every model::

    {"schema": 1,
     "defaults": {"denoise": "denoise-compact", "center": "center-compact", "ellipse": "ellipse-compact"},
     "models": {"center-compact": {"task": "center", "file": "weights/center-compact.safetensors",
                                   "sha256": "...", "size": 123, "architecture": {...},
                                   "input": {...}, "recipe": {...}, "metrics": {...}, "url": null}}}

A model's ``file`` is relative to the package directory. A model with a ``url`` and no shipped file is
downloaded once into the user cache (``$PY4DSTEM_PRENET_CACHE`` or ``~/.cache/py4dstem_prenet``).
Every file is checked against its ``size`` and ``sha256`` before it is read, and read with
``safetensors`` (tensors only: a weights file can never run code).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import urllib.request
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .models import build_model

PACKAGE_DIR = Path(__file__).resolve().parent
MANIFEST_PATH = PACKAGE_DIR / "weights_manifest.json"
TASKS = ("denoise", "center", "ellipse")


class WeightsError(RuntimeError):
    """A weights file is missing, corrupt, tampered with, or does not match its manifest entry."""


@dataclass(frozen=True)
class ModelEntry:
    """One manifest entry (see module docstring); ``name`` is its key."""

    name: str
    task: str
    architecture: dict[str, Any]
    sha256: str
    size: int
    file: str | None = None
    url: str | None = None
    input: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    postprocess: dict[str, Any] = field(default_factory=dict)


def read_manifest(path: Path | None = None) -> dict[str, Any]:
    """The parsed manifest; a clear :class:`WeightsError` if it is missing or not valid JSON."""
    path = path or MANIFEST_PATH
    try:
        manifest = json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise WeightsError(f"weights manifest {path} is missing; reinstall py4dstem-prenet") from exc
    except json.JSONDecodeError as exc:
        raise WeightsError(f"weights manifest {path} is not valid JSON ({exc}); reinstall py4dstem-prenet") from exc
    if not isinstance(manifest.get("models"), dict):
        raise WeightsError(f"weights manifest {path} has no 'models' table")
    return manifest


def get_entry(task: str, model: str = "default", manifest_path: Path | None = None) -> ModelEntry:
    """The manifest entry for ``model`` (a name, or ``"default"`` for the task's shipped default)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    manifest = read_manifest(manifest_path)
    if model == "default":
        model = manifest.get("defaults", {}).get(task)
        if model is None:
            raise WeightsError(
                f"no trained weights for the {task!r} network are shipped in this version of py4dstem-prenet; "
                f"train them with `prenet train {task}` and pass model=<path to the .safetensors file>"
            )
    if model not in manifest["models"]:
        known = sorted(k for k, v in manifest["models"].items() if v.get("task") == task)
        raise WeightsError(f"unknown {task} model {model!r}; known: {known}")
    raw = dict(manifest["models"][model])
    if raw.get("task") != task:
        raise WeightsError(f"model {model!r} is a {raw.get('task')!r} network, not a {task!r} network")
    fields = set(ModelEntry.__dataclass_fields__)
    return ModelEntry(name=model, **{k: v for k, v in raw.items() if k in fields and k != "name"})


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(path: Path, sha256: str, size: int | None = None) -> None:
    """Raise :class:`WeightsError` unless ``path`` exists with the given size and SHA-256."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} is missing; reinstall py4dstem-prenet or clear the cache")
    if size is not None and path.stat().st_size != size:
        raise WeightsError(
            f"weights file {path} has {path.stat().st_size} bytes, the manifest says {size}: the file is "
            "truncated or replaced; reinstall py4dstem-prenet (or delete it from the cache to re-download)"
        )
    got = sha256_of(path)
    if got != sha256:
        raise WeightsError(
            f"weights file {path} fails its checksum (sha256 {got[:16]}..., expected {sha256[:16]}...): "
            "it was modified or corrupted and will not be loaded; reinstall py4dstem-prenet"
        )


def cache_dir() -> Path:
    """Where URL-only models are stored: ``$PY4DSTEM_PRENET_CACHE`` or ``~/.cache/py4dstem_prenet``."""
    return Path(os.environ.get("PY4DSTEM_PRENET_CACHE", Path.home() / ".cache" / "py4dstem_prenet"))


def _download(url: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:  # noqa: S310
            while block := resp.read(1 << 20):
                out.write(block)
        os.replace(tmp, dest)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise WeightsError(f"could not download weights from {url}: {exc}") from exc


def resolve_file(entry: ModelEntry) -> Path:
    """Path of the verified weights file of ``entry``, downloading it once if it is URL-only."""
    if entry.file:
        path = MANIFEST_PATH.parent / entry.file
    elif entry.url:
        path = cache_dir() / f"{entry.name}-{entry.sha256[:12]}.safetensors"
        if not path.is_file():
            _download(entry.url, path)
    else:
        raise WeightsError(f"manifest entry {entry.name!r} names neither a file nor a url")
    verify(path, entry.sha256, entry.size)
    return path


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises several types for malformed headers
        raise WeightsError(f"weights file {path} is not a valid safetensors file ({exc})") from exc


@dataclass
class LoadedModel:
    """A network in eval mode with its manifest entry (``entry.name``, ``entry.sha256`` for provenance)."""

    module: nn.Module
    entry: ModelEntry


def _is_file(model: str) -> bool:
    """Whether ``model`` names a weights file (rather than a manifest entry)."""
    return model.endswith(".safetensors") or os.sep in model


@lru_cache(maxsize=16)
def _load_cached(task: str, model: str, mtime: int) -> LoadedModel:
    if _is_file(model):
        return load_user_weights(task, Path(model))
    entry = get_entry(task, model)
    return _build(entry, resolve_file(entry))


def _build(entry: ModelEntry, path: Path) -> LoadedModel:
    """The network of ``entry`` with the tensors of ``path``, in eval mode."""
    net = build_model(entry.architecture)
    try:
        net.load_state_dict(_load_state(path), strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"weights file {path} does not fit its architecture: {exc}") from exc
    return LoadedModel(net.eval(), entry)


def read_user_entry(path: Path) -> dict[str, Any]:
    """The manifest entry stored in the metadata of a ``.safetensors`` file written by ``prenet train``."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        entry = json.loads(meta["entry"])
    except KeyError as exc:
        raise WeightsError(f"weights file {path} has no py4dstem-prenet entry; was it made by `prenet train`?") from exc
    except Exception as exc:
        raise WeightsError(f"weights file {path} is not a valid safetensors file ({exc})") from exc
    return entry


def load_user_weights(task: str, path: Path) -> LoadedModel:
    """Load a ``.safetensors`` file written by ``prenet train`` (its metadata holds the entry).

    There is no manifest checksum to check such a file against: the user vouches for it. Its SHA-256
    is recorded for provenance.
    """
    raw = read_user_entry(path)
    if raw.get("task") != task:
        raise WeightsError(f"weights file {path} holds a {raw.get('task')!r} network, not a {task!r} network")
    raw.update(name=str(path), sha256=sha256_of(path), size=Path(path).stat().st_size)
    return _build(ModelEntry(**{k: v for k, v in raw.items() if k in ModelEntry.__dataclass_fields__}), Path(path))


def load_model(task: str, model: str = "default") -> LoadedModel:
    """The network for ``task`` ("denoise", "center", "ellipse"), verified and in eval mode.

    ``model`` is a manifest name, ``"default"``, or the path of a ``.safetensors`` file written by
    ``prenet train``. Loaded networks are cached; a changed manifest invalidates the cache.
    """
    source = Path(model) if _is_file(str(model)) else MANIFEST_PATH
    mtime = source.stat().st_mtime_ns if source.exists() else 0
    return _load_cached(task, str(model), mtime)


def install_weights(path: Path, name: str, default: bool = False) -> dict:
    """Ship a ``prenet train`` weights file: copy it into the package's ``weights/`` folder and write its
    manifest entry (file, sha256, size, architecture, input, recipe, metrics); optionally make it the
    default of its task. The manifest is replaced atomically."""
    import shutil

    loaded = read_user_entry(Path(path))
    dest = MANIFEST_PATH.parent / "weights" / f"{name}.safetensors"
    dest.parent.mkdir(exist_ok=True)
    if Path(path).resolve() != dest.resolve():
        shutil.copyfile(path, dest)
    entry = {"task": loaded["task"], "file": f"weights/{dest.name}", "sha256": sha256_of(dest),
             "size": dest.stat().st_size, "url": None, "architecture": loaded["architecture"],
             "input": loaded["input"], "recipe": loaded["recipe"], "metrics": loaded["metrics"]}
    manifest = read_manifest()
    manifest["models"][name] = entry
    if default:
        manifest.setdefault("defaults", {})[loaded["task"]] = name
    _write_json_atomic(MANIFEST_PATH, manifest)
    return entry


def update_metrics(name: str, metrics: dict) -> None:
    """Record evaluation ``metrics`` in model ``name``'s manifest entry (atomic rewrite)."""
    manifest = read_manifest()
    if name not in manifest["models"]:
        raise WeightsError(f"unknown model {name!r}")
    manifest["models"][name].setdefault("metrics", {}).update(metrics)
    _write_json_atomic(MANIFEST_PATH, manifest)


def _write_json_atomic(path: Path, obj: dict) -> None:
    path = Path(path).resolve()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def write_weights(path: Path, state_dict: dict[str, torch.Tensor], entry: dict[str, Any]) -> Path:
    """Write a network's weights with its manifest ``entry`` (task, architecture, input, recipe, metrics)
    in the safetensors metadata, atomically; returns ``path``."""
    tmp = Path(path).with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(tmp), metadata={"entry": json.dumps(entry)})
    os.replace(tmp, path)
    return Path(path)
