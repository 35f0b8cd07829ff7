"""Trained weights: the shipped manifest, the user's registry, checksum verification, safe loading.

``weights_manifest.json`` (shipped inside the package, read-only at run time) lists every model::

    {"schema": 1,
     "defaults": {"denoise": "denoise-compact", "center": "center-compact", "ellipse": "ellipse-compact"},
     "models": {"center-compact": {"task": "center", "file": "weights/center-compact.safetensors",
                                   "sha256": "...", "size": 123, "architecture": {...},
                                   "input": {...}, "postprocess": {...}, "recipe": {...},
                                   "metrics": {...}, "url": null}}}

``input`` holds the pre-processing conventions a network was trained with and ``postprocess`` the tuned
numbers of the stage that uses it (chosen on validation data with that network); inference and training
both read them from the entry. Models a user trains and installs (``prenet weights FILE --name N``) go
to the **user registry**, a manifest of the same form in :func:`registry_dir`, layered over the shipped
one (its ``defaults`` win; its names may not shadow shipped ones). A model's ``file`` is relative to the
folder of the manifest that lists it. A model with a ``url`` and no file is downloaded once into
:func:`cache_dir`. Every file is checked against its ``size`` and ``sha256`` before it is read, and read
with ``safetensors`` (tensors only: a weights file can never run code).

Loaded networks are cached per ``(task, model, device)``: a caller never moves a module another caller
holds, and a device that fails (or a useless one such as ``"meta"``) never affects the others.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import threading
import urllib.request
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .atomic import atomic_path, write_text_atomic
from .models import build_model
from .validation import check_device

PACKAGE_DIR = Path(__file__).resolve().parent
MANIFEST_PATH = PACKAGE_DIR / "weights_manifest.json"
REGISTRY_NAME = "registry.json"
TASKS = ("denoise", "center", "ellipse")


class WeightsError(RuntimeError):
    """A weights file is missing, corrupt, tampered with, or does not match its manifest entry."""


@dataclass(frozen=True)
class ModelEntry:
    """One manifest entry (see module docstring); ``name`` is its key, ``root`` the folder its ``file`` is
    relative to, ``source`` ``"shipped"``, ``"user"`` or ``"file"`` (a ``.safetensors`` path)."""

    name: str
    task: str
    architecture: dict[str, Any]
    sha256: str
    size: int
    file: str | None = None
    url: str | None = None
    input: dict[str, Any] = field(default_factory=dict)
    postprocess: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    root: str = str(PACKAGE_DIR)
    source: str = "shipped"


def registry_dir() -> Path:
    """The user registry's folder: ``$PY4DSTEM_PRENET_HOME``, else ``$XDG_DATA_HOME/py4dstem_prenet``,
    else ``~/.local/share/py4dstem_prenet``."""
    if os.environ.get("PY4DSTEM_PRENET_HOME"):
        return Path(os.environ["PY4DSTEM_PRENET_HOME"])
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "py4dstem_prenet"


def read_manifest(path: Path | None = None) -> dict[str, Any]:
    """The parsed manifest at ``path`` (default: the shipped one); a clear :class:`WeightsError` if it is
    missing or not valid JSON."""
    path = path or MANIFEST_PATH
    try:
        manifest = json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise WeightsError(f"weights manifest {path} is missing; reinstall py4dstem-prenet") from exc
    except json.JSONDecodeError as exc:
        raise WeightsError(f"weights manifest {path} is not valid JSON ({exc}); reinstall py4dstem-prenet "
                           "(or repair/delete it if it is your registry)") from exc
    if not isinstance(manifest.get("models"), dict):
        raise WeightsError(f"weights manifest {path} has no 'models' table")
    return manifest


def _read_registry() -> dict[str, Any]:
    path = registry_dir() / REGISTRY_NAME
    return read_manifest(path) if path.is_file() else {"schema": 1, "defaults": {}, "models": {}}


def catalogue() -> dict[str, Any]:
    """The shipped manifest with the user registry layered over it: ``{"defaults": ..., "models": ...}``,
    each model's raw entry plus ``root`` and ``source``."""
    shipped, user = read_manifest(), _read_registry()
    models = {k: {**v, "root": str(MANIFEST_PATH.parent), "source": "shipped"} for k, v in shipped["models"].items()}
    for k, v in user["models"].items():
        if k not in models:
            models[k] = {**v, "root": str(registry_dir()), "source": "user"}
    return {"defaults": {**shipped.get("defaults", {}), **user.get("defaults", {})}, "models": models}


