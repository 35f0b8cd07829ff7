"""Resumable HDF5 libraries of clean abTEM diffraction patterns (write: :func:`generate_library`, read:
:class:`PatternLibrary`).

Pattern ``i`` of a library depends only on ``(seed, i)`` and the library arguments: its structure, optics,
structure variant and simulation seed are drawn from ``np.random.default_rng([seed, i])``. A library is
therefore identical whatever the number of workers, the order of completion or the number of interruptions.

File layout (all datasets pre-sized to ``n_patterns``, contiguous, allocated when the file is created, so
later writes never touch HDF5 metadata and a killed run cannot corrupt the file)::

    /patterns        (n, Q, Q) float32   fraction of incident electrons per pixel, optical axis at (Q/2, Q/2)
    /done            (n,) bool           pattern i is complete (written after its data)
    /meta/<field>    (n, ...)            structure, category, structure_seed, seed, centre and every
                                         OpticsParams field (see :data:`META_FIELDS`)
    attrs            format, version, n_patterns, seed, detector, structures (JSON), category, phonons,
                     recipe (JSON of the abtem_sim.OpticsRanges drawn from)
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import os
import time
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import h5py
import numpy as np

from py4dstem_prenet.simulate import abtem_sim
from py4dstem_prenet.simulate import structures as structure_library

FORMAT = "py4dstem_prenet.pattern_library"
VERSION = 1
AMORPHOUS_BOX_A = 24.0  # side of the periodic amorphous models (Angstrom); built once per worker and variant
AMORPHOUS_VARIANTS = 4  # independent random amorphous models per structure
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                "NUMBA_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")
#: Per-pattern metadata: name -> (dtype, trailing shape).
META_FIELDS = {
    "structure": ("S64", ()), "category": ("S16", ()), "structure_seed": ("i8", ()), "seed": ("i8", ()),
    "centre": ("f8", (2,)), "energy_kv": ("f8", ()), "semiangle_mrad": ("f8", ()),
    "mrad_per_px": ("f8", ()), "thickness_A": ("f8", ()), "zone_axis": ("i4", (3,)),
    "tilt_mrad": ("f8", (2,)), "inplane_deg": ("f8", ()), "phonon_configs": ("i4", ()),
    "detector": ("i4", ()),
}


@lru_cache(maxsize=64)
def _build_structure(name: str, variant: int):
    """The ``ase.Atoms`` of structure ``name`` (amorphous: random model number ``variant``), cached."""
    spec = structure_library.get_structure(name)
    if spec.category != "amorphous":
        return spec.build(0)
    try:
        return spec.build(variant, box=AMORPHOUS_BOX_A)
    except TypeError:  # a build() without the box keyword
        return spec.build(variant)


def draw_pattern_params(seed: int, index: int, structures: Sequence[str], detector: int, phonons: bool,
                        overrides: dict | None = None, recipe: str | abtem_sim.OpticsRanges = "default"):
    """Structure name, category, structure variant, optics and simulation seed of pattern ``index``.

    Everything comes from ``np.random.default_rng([seed, index])`` (plus the structure's density when the
    thickness must be reduced to the atom budget, :func:`abtem_sim.fit_to_budget`). ``recipe``: the optics
    ranges (:class:`abtem_sim.OpticsRanges` or a name in :data:`abtem_sim.RECIPES`). ``overrides`` replaces
    OpticsParams fields after the draw (testing hook; the draws themselves are unchanged).
    """
    rng = np.random.default_rng([seed, index])
    name = structures[int(rng.integers(len(structures)))]
    category = structure_library.get_structure(name).category
    optics = abtem_sim.draw_optics(rng, detector, category, recipe)
    if not phonons:
        optics = dataclasses.replace(optics, phonon_configs=0)
    optics = dataclasses.replace(optics, **(overrides or {}))
    variant = int(rng.integers(AMORPHOUS_VARIANTS)) if category == "amorphous" else 0
    sim_seed = int(rng.integers(2**62))
    optics = abtem_sim.fit_to_budget(optics, _build_structure(name, variant))
    return name, category, variant, optics, sim_seed


def _simulate_one(task: tuple) -> tuple:
    """Worker: simulate pattern ``index``; returns ``(index, pattern, metadata dict)``."""
    index, seed, structures, detector, phonons, device, overrides, recipe = task
    name, category, variant, optics, sim_seed = draw_pattern_params(
        seed, index, structures, detector, phonons, overrides, recipe)
    atoms = _build_structure(name, variant)
    pattern = abtem_sim.simulate_pattern(atoms, optics, seed=sim_seed, device=device)
    meta = dict(dataclasses.asdict(optics), structure=name, category=category, structure_seed=variant,
                seed=sim_seed, centre=(detector / 2, detector / 2))
    return index, pattern, meta


def _init_worker() -> None:
    import sys

    for var in _THREAD_VARS:
        os.environ[var] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def _resolve_structures(structures: Sequence[str] | None, category: str | None) -> list[str]:
    mod = structure_library
    if structures is None:
        names = [s.name for s in mod.list_structures(category)]
    else:
        names = [mod.get_structure(n).name for n in structures]  # raises on unknown names
        if category is not None:
            names = [n for n in names if mod.get_structure(n).category == category]
    if not names:
        raise ValueError(f"no structures selected (structures={structures!r}, category={category!r})")
    if max(len(n.encode()) for n in names) > 64:
        raise ValueError("structure names must be at most 64 bytes (stored as fixed-length strings)")
    return names


def _create(path: Path, attrs: dict, n: int, q: int) -> None:
    """Create a library file with every dataset allocated up front (contiguous, no fill)."""
    tmp = path.with_name(path.name + ".tmp")

    def dset(group, name, shape, dtype):
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
        dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
        group.create_dataset(name, shape=shape, dtype=dtype, dcpl=dcpl)

    with h5py.File(tmp, "w") as f:
        f.attrs.update(attrs)
        dset(f, "patterns", (n, q, q), "f4")
        dset(f, "done", (n,), bool)
        f["done"][...] = False
        meta = f.create_group("meta")
        for name, (dtype, shape) in META_FIELDS.items():
            dset(meta, name, (n, *shape), dtype)
    os.replace(tmp, path)  # a half-created file is never left under the final name


def _open(path: Path, mode: str) -> h5py.File:
    """Open ``path`` with a clear error when it is locked, corrupt or not HDF5.

    Readers skip HDF5's file lock: a library's HDF5 metadata never changes after creation, so it can be read
    safely while :func:`generate_library` is still filling it (only the patterns done by then are seen).
    """
    try:
        return h5py.File(path, mode, locking=mode != "r")
    except BlockingIOError as err:
        raise RuntimeError(f"{path} is locked: is it being written by another process? ({err})") from err
    except OSError as err:
        if "already open" in str(err):
            raise RuntimeError(f"{path} is already open in this process (close its PatternLibrary first): "
                               f"{err}") from err
        raise ValueError(f"{path} is not a readable HDF5 pattern library (corrupt or truncated?): "
                         f"{err}") from err


def _recipe_json(recipe: str | abtem_sim.OpticsRanges) -> str:
    """The full optics ranges of ``recipe`` as canonical JSON (the library attr ``recipe``)."""
    return json.dumps(dataclasses.asdict(abtem_sim.get_recipe(recipe)), sort_keys=True)


def _file_attrs(f: h5py.File) -> dict:
    """The file's attrs; a library written before recipes were recorded used the "default" recipe."""
    attrs = {k: _attr(v) for k, v in f.attrs.items()}
    attrs.setdefault("recipe", _recipe_json("default"))
    return attrs


