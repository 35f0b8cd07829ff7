"""Run the chain on the measured datasets of ../shared/realdata and draw what each stage does.

Usage: ``python benchmarks/realdata.py [--root ../shared/realdata] [-o realdata_out]``.
For each dataset: patterns before/after denoising, our centres beside plain CoM, py4DSTEM get_origin and
get_origin_friedel, and (for the ring dataset) the polar transform of the mean pattern before/after the
ellipse correction. No ground truth exists: compare methods and look.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import h5py
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import py4DSTEM  # noqa: E402

import py4dstem_prenet  # noqa: E402,F401
from py4dstem_prenet.evaluate import classical  # noqa: E402


def load(root: Path) -> dict[str, np.ndarray]:
    """The three datasets as (Rx, Ry, Qx, Qy) arrays (see shared/realdata/README.md)."""
    from rsciio.blockfile import file_reader as read_blo
    from rsciio.quantumdetector import file_reader as read_mib

    with h5py.File(root / "fpd_rings_2x2" / "fpd_file_test.hdf5") as f:
        fpd = f["fpd_expt/fpd_data/data"][:, :, 0].astype(np.uint16)
    merlin = np.asarray(read_mib(str(root / "merlin_4x2" / "001_4x2_6bit.mib"))[0]["data"])
    sped = np.asarray(read_blo(str(root / "sped_blockfile_3x2" / "test1.blo"))[0]["data"])
    return {"fpd_rings_2x2": fpd, "merlin_4x2": merlin, "sped_blockfile_3x2": sped}


def polar(pattern: np.ndarray, center: tuple[float, float], n_theta: int = 180) -> np.ndarray:
    """Polar transform (radius x angle, 1 px x 2 degrees) by bilinear sampling."""
    from scipy.ndimage import map_coordinates

    r = np.arange(0, min(pattern.shape) // 2)
    t = np.linspace(0, np.pi * 2, n_theta, endpoint=False)
    qx = center[0] + r[:, None] * np.cos(t)[None]
    qy = center[1] + r[:, None] * np.sin(t)[None]
    return map_coordinates(pattern, [qx, qy], order=1)


def figure(name: str, data: np.ndarray, out: Path) -> str:
    cube = py4DSTEM.DataCube(data=data.astype(np.float32))
    den = cube.prenet_denoise(progress=False)
    node = cube.prenet_measure_origin(progress=False)  # measured on the recorded patterns, as trained
    den.calibration.set_origin(cube.calibration.get_origin())
    ours = node.data
    flat = data.reshape(-1, *data.shape[2:]).astype(np.float32)
    others = {k: f(flat) for k, f in classical.CENTER_METHODS.items()}
    fig_ell = den.prenet_ellipse(progress=False)
    ell = den.tree("prenet_ellipse")
    md = ell.metadata["prenet_ellipse"]
    fig, ax = plt.subplots(2, 3, figsize=(15, 9))
    ax[0, 0].imshow(np.log10(data[0, 0].astype(float) + 1), cmap="magma")
    ax[0, 0].set_title(f"{name}: raw pattern (0, 0), log10(1 + counts)")
    ax[0, 1].imshow(np.log10(den.data[0, 0] + 1), cmap="magma")
    ax[0, 1].set_title("denoised (0, 0)")
    for k, (qx, qy) in others.items():
        ax[0, 0].plot(qy[0], qx[0], "+", ms=12, label=k)
    ax[0, 0].plot(ours[1, 0, 0], ours[0, 0, 0], "x", ms=12, c="c", label="ours")
    ax[0, 0].legend(fontsize=7)
    ax[0, 2].axis("off")
    rows = [f"{'method':<20}{'qx0 (px)':>28}{'qy0 (px)':>28}"]
    rows.append(f"{'ours':<20}{np.array2string(ours[0].ravel(), precision=2):>28}"
                f"{np.array2string(ours[1].ravel(), precision=2):>28}")
    rows += [f"{k:<20}{np.array2string(qx, precision=2):>28}{np.array2string(qy, precision=2):>28}"
             for k, (qx, qy) in others.items()]
    rows.append(f"confidence: {np.array2string(ours[2].ravel(), precision=2)}")
    ax[0, 2].text(0, 0.5, "\n".join(rows), family="monospace", fontsize=7, va="center")
    c = (data.shape[2] / 2, data.shape[3] / 2)
    for i, (img, title) in enumerate([(ell.data[0], "mean centred, polar (before)"),
                                      (ell.data[1], f"after ellipse correction a/b={md['ratio']:.4f}, "
                                                    f"theta={np.degrees(md['theta']):.1f} deg")]):
        ax[1, i].imshow(np.log10(polar(img, c) + 1e-3), aspect="auto", cmap="magma")
        ax[1, i].set_title(title)
        ax[1, i].set_xlabel("angle (2 deg bins)")
        ax[1, i].set_ylabel("radius (px)")
    ax[1, 2].imshow(np.log10(fig_ell.data.mean((0, 1)) + 1), cmap="magma")
    ax[1, 2].set_title("mean of the corrected cube")
    fig.tight_layout()
    path = out / f"{name}.png"
    fig.savefig(path, dpi=70)
    plt.close(fig)
    spread = {k: float(np.hypot(qx - ours[0].ravel(), qy - ours[1].ravel()).mean()) for k, (qx, qy) in others.items()}
    return f"{name}: shape {data.shape}, a/b {md['ratio']:.4f}, mean |ours - other| (px) {spread}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=str(Path(__file__).resolve().parents[2] / "shared" / "realdata"))
    p.add_argument("-o", "--output", default="realdata_out")
    args = p.parse_args()
    out = Path(args.output)
    out.mkdir(exist_ok=True)
    for name, data in load(Path(args.root)).items():
        print(figure(name, data, out))


if __name__ == "__main__":
    main()