def _entry(name: str, raw: dict[str, Any]) -> ModelEntry:
    fields = set(ModelEntry.__dataclass_fields__)
    return ModelEntry(name=name, **{k: v for k, v in raw.items() if k in fields and k != "name"})


def get_entry(task: str, model: str = "default") -> ModelEntry:
    """The entry for ``model`` (a name, or ``"default"`` for the task's default) of the catalogue."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    cat = catalogue()
    if model == "default":
        model = cat["defaults"].get(task)
        if model is None:
            raise WeightsError(
                f"no trained weights for the {task!r} network are shipped in this version of py4dstem-prenet; "
                f"train them with `prenet train {task}` and pass model=<path to the .safetensors file>"
            )
    if model not in cat["models"]:
        known = sorted(k for k, v in cat["models"].items() if v.get("task") == task)
        raise WeightsError(f"unknown {task} model {model!r}; known: {known} (py4dstem_prenet.list_models())")
    raw = cat["models"][model]
    if raw.get("task") != task:
        raise WeightsError(f"model {model!r} is a {raw.get('task')!r} network, not a {task!r} network")
    return _entry(model, raw)


def list_models(task: str | None = None) -> list[str]:
    """Names of the models available (shipped and in the user registry), for one task or all, sorted."""
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {TASKS} or None, got {task!r}")
    return sorted(k for k, v in catalogue()["models"].items() if task is None or v.get("task") == task)


def get_model(name: str, *, device: str | torch.device = "cpu") -> LoadedModel:
    """The verified network ``name`` (a catalogue name) on ``device``, in eval mode, with its entry
    (``.entry.input`` / ``.entry.postprocess`` hold its settings). The task is read from the entry."""
    raw = catalogue()["models"].get(name)
    if raw is None:
        raise WeightsError(f"unknown model {name!r}; known: {list_models()}")
    return load_model(raw["task"], name, device=device)


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
    try:
        with atomic_path(dest) as tmp, open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:  # noqa: S310
            while block := resp.read(1 << 20):
                out.write(block)
    except OSError as exc:
        raise WeightsError(f"could not download weights from {url}: {exc}") from exc


def resolve_file(entry: ModelEntry) -> Path:
    """Path of the verified weights file of ``entry``, downloading it once if it is URL-only."""
    if entry.file:
        path = Path(entry.root) / entry.file
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
    """A network in eval mode with its entry (``entry.name``, ``entry.sha256`` for provenance,
    ``entry.input`` / ``entry.postprocess`` for its settings). The module is shared with every other
    caller on the same device: use it, never move or modify it."""

    module: nn.Module
    entry: ModelEntry


def _is_file(model: str) -> bool:
    """Whether ``model`` names a weights file (rather than a catalogue entry)."""
    return model.endswith(".safetensors") or os.sep in model


_LOCK = threading.Lock()


@lru_cache(maxsize=16)
def _load_cpu(task: str, model: str, stamp: tuple) -> LoadedModel:
    if _is_file(model):
        return load_user_weights(task, Path(model))
    entry = get_entry(task, model)
    return _build(entry, resolve_file(entry))


@lru_cache(maxsize=16)
def _load_on(task: str, model: str, stamp: tuple, device: str) -> LoadedModel:
    cpu = _load_cpu(task, model, stamp)
    if device == "cpu":
        return cpu
    return LoadedModel(copy.deepcopy(cpu.module).to(torch.device(device)).eval(), cpu.entry)


def clear_cache() -> None:
    """Forget every loaded network (the next :func:`load_model` reads and verifies the files again)."""
    _load_cpu.cache_clear()
    _load_on.cache_clear()


def _build(entry: ModelEntry, path: Path) -> LoadedModel:
    """The network of ``entry`` with the tensors of ``path``, in eval mode, on the CPU."""
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
    raw.update(name=str(path), sha256=sha256_of(path), size=Path(path).stat().st_size, source="file")
    return _build(_entry(str(path), raw), Path(path))


def _stamp(model: str) -> tuple:
    """What invalidates a cached network: the modification times of its file or of both manifests."""
    sources = [Path(model)] if _is_file(model) else [MANIFEST_PATH, registry_dir() / REGISTRY_NAME]
    return tuple(p.stat().st_mtime_ns if p.exists() else 0 for p in sources)


def load_model(task: str, model: str = "default", *, device: str | torch.device = "cpu") -> LoadedModel:
    """The network for ``task`` ("denoise", "center", "ellipse") on ``device``, verified, in eval mode.

    ``model`` is a catalogue name (shipped or user registry), ``"default"``, or the path of a
    ``.safetensors`` file written by ``prenet train``. ``device``: ``"auto"``, ``"cpu"``, ``"cuda[:N]"``
    (:func:`validation.check_device`). Cached per (task, model, device), each device holding its own copy;
    a device that fails caches nothing; a changed manifest, registry or file invalidates the cache.
    Thread-safe.
    """
    name = check_device(device)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    with _LOCK:
        return _load_on(task, str(model), _stamp(str(model)), str(torch.device(name)))


def install_weights(path: Path, name: str, *, default: bool = False, manifest_path: Path | None = None) -> dict:
    """Register a ``prenet train`` weights file as model ``name``: copy it into the ``weights/`` folder
    beside the manifest and write its entry (file, sha256, size, architecture, input, postprocess,
    recipe, metrics); optionally make it the default of its task.

    The manifest is the user registry (:func:`registry_dir`) unless ``manifest_path`` names another one
    (a source checkout's ``py4dstem_prenet/weights_manifest.json``, to ship weights with the package).
    The installed package's manifest is never written. The manifest is replaced atomically."""
    target = Path(manifest_path) if manifest_path else registry_dir() / REGISTRY_NAME
    if manifest_path is None and name in read_manifest()["models"]:
        raise WeightsError(f"{name!r} is a shipped model; choose another name for your own weights")
    loaded = read_user_entry(Path(path))
    dest = target.parent / "weights" / f"{name}.safetensors"
    dest.parent.mkdir(parents=True, exist_ok=True)
    if Path(path).resolve() != dest.resolve():
        with atomic_path(dest) as tmp:
            shutil.copyfile(path, tmp)
    entry = {"task": loaded["task"], "file": f"weights/{dest.name}", "sha256": sha256_of(dest),
             "size": dest.stat().st_size, "url": None, "architecture": loaded["architecture"],
             "input": loaded["input"], "postprocess": loaded.get("postprocess", {}), "recipe": loaded["recipe"],
             "metrics": loaded["metrics"]}
    manifest = read_manifest(target) if target.is_file() else {"schema": 1, "defaults": {}, "models": {}}
    manifest["models"][name] = entry
    if default:
        manifest.setdefault("defaults", {})[loaded["task"]] = name
    _write_json_atomic(target, manifest)
    return entry


def update_metrics(name: str, metrics: dict, *, manifest_path: Path) -> None:
    """Record evaluation ``metrics`` in model ``name``'s entry of the manifest at ``manifest_path`` (a
    source checkout's manifest or the user registry; atomic rewrite)."""
    manifest = read_manifest(manifest_path)
    if name not in manifest["models"]:
        raise WeightsError(f"model {name!r} is not in {manifest_path}")
    manifest["models"][name].setdefault("metrics", {}).update(metrics)
    _write_json_atomic(manifest_path, manifest)


def _write_json_atomic(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(Path(path).resolve(), json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_weights(path: Path, state_dict: dict[str, torch.Tensor], entry: dict[str, Any]) -> Path:
    """Write a network's weights with its manifest ``entry`` (task, architecture, input, postprocess,
    recipe, metrics) in the safetensors metadata, atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in state_dict.items()}, str(tmp), metadata={"entry": json.dumps(entry)})
    return Path(path)
