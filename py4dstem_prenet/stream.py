"""Files of any size: cubes read from HDF5 batch by batch and results streamed into the output EMD file.

:func:`open_cube` gives a DataCube whose data stays in its EMD/HDF5 file (an ``h5py.Dataset``); every
``prenet_*`` method and :func:`pipeline.run_chain` then reads it one batch at a time. :func:`run_file`
(``prenet run``) writes the corrected cube batch by batch into a hidden temporary file next to the
output, adds py4DSTEM's EMD tree (calibration, ``prenet_origin``, ``prenet_ellipse``) and renames it to
the output only when everything is written: memory is bounded by the batch size, not the cube size,
and an interrupted run leaves no output (re-running starts cleanly; a hard kill may leave the hidden
``.NAME.HOST.PID.*.part`` file, which the next run on the same output removes once that process is
gone). Concurrent runs onto one output each write their own temporary file and never remove a live
one; without ``overwrite`` the second to finish refuses to replace the first's output. The output may
not be the input (also through a link) nor a folder: both are refused before any work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import py4DSTEM
from emdfile import Metadata

from .atomic import atomic_path
from .datacube import chain_result_cube
from .io import check_output, read_cube
from .pipeline import run_chain
from .validation import InputError, check_options

#: Where the streamed data waits in the temporary file until the EMD tree is written around it.
_STREAM = "prenet_stream/data"
_INIT = "prenet_init"
_CALIBRATION_KEYS = ("Q_pixel_size", "R_pixel_size", "Q_pixel_units", "R_pixel_units", "QR_rotation", "QR_flip")


def _datacube_groups(f: h5py.File) -> list[h5py.Group]:
    found: list[h5py.Group] = []
    f.visititems(lambda _, obj: found.append(obj) if isinstance(obj, h5py.Group)
                 and obj.attrs.get("python_class") == "DataCube" else None)
    return found


def _four_d_datasets(f: h5py.File) -> list[str]:
    found: list[str] = []
    f.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) and obj.ndim == 4 else None)
    return found


def _emd_calibration(group: h5py.Group) -> dict[str, Any]:
    """Pixel sizes and units from the EMD tree ``group`` belongs to (empty if it has none)."""
    root = group
    while root.name != "/" and root.attrs.get("emd_group_type") != "root":
        root = root.parent
    cal = root.get("metadatabundle/calibration")
    if cal is None:
        return {}
    params = Metadata.from_h5(cal)._params
    return {k: params[k] for k in _CALIBRATION_KEYS if k in params}


def open_cube(path: str | Path, dataset: str | None = None) -> py4DSTEM.DataCube:
    """A DataCube whose data is read from the file on demand (EMD/HDF5), or read whole (other formats,
    see :func:`io.read_cube`).

    In an HDF5 file the cube is ``dataset`` (a path inside the file), or else the file's only
    py4DSTEM DataCube, or else its only 4D dataset; pixel sizes and units come from the EMD calibration
    when there is one, and the ``prenet_*`` nodes under the cube (as ``prenet run`` writes them) are
    attached. The file stays open (read-only) while the cube is in use. The data are whatever the file
    holds (e.g. uint16 counts); every method converts batch by batch.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"input file {path} does not exist")
    if not h5py.is_hdf5(path):
        if dataset is not None:
            raise InputError(f"{path} is not an HDF5 file, so it has no dataset {dataset!r}")
        return read_cube(path)
    f = h5py.File(path, "r")
    try:
        if dataset is not None:
            if not isinstance(f.get(dataset), h5py.Dataset):
                raise InputError(f"{path} has no dataset {dataset!r}; its 4D datasets: {_four_d_datasets(f)}")
            data = f[dataset]
        else:
            cubes = _datacube_groups(f)
            names = [g.name + "/data" for g in cubes] or _four_d_datasets(f)
            if len(names) != 1:
                raise InputError(f"{path} holds {len(names)} candidate cubes {names}; choose one with "
                                 "dataset=... (prenet run --dataset PATH)")
            data = f[names[0]]
        if data.ndim != 4:
            raise InputError(f"dataset {data.name} of {path} is {data.ndim}D {data.shape}; a 4D-STEM cube is "
                             "(Rx, Ry, Qx, Qy)")
        cube = py4DSTEM.DataCube(data=data, name=Path(data.parent.name).name or path.stem)
        cal = _emd_calibration(data.parent)
    except BaseException:
        f.close()
        raise
    for key, value in cal.items():
        cube.calibration[key] = value
    cube.calibration.calibrate()
    for name, child in data.parent.items():  # the small nodes this package wrote (prenet run output)
        if name.startswith("prenet_") and isinstance(child, h5py.Group) and "emd_group_type" in child.attrs:
            cube.tree(py4DSTEM.read(str(path), datapath=child.name.lstrip("/"), tree=False), force=True)
    return cube


