"""The survey pre-pass on the example cube: hot/dead pixels found (true / false positives) and the pedestal
by condition, what cleaning does to the centres, the pass's speed, and the resampling's negative values.

Run: ``python benchmarks/survey.py`` (writes ``benchmarks/results/survey.txt``).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from py4dstem_prenet import geometry
from py4dstem_prenet.center import measure_origins
from py4dstem_prenet.example import load_example
from py4dstem_prenet.survey import clean_patterns, survey_cube

torch.set_num_threads(1)
RESULTS = Path(__file__).resolve().parent / "results" / "survey.txt"


def bad_pixels(rng: np.random.Generator, shape: tuple[int, int], n_hot: int, n_dead: int):
    """Random isolated positions (at least 3 px apart, 2 px from the edge) for hot and dead pixels."""
    chosen: list[tuple[int, int]] = []
    while len(chosen) < n_hot + n_dead:
        p = (int(rng.integers(2, shape[0] - 2)), int(rng.integers(2, shape[1] - 2)))
        if all(max(abs(p[0] - q[0]), abs(p[1] - q[1])) >= 3 for q in chosen):
            chosen.append(p)
    return chosen[:n_hot], chosen[n_hot:]


def main() -> None:
    cube, truth = load_example()
    data = np.asarray(cube.data)  # 16 x 16 scan, 128 x 128, 2000 e- per pattern, read noise 0.5
    rng = np.random.default_rng(0)
    hot, dead = bad_pixels(rng, data.shape[2:], 20, 20)
    lines = ["Survey on the example cube (16 x 16 scan of 128 x 128, ~2000 counts/pattern, read noise 0.5),",
             "20 hot pixels (value per pattern as given, scaled with the data) + 20 dead pixels (reading 0)",
             "at random isolated positions.",
             "", f"{'condition':32s} {'hot found':>10s} {'dead found':>10s} {'false pos.':>10s} {'pedestal':>10s}"]
    conditions = [("clean (no bad pixels)", 1.0, 0.0, None), ("hot 65535", 1.0, 0.0, 65535),
                  ("hot 10000", 1.0, 0.0, 10000), ("hot 1000", 1.0, 0.0, 1000), ("hot 100", 1.0, 0.0, 100),
                  ("hot 20", 1.0, 0.0, 20), ("hot 65535, data x 1e-3", 1e-3, 0.0, 65535),
                  ("hot 65535, data + 100", 1.0, 100.0, 65535), ("hot 1000, data x 1e-30", 1e-30, 0.0, 1000)]
    for name, scale, offset, value in conditions:
        x = data * np.float32(scale) + np.float32(offset)
        if value is not None:
            for p in hot:
                x[:, :, p[0], p[1]] = value * scale + offset
            for p in dead:
                x[:, :, p[0], p[1]] = 0
        s = survey_cube(x, progress=False)
        found_hot = sum(bool(s.mask_hot[p]) for p in hot) if value is not None else 0
        found_dead = sum(bool(s.mask_dead[p]) for p in dead) if value is not None else 0
        false = int(s.mask.sum()) - found_hot - found_dead
        n_hot, n_dead = (len(hot), len(dead)) if value else (0, 0)
        lines.append(f"{name:32s} {found_hot:>7d}/{n_hot:<2d} {found_dead:>7d}/{n_dead:<2d} {false:>10d} "
                     f"{s.pedestal:>10.3f}")

    lines += ["", "Centre error (shipped default centre network, first 8 x 8 patterns; px), one hot pixel of",
              "65535 per pattern at (40, 90):", f"{'input':32s} {'mean':>8s} {'max':>8s} {'> 2 px':>8s}"]
    sub = data[:8, :8].copy()
    tx, ty = truth["qx0"][:8, :8], truth["qy0"][:8, :8]
    hotted = sub.copy()
    hotted[:, :, 40, 90] = 65535
    survey = survey_cube(hotted, progress=False)
    for name, x in (("clean patterns", sub), ("with the hot pixel", hotted),
                    ("with the hot pixel, cleaned", clean_patterns(hotted, survey))):
        o, _, _ = measure_origins(x, device="cpu", progress=False)
        err = np.hypot(o.qx0 - tx, o.qy0 - ty)
        lines.append(f"{name:32s} {err.mean():>8.2f} {err.max():>8.2f} {int((err > 2).sum()):>8d}")

    lines += _measured()
    big = np.concatenate([data] * 9).reshape(48, 48, 128, 128)
    big[47, 47, 3, 3] = np.nan
    t0 = time.perf_counter()
    try:
        survey_cube(big, progress=False)
    except ValueError:
        pass
    lines += ["", f"Survey of 2304 patterns of 128 x 128 (NaN in the last one): refused after "
              f"{time.perf_counter() - t0:.1f} s (1 thread)."]

    clean = torch.from_numpy(truth["clean"].reshape(-1, 128, 128).astype(np.float64))
    f = geometry.distortion_matrix((128, 128), truth["qx0"].ravel(), truth["qy0"].ravel(), truth["ratio"],
                                   truth["theta"])
    gx, gy = np.meshgrid(np.arange(128), np.arange(128), indexing="ij")
    win = np.hypot(gx - 64, gy - 64) < 20
    coms = {}
    lines += ["", "Resampling of the example's noise-free patterns (shift + ellipse, preserve_counts):",
              f"{'warp':20s} {'min value':>10s} {'total / input':>14s}"]
    for clamp in (False, True):
        out = geometry.warp(clean, f, preserve_counts=True, clamp=clamp)
        ratio = (out.sum((1, 2)) / clean.sum((1, 2))).numpy()
        m = out.numpy() * win
        coms[clamp] = np.stack([(m * gx).sum((1, 2)), (m * gy).sum((1, 2))]) / m.sum((1, 2))
        lines.append(f"{'clamp=' + str(clamp):20s} {out.min().item():>10.3f} {ratio.min():>7.4f}-{ratio.max():.4f}")
    shift = np.hypot(*(coms[True] - coms[False]))
    lines.append(f"centre of mass (r < 20 px) moved by the clamp: mean {shift.mean():.4f} px, "
                 f"max {shift.max():.4f} px")
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _measured() -> list[str]:
    """The survey on the small measured cubes beside the checkout (``shared/realdata``, if present)."""
    root = Path(__file__).resolve().parents[2] / "shared" / "realdata"
    if not root.is_dir():
        return []
    import h5py
    from rsciio.blockfile import file_reader as read_blo
    from rsciio.quantumdetector import file_reader as read_mib

    with h5py.File(root / "fpd_rings_2x2/fpd_file_test.hdf5") as f:
        fpd = f["fpd_expt/fpd_data/data"][:, :, 0].astype(np.uint16)
    cubes = {"fpd_rings_2x2 (Medipix, 13 dead listed)": fpd,
             "merlin_4x2 (6-bit, saturated beam)": np.asarray(read_mib(str(root / "merlin_4x2/001_4x2_6bit.mib"))[0]
                                                             ["data"]),
             "sped_blockfile_3x2 (8-bit precession)": np.asarray(read_blo(str(root / "sped_blockfile_3x2/test1.blo"))[0]
                                                                 ["data"])}
    lines = ["", "Measured cubes (no truth; fpd: pixels reading 0 in all 4 frames listed for comparison):",
             f"{'cube':42s} {'hot':>5s} {'dead':>5s} {'pedestal':>9s} {'zero in every frame':>20s}"]
    for name, d in cubes.items():
        s = survey_cube(d, progress=False)
        always = int((d == 0).all((0, 1)).sum())
        lines.append(f"{name:42s} {int(s.mask_hot.sum()):>5d} {int(s.mask_dead.sum()):>5d} {s.pedestal:>9.2f} "
                     f"{always:>20d}")
    return lines


if __name__ == "__main__":
    main()
