"""Reading any file py4DSTEM reads, and writing EMD files atomically."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import py4DSTEM

from .atomic import atomic_path
from .validation import InputError

#: Detector formats read with RosettaSciIO (extra ``[formats]``) when py4DSTEM's own importer cannot.
RSCIIO_READERS = {".mib": "quantumdetector", ".blo": "blockfile", ".hspy": "hspy", ".zspy": "zspy",
                  ".prz": "pantarhei", ".mrc": "mrc", ".dm4": "digitalmicrograph", ".dm3": "digitalmicrograph"}


def _read_rsciio(path: Path) -> py4DSTEM.DataCube:
    import importlib

    reader = importlib.import_module(f"rsciio.{RSCIIO_READERS[path.suffix.lower()]}").file_reader
    data = np.asarray(reader(str(path))[0]["data"])
    return py4DSTEM.DataCube(data=data)


def read_cube(path: str | Path) -> py4DSTEM.DataCube:
    """The DataCube in ``path``: EMD/HDF5 files with ``py4DSTEM.read``, other detector formats with
    ``py4DSTEM.import_file``, and, when that fails, with RosettaSciIO if it is installed (``pip install
    "py4dstem-prenet[formats]"``: .mib, .blo, .hspy, .dm4, ...). Clear errors for missing or unreadable
    files."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"input file {path} does not exist")
    try:
        if path.suffix.lower() in (".h5", ".hdf5", ".emd", ".py4dstem"):
            obj = py4DSTEM.read(str(path))
        else:
            obj = py4DSTEM.import_file(str(path))
    except Exception as exc:  # readers raise many types for unreadable files
        if path.suffix.lower() not in RSCIIO_READERS:
            raise InputError(f"could not read {path} as 4D-STEM data: {type(exc).__name__}: {exc}") from exc
        try:
            obj = _read_rsciio(path)
        except ImportError:
            raise InputError(f"py4DSTEM could not read {path} ({type(exc).__name__}: {exc}); install "
                             "RosettaSciIO (pip install 'py4dstem-prenet[formats]') to read this format") from exc
        except Exception as exc2:
            raise InputError(f"could not read {path} as 4D-STEM data: {type(exc2).__name__}: {exc2}") from exc2
    if not isinstance(obj, py4DSTEM.DataCube):
        found = type(obj).__name__
        raise InputError(f"{path} holds a {found}, not a 4D-STEM DataCube; point to the file (or node) of the cube")
    return obj


def check_output(path: str | Path, overwrite: bool, inputs: tuple[str | Path, ...] = ()) -> Path:
    """Check an output path up front, before any work: refused when it is a folder, when it is one of
    ``inputs`` (also through a symbolic link, a hard link or another relative spelling), or when it exists
    and ``overwrite`` is not set; its folder must exist and be writable."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"output {path} is a folder; give the path of the output file inside it "
                         f"(e.g. {path / 'out.h5'})")
    for source in inputs:
        if _same_file(path, Path(source)):
            raise InputError(f"output {path} is the input file {source}: writing it would destroy the raw data; "
                             "choose another output path")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite (overwrite=True) to replace it")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"output folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise InputError(f"output folder {folder} is not writable")
    return path


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name the same file (the same inode, or the same resolved path if one is missing)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def save_atomic(path: str | Path, cube: py4DSTEM.DataCube, overwrite: bool = False) -> Path:
    """Save ``cube`` (with its tree) to ``path`` via a temporary file in the same folder and a rename,
    so ``path`` is never left half-written; an error or interruption leaves no output."""
    path = check_output(path, overwrite)
    with atomic_path(path, overwrite=overwrite, create=False) as tmp:  # py4DSTEM.save refuses an existing file
        py4DSTEM.save(str(tmp), cube)
    return path
