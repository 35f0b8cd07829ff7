"""Reading any file py4DSTEM reads, and writing EMD files atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import py4DSTEM

from .validation import InputError


def read_cube(path: str | Path) -> py4DSTEM.DataCube:
    """The DataCube in ``path``: EMD/HDF5 files with ``py4DSTEM.read``, other detector formats (.mib,
    .blo, .dm4, ...) with ``py4DSTEM.import_file``. Clear errors for missing or unreadable files."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"input file {path} does not exist")
    try:
        if path.suffix.lower() in (".h5", ".hdf5", ".emd", ".py4dstem"):
            obj = py4DSTEM.read(str(path))
        else:
            obj = py4DSTEM.import_file(str(path))
    except Exception as exc:  # readers raise many types for unreadable files
        raise InputError(f"could not read {path} as 4D-STEM data: {type(exc).__name__}: {exc}") from exc
    if not isinstance(obj, py4DSTEM.DataCube):
        found = type(obj).__name__
        raise InputError(f"{path} holds a {found}, not a 4D-STEM DataCube; point to the file (or node) of the cube")
    return obj


def check_output(path: str | Path, overwrite: bool) -> Path:
    """Refuse to overwrite without ``overwrite``; check the folder exists and is writable, up front."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite (overwrite=True) to replace it")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"output folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise InputError(f"output folder {folder} is not writable")
    return path


def save_atomic(path: str | Path, cube: py4DSTEM.DataCube, overwrite: bool = False) -> Path:
    """Save ``cube`` (with its tree) to ``path`` via a temporary file in the same folder and a rename,
    so ``path`` is never left half-written; an error or interruption leaves no output."""
    path = check_output(path, overwrite)
    fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    os.unlink(tmp)  # py4DSTEM.save refuses to write over an existing file
    try:
        py4DSTEM.save(tmp, cube)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
