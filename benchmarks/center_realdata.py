"""Centres on the measured datasets of ../shared/realdata against the careful reference (reference.json).

Usage: ``python benchmarks/center_realdata.py [--root ../shared/realdata] [--model default]``.
Prints, per dataset and scan position, our centre, its sigma, the reference, the error (px) and the error
in units of the reference's sigma (per axis, the larger of the two), and whether it is within 2 sigma.
Default arguments of ``DataCube.prenet_center`` (the acceptance target of issue 12).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import py4DSTEM
import torch

import py4dstem_prenet  # noqa: F401

sys.path.insert(0, str(Path(__file__).resolve().parent))
from realdata import load  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=str(Path(__file__).resolve().parents[2] / "shared" / "realdata"))
    p.add_argument("--model", default="default")
    args = p.parse_args()
    torch.set_num_threads(1)
    root = Path(args.root)
    ref = json.loads((root / "reference.json").read_text())["datasets"]
    total, inside = 0, 0
    for name, data in load(root).items():
        r = np.asarray(ref[name]["centre"]["reference"])
        rs = np.asarray(ref[name]["centre"]["sigma"])
        cube = py4DSTEM.DataCube(data=data)
        node = cube.prenet_measure_origin(model=args.model, progress=False)
        qx, qy, _, sig, flag, method = node.data
        print(f"{name} {data.shape} {data.dtype}: methods {node.metadata['prenet_center']['method_counts']}")
        print(f"  {'pos':>6} {'qx0':>8} {'qy0':>8} {'sigma':>6} {'flag':>4} {'ref qx':>8} {'ref qy':>8} "
              f"{'err px':>7} {'err/ref_sigma':>13} {'err/comb_sigma':>14}")
        for i in np.ndindex(qx.shape):
            dx, dy = qx[i] - r[i][0], qy[i] - r[i][1]
            z = max(abs(dx) / rs[i][0], abs(dy) / rs[i][1])
            zc = max(abs(dx) / np.hypot(rs[i][0], sig[i]), abs(dy) / np.hypot(rs[i][1], sig[i]))
            total += 1
            inside += z <= 2
            print(f"  {str(i):>6} {qx[i]:8.2f} {qy[i]:8.2f} {sig[i]:6.3f} {int(flag[i]):4d} "
                  f"{r[i][0]:8.2f} {r[i][1]:8.2f} "
                  f"{np.hypot(dx, dy):7.3f} {z:13.2f} {zc:14.2f}")
    print(f"within 2 reference sigma: {inside} of {total} positions")


if __name__ == "__main__":
    main()
