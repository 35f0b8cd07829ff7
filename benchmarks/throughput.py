"""Patterns per second of each stage and of the whole chain, beside py4DSTEM's classical centre finders.

Usage: ``python benchmarks/throughput.py [--sizes 128 256] [--scan 16 16] [--device auto]
[--large-file GB]``. One synthetic cube per detector size (disks and rings with drift, noise); every
method runs on the same cube, and ``prenet run`` streams the same cube from an HDF5 file to an EMD file.
Prints one table; peak memory is the process's maximum resident set size. ``--large-file`` also writes
an HDF5 cube of about that many GB (uint16, 128 x 128 patterns, the synthetic cube tiled) and runs
``prenet run`` on it in a subprocess, reporting its patterns per second and peak memory.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import py4DSTEM
import torch

import py4dstem_prenet  # noqa: F401
from py4dstem_prenet.evaluate import classical
from py4dstem_prenet.evaluate.harness import Table
from py4dstem_prenet.stream import run_file


def synthetic_cube(scan: tuple[int, int], q: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    g = np.arange(q)
    u, v = np.meshgrid(np.linspace(-1, 1, scan[0]), np.linspace(-1, 1, scan[1]), indexing="ij")
    qx0, qy0 = q / 2 + 3 * u + rng.normal(0, 0.2, scan), q / 2 - 2 * v + rng.normal(0, 0.2, scan)
    r = np.hypot(g[None, None, :, None] - qx0[..., None, None], g[None, None, None, :] - qy0[..., None, None])
    clean = 1 / (1 + np.exp((r - q / 25) / 0.7)) + 0.03 * np.exp(-((r - q / 4) ** 2) / 8)
    return rng.poisson(1e4 * clean / clean.sum(axis=(2, 3), keepdims=True)).astype(np.float32)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    p.add_argument("--scan", type=int, nargs=2, default=[16, 16])
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--large-file", type=float, help="also stream a cube of about this many GB (see above)")
    args = p.parse_args()
    table = Table(f"Throughput, patterns/s (torch threads {torch.get_num_threads()}, device {args.device})",
                  ["detector", "stage", "patterns/s", "vs get_origin_friedel"])
    kw = {"device": args.device, "batch_size": args.batch_size, "progress": False}
    for q in args.sizes:
        data = synthetic_cube(tuple(args.scan), q)
        n, flat = data.shape[0] * data.shape[1], data.reshape(-1, q, q)
        cube = py4DSTEM.DataCube(data=data)
        cube.prenet_measure_origin(**kw)  # warm-up: weights loaded, kernels chosen
        stages = {
            "denoise": (cube.prenet_denoise, kw),
            "centre (measure)": (cube.prenet_center, {**kw, "align": False}),
            "centre + align": (cube.prenet_center, kw),
            "ellipse (measure + correct)": (cube.prenet_ellipse, kw),
            "whole chain (prenet_preprocess)": (cube.prenet_preprocess, kw),
            "py4DSTEM get_origin": (classical.py4dstem_get_origin, {}),
            "py4DSTEM get_origin_friedel": (classical.py4dstem_get_origin_friedel, {}),
        }
        rates = {}
        for stage, (fn, fkw) in stages.items():
            args_ = (flat,) if stage.startswith("py4DSTEM") else ()
            t0 = time.perf_counter()
            fn(*args_, **fkw)
            rates[stage] = n / (time.perf_counter() - t0)
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "in.h5"
            with h5py.File(src, "w") as f:
                f["cube"] = data
            t0 = time.perf_counter()
            run_file(src, Path(tmp) / "out.h5", **kw)
            rates["prenet run (HDF5 file -> EMD file)"] = n / (time.perf_counter() - t0)
        ref = rates["py4DSTEM get_origin_friedel"]
        for stage, r in rates.items():
            table.rows.append([q, stage, r, f"{r / ref:.2f}x"])
    print(table.text())
    print(f"peak memory (max RSS): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    if args.large_file:
        large_file_run(args.large_file, args.device, args.batch_size)


def large_file_run(gigabytes: float, device: str, batch_size: int) -> None:
    """Write a ~``gigabytes`` GB uint16 cube (128 x 128 patterns) and time ``prenet run`` on it in a
    subprocess (whole chain), reporting patterns/s and that process's peak memory."""
    tile = synthetic_cube((16, 256), 128).astype(np.uint16)
    rows = max(16, int(gigabytes * 2**30 / (256 * 128 * 128 * 2)) // 16 * 16)
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        src, out = Path(tmp) / "large.h5", Path(tmp) / "large_out.h5"
        with h5py.File(src, "w") as f:
            d = f.create_dataset("cube", (rows, 256, 128, 128), dtype="uint16", chunks=(1, 256, 128, 128))
            for r in range(0, rows, 16):
                d[r:r + 16] = tile
        size = src.stat().st_size / 2**30
        cmd = [sys.executable, "-m", "py4dstem_prenet.cli", "run", str(src), "-o", str(out), "--quiet",
               "--device", device, "--batch-size", str(batch_size)]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        seconds = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"large file: {size:.2f} GiB input ({rows}x256 scan, 128x128 uint16), output "
              f"{out.stat().st_size / 2**30:.2f} GiB float32; prenet run {seconds:.0f} s = "
              f"{rows * 256 / seconds:.1f} patterns/s; peak memory of that process {peak:.0f} MiB")


if __name__ == "__main__":
    main()