def _check_attrs(path: Path, f: h5py.File, attrs: dict) -> None:
    if f.attrs.get("format") != FORMAT:
        raise ValueError(f"{path} exists but is not a py4dstem_prenet pattern library")
    have = _file_attrs(f)
    keys = (set(have) | set(attrs)) - {"format", "version"}
    diff = {k: (have.get(k), attrs.get(k)) for k in sorted(keys) if have.get(k) != attrs.get(k)}
    if diff:
        lines = ", ".join(f"{k}: file has {a!r}, requested {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"{path} was generated with different arguments ({lines}); use another path or the "
                         "original arguments to resume")


def _attr(value):
    if isinstance(value, bytes):
        value = value.decode()
    return value.item() if isinstance(value, np.generic) else value


def generate_library(path: str | os.PathLike, n_patterns: int, seed: int, detector: int = 128,
                     workers: int = 2, structures: list[str] | None = None, category: str | None = None,
                     phonons: bool = False, progress: bool = True, device: str = "cpu", *,
                     recipe: str | abtem_sim.OpticsRanges = "default", _max_new: int | None = None,
                     _overrides: dict | None = None) -> dict:
    """Simulate ``n_patterns`` clean ``detector x detector`` patterns into the HDF5 file ``path``, resumably.

    ``structures``: names to draw from (default: all of ``list_structures(category)``; pass a held-out split
    by name); each pattern draws one uniformly. ``phonons``: allow frozen-phonon patterns (as drawn by
    :func:`abtem_sim.draw_optics`), else all are static. ``recipe``: the optics ranges drawn from
    (:class:`abtem_sim.OpticsRanges` or a name in :data:`abtem_sim.RECIPES`), recorded in full as the JSON
    attr ``recipe``. ``workers``: processes (1 = in this process).
    Rerunning with the same path and arguments computes only the missing patterns; different arguments raise
    ``ValueError``. Returns stats: ``n_patterns``, ``n_done``, ``n_new``, ``seconds``,
    ``patterns_per_minute``, ``seconds_per_pattern`` (wall clock, all workers together, startup included).
    """
    path = Path(path)
    if n_patterns < 1 or detector % 2 or detector < 16:
        raise ValueError(f"need n_patterns >= 1 and an even detector >= 16, got {n_patterns}, {detector}")
    names = _resolve_structures(structures, category)
    attrs = {"format": FORMAT, "version": VERSION, "n_patterns": int(n_patterns), "seed": int(seed),
             "detector": int(detector), "structures": json.dumps(names), "category": str(category),
             "phonons": bool(phonons), "recipe": _recipe_json(recipe)}
    if _overrides:
        attrs["overrides"] = json.dumps(_overrides, sort_keys=True)
    if not path.exists():
        _create(path, attrs, n_patterns, detector)
    t0 = time.perf_counter()
    f = _open(path, "r+")
    with f:
        _check_attrs(path, f, attrs)
        done = f["done"]
        todo = np.flatnonzero(~done[...])
        n_before = n_patterns - len(todo)
        if _max_new is not None:
            todo = todo[:_max_new]
        ranges = abtem_sim.get_recipe(recipe)
        tasks = [(int(i), int(seed), tuple(names), int(detector), bool(phonons), device, _overrides, ranges)
                 for i in todo]
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n_patterns, initial=n_before, desc=f"simulating {path.name}", unit="pattern")
        pool, saved_env = None, {v: os.environ.get(v) for v in _THREAD_VARS}
        try:
            if workers > 1 and len(tasks) > 1:
                for var in _THREAD_VARS:  # inherited by the spawned workers before they import NumPy
                    os.environ[var] = "1"
                pool = mp.get_context("spawn").Pool(min(workers, len(tasks)), initializer=_init_worker)
                results = pool.imap_unordered(_simulate_one, tasks, chunksize=1)
            else:
                results = map(_simulate_one, tasks)
            for index, pattern, meta in results:
                f["patterns"][index] = pattern
                for name in META_FIELDS:
                    f["meta"][name][index] = meta[name]
                done[index] = True  # only after the data
                f.flush()  # cheap (no metadata changes); a kill loses at most the patterns in flight
                if bar is not None:
                    bar.update(1)
            f.flush()
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
            for var, value in saved_env.items():
                if value is None:
                    os.environ.pop(var, None)
                else:
                    os.environ[var] = value
            if bar is not None:
                bar.close()
        n_done = int(done[...].sum())
    seconds = time.perf_counter() - t0
    stats = {"path": str(path), "n_patterns": n_patterns, "n_done": n_done, "n_new": len(tasks),
             "seconds": seconds, "workers": workers,
             "patterns_per_minute": 60.0 * len(tasks) / seconds if tasks else 0.0,
             "seconds_per_pattern": seconds / len(tasks) if tasks else 0.0}
    if progress:
        print(f"{path}: {len(tasks)} new patterns in {seconds:.1f} s "
              f"({stats['patterns_per_minute']:.1f} patterns/min); {n_done}/{n_patterns} done")
    return stats