def _move_stream_into_tree(path: Path) -> None:
    """Replace the placeholder data of the saved DataCube by the streamed dataset (an HDF5 link move) and
    remove the EMD header's initial node."""
    with h5py.File(path, "r+") as f:
        (group,) = _datacube_groups(f)
        attrs = dict(group["data"].attrs)
        del group["data"]
        f.move(_STREAM, group.name + "/data")
        group["data"].attrs.update(attrs)
        del f[_STREAM.split("/")[0]]
        del f[f"{_INIT}_root"]


def run_file(
    input_path: str | Path, output_path: str | Path, *, dataset: str | None = None, overwrite: bool = False,
    denoise_model: str | None = "default", center_model: str = "default", ellipse_model: str = "default",
    device: str = "auto", batch_size: int = 64, progress: bool = True, fit: str | None = None,
    robust: bool = False, client: Any = None,
) -> tuple[Path, py4DSTEM.DataCube]:
    """Run the whole chain (:func:`pipeline.run_chain`) on a file and write the corrected cube, its
    calibration and the ``prenet_origin`` / ``prenet_ellipse`` nodes to ``output_path`` (EMD, readable
    with ``py4DSTEM.read``), streaming (see the module docstring). ``denoise_model=None`` skips
    denoising; ``client``: a ``dask.distributed.Client`` (its workers must see ``input_path`` at the
    same path to read it themselves). Returns the output path and the input DataCube, whose calibration
    and tree now hold the measurement (the input file is not modified; when it is HDF5 it is closed on
    return, so the returned cube's data can no longer be read).
    """
    check_options(batch_size=batch_size, device=device, fit=fit, robust=robust,
                  models={"center": center_model, "ellipse": ellipse_model,
                          **({} if denoise_model is None else {"denoise": denoise_model})})
    out = check_output(output_path, overwrite, inputs=(input_path,))
    cube = open_cube(input_path, dataset)
    shape = tuple(int(s) for s in cube.data.shape)
    try:
        with atomic_path(out, overwrite=overwrite) as tmp:
            py4DSTEM.save(str(tmp), py4DSTEM.Array(np.zeros(1), name=_INIT), mode="o")  # an EMD header
            with h5py.File(tmp, "r+") as f:
                streamed = f.create_dataset(_STREAM, shape=shape, dtype="float32", chunks=(1, 1, *shape[2:]))
                _, result = run_chain(cube.data, out=streamed, denoise_model=denoise_model, center_model=center_model,
                                      ellipse_model=ellipse_model, fit=fit, robust=robust, device=device,
                                      batch_size=batch_size, progress=progress, client=client)
            placeholder = np.zeros((1, 1, *shape[2:]), dtype=np.float32)
            py4DSTEM.save(str(tmp), chain_result_cube(cube, placeholder, result, fit, robust), mode="a")
            _move_stream_into_tree(tmp)
    finally:
        if isinstance(cube.data, h5py.Dataset):
            cube.data.file.close()
    return out, cube