class PatternLibrary:
    """Read side of a library written by :func:`generate_library`; only completed patterns are visible.

    Index ``j`` (``0 <= j < len(lib)``) is the ``j``-th completed pattern in file order (for a complete
    library, pattern ``j``). The file is opened read-only, lazily and again in each process (safe to pickle
    into PyTorch ``DataLoader`` workers). Attributes: ``detector`` (Q), ``n_patterns`` (planned), ``seed``,
    ``structures`` (names drawn from), ``category``, ``phonons``, ``recipe`` (the
    :class:`abtem_sim.OpticsRanges` drawn from).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"pattern library {self.path} not found")
        self._file, self._pid = None, None
        f = self._h5()
        if _attr(f.attrs.get("format")) != FORMAT or "patterns" not in f or "done" not in f:
            raise ValueError(f"{self.path} is an HDF5 file but not a py4dstem_prenet pattern library")
        self.detector = int(f.attrs["detector"])
        self.n_patterns = int(f.attrs["n_patterns"])
        self.seed = int(f.attrs["seed"])
        self.structures = json.loads(_attr(f.attrs["structures"]))
        self.category = None if _attr(f.attrs["category"]) == "None" else _attr(f.attrs["category"])
        self.phonons = bool(f.attrs["phonons"])
        ranges = json.loads(_file_attrs(f)["recipe"])
        self.recipe = abtem_sim.OpticsRanges(**{k: tuple(v) if isinstance(v, list) else v
                                                for k, v in ranges.items()})
        self._rows = np.flatnonzero(f["done"][...])

    def _h5(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file = _open(self.path, "r")
            self._pid = os.getpid()
        return self._file

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_file": None, "_pid": None}

    def __len__(self) -> int:
        return len(self._rows)

    def __repr__(self) -> str:
        return f"PatternLibrary({str(self.path)!r}, {len(self)}/{self.n_patterns} done, Q={self.detector})"

    def _select(self, indices) -> np.ndarray:
        if isinstance(indices, slice):
            return self._rows[np.arange(len(self))[indices]]
        return self._rows[np.asarray(indices)]

    def patterns(self, indices: int | slice | Sequence[int] | np.ndarray) -> np.ndarray:
        """Patterns ``(n, Q, Q)`` float32 (fraction of incident electrons per pixel) of completed
        ``indices``."""
        rows = np.atleast_1d(self._select(indices))
        if rows.size == 0:
            return np.zeros((0, self.detector, self.detector), dtype=np.float32)
        uniq, inverse = np.unique(rows, return_inverse=True)  # h5py wants increasing indices
        return self._h5()["patterns"][uniq][inverse]

    def metadata(self, indices: int | slice | Sequence[int] | np.ndarray | None = None
                 ) -> dict[str, np.ndarray]:
        """Per-pattern metadata of the completed patterns (all, or ``indices``) as a dict of arrays.

        Keys: ``structure``, ``category`` (str), ``structure_seed``, ``seed`` (simulation seed), ``centre``
        (optical axis, px, ``(Q/2, Q/2)``), every :class:`OpticsParams` field (units as there), ``index``
        (row in the file).
        """
        rows = np.atleast_1d(self._rows if indices is None else self._select(indices))
        meta = self._h5()["meta"]
        out = {name: meta[name][...][rows] for name in META_FIELDS}
        for name in ("structure", "category"):
            out[name] = out[name].astype(str)
        out["index"] = rows
        return out

    def optics(self, index: int) -> abtem_sim.OpticsParams:
        """The :class:`OpticsParams` of completed pattern ``index``."""
        m = self.metadata([index])
        kw = {f.name: m[f.name][0] for f in dataclasses.fields(abtem_sim.OpticsParams)}
        kw["zone_axis"] = tuple(int(i) for i in kw["zone_axis"])
        kw["tilt_mrad"] = tuple(float(t) for t in kw["tilt_mrad"])
        kw = {k: v.item() if isinstance(v, np.generic) else v for k, v in kw.items()}
        return abtem_sim.OpticsParams(**kw)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> PatternLibrary:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
